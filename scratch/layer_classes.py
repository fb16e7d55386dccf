"""Layer objects: a layer object = a forward/backward pair + its params, the way a
Keras layer holds its variables.

    layer = Dense(kernel, bias, activation="relu", name="dense_1")
    out = layer.forward(x, training=True)   # keeps what backward needs
    dx = layer.backward(dout)               # fills layer.grads, returns dL/dx

Most kinds need nothing more than their readable pair, so one
generic object serves them all: `PairLayer("avgpool2d", pool_size=2)` calls
`avgpool2d_forward(x, pool_size=2)` and `avgpool2d_backward(dout, cache)`. The
other classes here exist for what a pair alone cannot do: fuse a ReLU (Dense,
Conv2D, MaxPool2D, ReLU), move BatchNorm's statistics, draw Dropout's masks.

`params` and `grads` are keyed by Keras variable names ("kernel", "bias",
"gamma", "beta"); `grads` has the keys of `params` less `non_trainable`.
Nothing here ever changes a trained weight: backward only fills `grads`, the
optimizer updates. (BatchNorm's moving statistics are not trained: its forward
pass in training mode updates them, as Keras's does.)

`fast` (default True) picks the functions: `scratch.fast_layers` where a fast
twin exists, else the readable `scratch.layers` (`scratch.residual` for the block). Two further savings apply only
when fast, set by the Model: `input_grad = False` on a network's first layer
skips dL/dx, and a ReLU followed by max pooling is applied by the pooling layer,
after the maxima (`relu_in_next_layer` on the ReLU's layer, `relu_after_pooling`
on the pooling layer).
"""
from __future__ import annotations

import numpy as np

from scratch import fast_layers, layers, residual
from scratch.windows import pair

# Where the readable pairs live: the layers, and the residual block composed of them.
READABLE_MODULES = (layers, residual)


def readable_function(name: str):
    """The readable function `name` ("avgpool2d_forward", "residual_backward", ...), looked
    up in READABLE_MODULES at call time; None when none of them has it."""
    for module in READABLE_MODULES:
        if hasattr(module, name):
            return getattr(module, name)
    return None


class Layer:
    """The common part: name, params, grads, cache, and the attributes the Model reads."""

    regularized = False  # kernel takes part in the L2 penalty
    non_trainable: tuple[str, ...] = ()  # params no optimizer touches, and with no grads

    def __init__(self, name: str = ""):
        self.name = name
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.cache = None
        self.fast = True
        self.input_grad = True  # False (fast only): backward may skip dL/dx and return None

    def __repr__(self):
        shapes = ", ".join(f"{k}={v.shape}" for k, v in self.params.items())
        return f"{type(self).__name__}({self.name}{': ' if shapes else ''}{shapes})"


class PairLayer(Layer):
    """A layer object = a forward/backward pair + its params, for any kind whose pair is

        <kind>_forward(x, [params,] **options) -> (out, cache)
        <kind>_backward(dout, cache) -> {"x": dx, <param name>: its gradient, ...}

    `params` (Keras variable names -> arrays), when the kind has any, go in second, as
    `dense_forward(x, params)` takes them; `options` are the kind's settings, e.g.
    pool_size=2. Each function is the fast twin in `scratch.fast_layers` when `fast`
    and one of that name exists there (a drop-in: same arguments, same numbers, its
    input left untouched), else the readable one (readable_function).
    """

    def __init__(self, kind: str, params: dict | None = None, name: str = "", **options):
        super().__init__(name)
        if readable_function(f"{kind}_forward") is None:
            raise ValueError(f"layer kind {kind!r}: scratch.layers has no {kind}_forward")
        self.kind = kind
        self.params = dict(params or {})
        self.options = options

    def function(self, step: str):
        """`<kind>_<step>` (step "forward" or "backward"): the fast twin if asked for and there."""
        name = f"{self.kind}_{step}"
        if self.fast and hasattr(fast_layers, name):
            return getattr(fast_layers, name)
        return readable_function(name)

    def forward(self, x, training=False):
        weights = (self.params,) if self.params else ()
        out, self.cache = self.function("forward")(x, *weights, **self.options)
        return out

    def backward(self, dout):
        grads = self.function("backward")(dout, self.cache)
        dx = grads.pop("x")
        self.grads = grads
        return dx


