"""The ResNet basic block's forward/backward pair, composed of the readable layers.

The same contract as `scratch.layers` (`residual_forward(x, params, ...) -> (out, cache)`,
`residual_backward(dout, cache) -> grads`), built from conv2d, batchnorm and relu pairs
rather than written out: the block is where the gradients of two paths meet and add.
"""
from __future__ import annotations

import numpy as np

from scratch import layers


def residual_forward(x, params, strides=1, training=False, functions=None):
    """A ResNet basic block (He et al. 2016): two 3x3 convolutions with BatchNorm on the
    main path, added to the skip path, then ReLU:

        main  = bn_b(conv_b(relu(bn_a(conv_a(x)))))     conv_a: strides, 'same'
        skip  = x, or shortcut_bn(shortcut_conv(x))     a 1x1 conv, strides, when the
                                                        shape changes
        out   = relu(main + skip)

    x: (N, H, W, C); out: (N, Ho, Wo, F), Ho = ceil(H / s). params, by Keras variable
    path: "conv_a/kernel" (3, 3, C, F), "conv_b/kernel" (3, 3, F, F), and for each
    BatchNorm "bn_a/", "bn_b/" the gamma, beta, moving_mean and moving_variance (F,);
    with "shortcut_conv/kernel" (1, 1, C, F) and "shortcut_bn/..." the projection
    skip. The convolutions have no bias: the BatchNorm after each would cancel it.
    training: the BatchNorms use the batch's statistics (batchnorm_forward).
    functions: where conv2d_* and batchnorm_* come from (scratch.layers by default;
    scratch.fast_layers passes itself).
    Returns out and cache (the parts' caches, the pre-ReLU sum, functions).
    """
    f = functions or layers  # looked up at call time: patched layers take effect
    convs, bns = {}, {}

    def conv(name, value, kernel_strides, padding):
        kernel = params[f"{name}/kernel"]
        no_bias = np.zeros(kernel.shape[-1], dtype=kernel.dtype)
        value, convs[name] = f.conv2d_forward(value, {"kernel": kernel, "bias": no_bias},
                                              padding, kernel_strides)
        return value

    def bn(name, value):
        given = {key: params[f"{name}/{key}"]
                 for key in ("gamma", "beta", "moving_mean", "moving_variance")}
        value, bns[name] = f.batchnorm_forward(value, given, training)
        return value

    main = bn("bn_a", conv("conv_a", x, strides, "same"))
    main, relu_a = layers.relu_forward(main)
    main = bn("bn_b", conv("conv_b", main, 1, "same"))
    skip = (bn("shortcut_bn", conv("shortcut_conv", x, strides, "valid"))
            if "shortcut_conv/kernel" in params else x)
    total = main + skip
    out, relu_out = layers.relu_forward(total)
    return out, (convs, bns, relu_a, relu_out, f)


def residual_backward(dout, cache):
    """dout: (N, Ho, Wo, F). Returns {"x": (N, H, W, C)} and every trainable param's
    gradient under its path ("conv_a/kernel", "bn_a/gamma", ...).

    Backwards through out = relu(main + skip): the ReLU first, then the addition,
    whose derivative is 1 for each term: BOTH paths receive the same d_sum. Each
    path passes it back to x, and since x fanned out into the two paths, its
    gradient is the SUM of theirs:
        dx = d_main_path(d_sum) + d_skip_path(d_sum)
    (d_skip_path is the identity for an identity skip: the gradient reaches x
    unchanged however deep the network, the point of residual connections).
    """
    convs, bns, relu_a, relu_out, f = cache
    grads = {}

    def conv(name, grad):
        part = f.conv2d_backward(grad, convs[name])
        grads[f"{name}/kernel"] = part["kernel"]  # part["bias"]: no bias
        return part["x"]

    def bn(name, grad):
        part = f.batchnorm_backward(grad, bns[name])
        grads[f"{name}/gamma"], grads[f"{name}/beta"] = part["gamma"], part["beta"]
        return part["x"]

    d_sum = layers.relu_backward(dout, relu_out)["x"]
    d_main, d_skip = d_sum, d_sum  # the addition copies its gradient to both terms
    d_main = conv("conv_b", bn("bn_b", d_main))
    d_main = layers.relu_backward(d_main, relu_a)["x"]
    dx_main = conv("conv_a", bn("bn_a", d_main))
    dx_skip = conv("shortcut_conv", bn("shortcut_bn", d_skip)) if "shortcut_conv" in convs \
        else d_skip
    grads["x"] = dx_main + dx_skip  # x fanned out: the two gradients meet and add
    return grads


def residual_batch_stats(cache):
    """{BatchNorm name: (batch mean, batch var)} of a training-mode residual_forward, for
    moving_average_update of each of its BatchNorms."""
    return {name: bn_cache[-1] for name, bn_cache in cache[1].items()}