class _Affine(Layer):
    """Shared code of Dense and Conv2D: an affine map with an optional ReLU."""

    regularized = True

    def __init__(self, kernel, bias, activation=None, name=""):
        super().__init__(name)
        if activation not in (None, "relu"):
            raise ValueError(f"activation {activation!r}: expected None or 'relu'")
        self.params = {"kernel": kernel, "bias": bias}
        self.activation = activation
        self.relu_in_next_layer = False
        self.relu_cache = None

    def _applies_relu(self):
        return self.activation == "relu" and not (self.fast and self.relu_in_next_layer)

    def forward(self, x, training=False):
        out, self.cache = self._forward(x)
        if self._applies_relu():  # the fast ReLU overwrites out: a fresh array of ours
            relu_forward = fast_layers.relu_forward if self.fast else layers.relu_forward
            out, self.relu_cache = relu_forward(out)
        return out

    def backward(self, dout):
        if self._applies_relu():
            dout = layers.relu_backward(dout, self.relu_cache)["x"]
        grads = self._backward(dout)
        dx = grads.pop("x", None)
        self.grads = grads
        return dx


class Dense(_Affine):
    """Dense layer: kernel (D, M), bias (M,), optional ReLU; x (N, D) -> (N, M)."""

    def _forward(self, x):
        return layers.dense_forward(x, self.params)

    def _backward(self, dout):
        if self.fast:
            return fast_layers.dense_backward(dout, self.cache, self.input_grad)
        return layers.dense_backward(dout, self.cache)


class Conv2D(_Affine):
    """Conv2D layer: kernel (KH, KW, C, F), bias (F,), padding 'valid', 'same' or numbers,
    strides (an int or (sh, sw)), optional ReLU; x (N, H, W, C) -> (N, Ho, Wo, F)."""

    def __init__(self, kernel, bias, padding="valid", activation=None, name="", strides=1):
        super().__init__(kernel, bias, activation, name)
        self.padding = padding
        self.strides = strides

    def _forward(self, x):
        if self.fast:
            return fast_layers.conv2d_forward(x, self.params, self.padding, self.strides,
                                              reuse=self.cache)
        return layers.conv2d_forward(x, self.params, self.padding, self.strides)

    def _backward(self, dout):
        if self.fast:
            return fast_layers.conv2d_backward(dout, self.cache, self.input_grad)
        return layers.conv2d_backward(dout, self.cache)


class MaxPool2D(Layer):
    """Max pooling over p x p windows moved by strides (default p), 'valid' or 'same':
    (N, H, W, C) -> (N, Ho, Wo, C).

    `tiles`: the windows tile the image (stride p, 'valid'), the case the fast
    functions handle; overlapping or padded windows always run the readable pair.
    relu_after_pooling (fast and tiling only, set by the model together with the previous
    layer's `relu_in_next_layer`): also apply that layer's ReLU, after pooling:
    same numbers, a quarter of the ReLU's work in both passes.
    """

    def __init__(self, pool_size=2, name="", strides=None, padding="valid"):
        super().__init__(name)
        self.pool_size, self.strides, self.padding = pool_size, strides, padding
        self.tiles = ((strides is None or pair(strides) == (pool_size, pool_size))
                      and padding == "valid")
        self.relu_after_pooling = False

    def _fast_path(self):
        return self.fast and self.tiles

    def forward(self, x, training=False):
        if self._fast_path():
            out, self.cache = fast_layers.maxpool2d_forward(x, self.pool_size,
                                                            self.relu_after_pooling)
        else:
            out, self.cache = layers.maxpool2d_forward(x, self.pool_size, self.strides,
                                                       self.padding)
        return out

    def backward(self, dout):
        backward = (fast_layers.maxpool2d_backward if self._fast_path()
                    else layers.maxpool2d_backward)
        return backward(dout, self.cache)["x"]


class ReLU(Layer):
    """Standalone ReLU (Dense and Conv2D apply theirs themselves, like Keras).

    relu_in_next_layer (fast only, set by the model): a following MaxPool2D
    applies the ReLU and this layer passes values through.
    """

    activation = "relu"

    def __init__(self, name=""):
        super().__init__(name)
        self.relu_in_next_layer = False

    def _passes_through(self):
        return self.fast and self.relu_in_next_layer

    def forward(self, x, training=False):
        if self._passes_through():
            return x
        out, self.cache = layers.relu_forward(x)  # not in place: x may be someone's cache
        return out

    def backward(self, dout):
        if self._passes_through():
            return dout
        return layers.relu_backward(dout, self.cache)["x"]


class BatchNorm(Layer):
    """Batch normalisation over the last axis, keras.layers.BatchNormalization's defaults.

    params: "gamma" (C,) ones and "beta" (C,) zeros, trained; "moving_mean" (C,)
    zeros and "moving_variance" (C,) ones, non-trainable: every training-mode
    forward moves them towards the batch's statistics (`moving_average_update`),
    inference normalises with them. backward fills grads for gamma and beta only.
    """

    non_trainable = ("moving_mean", "moving_variance")

    def __init__(self, channels, dtype=np.float32, name=""):
        super().__init__(name)
        self.params = {"gamma": np.ones(channels, dtype), "beta": np.zeros(channels, dtype),
                       "moving_mean": np.zeros(channels, dtype),
                       "moving_variance": np.ones(channels, dtype)}

    def forward(self, x, training=False):
        functions = fast_layers if self.fast else layers
        out, self.cache = functions.batchnorm_forward(x, self.params, training)
        if training:
            batch_stats = self.cache[-1]
            layers.moving_average_update(self.params, batch_stats)
        return out

    def backward(self, dout):
        functions = fast_layers if self.fast else layers
        grads = functions.batchnorm_backward(dout, self.cache)
        dx = grads.pop("x")
        self.grads = grads
        return dx


class Dropout(Layer):
    """Inverted dropout with its own numpy Generator `rng` (seeded by the model)."""

    def __init__(self, rate, rng, name=""):
        super().__init__(name)
        if not 0 <= rate < 1:
            raise ValueError(f"dropout rate {rate}: expected 0 <= rate < 1")
        self.rate = rate
        self.rng = rng

    def forward(self, x, training=False):
        out, self.cache = layers.dropout_forward(x, self.rate, training, self.rng)
        return out

    def backward(self, dout):
        return layers.dropout_backward(dout, self.cache)["x"]


class ResidualBlock(Layer):
    """A ResNet basic block (residual.residual_forward): conv-BN-ReLU-conv-BN plus the skip
    path, then ReLU; x (N, H, W, C) -> (N, ceil(H/s), ceil(W/s), filters).

    params by Keras variable path ("conv_a/kernel", "bn_a/gamma", ...); a class of its
    own for its BatchNorms' moving statistics, non-trainable and moved in training as
    BatchNorm's are.
    """

    def __init__(self, params, strides=1, name=""):
        super().__init__(name)
        self.params = dict(params)
        self.strides = strides
        self.non_trainable = tuple(key for key in self.params if "/moving_" in key)

    def forward(self, x, training=False):
        functions = fast_layers if self.fast else residual
        out, self.cache = functions.residual_forward(x, self.params, self.strides, training)
        if training:
            for name, batch_stats in residual.residual_batch_stats(self.cache).items():
                moving = {key: self.params[f"{name}/{key}"]
                          for key in ("moving_mean", "moving_variance")}
                layers.moving_average_update(moving, batch_stats)
        return out

    def backward(self, dout):
        grads = residual.residual_backward(dout, self.cache)
        dx = grads.pop("x")
        self.grads = grads
        return dx
