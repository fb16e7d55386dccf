"""The course's three networks in NumPy, written out by name: fc128, tiny and convnet.

    model = ConvNet(seed=0)
    loss, logits = model.loss_and_grads(x, y)   # forward, loss (+ L2), backward
    model.apply_gradients(Adam())               # one optimizer step on every parameter

Each network is one class, the NumPy twin of the class of the same name in
keras_impl/model.py. `__init__` makes `params`, a dict of layer name -> {"kernel",
"bias"} (the Keras layer of that name holds the same arrays); `forward` calls the
`*_forward` functions of scratch/layers.py in order, keeping each cache in `caches`;
`backward` calls the `*_backward` functions in reverse order and fills `grads`, keyed
like `params`: a layer's `*_backward` returns {"x": dL/d(its input), "kernel": ...,
"bias": ...}; "x" is popped and handed on down, the rest is the layer's entry in `grads`.
Activations are NHWC, convolution kernels HWIO, dense kernels (D, M).

The weights are drawn as `scratch.model.build_model` draws them: Glorot-uniform kernels
in layer order from the seed's weight stream, zero biases, dropout masks from its
second stream. So `ConvNet(seed=0)` and `build_model("convnet", seed=0)` start from the
same weights and draw the same masks; tests/test_course_models.py proves each class
here identical to its zoo build. `scratch.train.train_epoch` and `evaluate` train and
measure these models as they do the zoo's.
"""
from __future__ import annotations

import numpy as np

from scratch import layers
from scratch.initializers import glorot_uniform, weight_and_dropout_generators
from scratch.losses import l2_penalty, softmax_cross_entropy


class CourseModel:
    """What the three networks share: the weights' creation, the loss and the optimizer step.

    params: layer name -> {"kernel": array, "bias": array}; grads: the same keys, filled
    by `backward`; caches: what `backward` needs from the last `forward`, by layer name.
    `regularized` names the layers whose kernel takes the L2 penalty l2 * sum(kernel**2):
    the hidden layers, not the output layer. A subclass makes `params` in `__init__`
    (in layer order: the kernels are drawn in that order) and writes `forward` and
    `backward`.
    """

    regularized: tuple[str, ...] = ()

    def __init__(self, l2: float = 0.0, seed: int = 0, dtype=np.float32):
        if l2 < 0:
            raise ValueError(f"l2 {l2}: expected >= 0")
        self.l2 = float(l2)
        self.dtype = np.dtype(dtype)
        self.weight_rng, self.rng = weight_and_dropout_generators(seed)
        self.params: dict[str, dict[str, np.ndarray]] = {}
        self.grads: dict[str, dict[str, np.ndarray]] = {}
        self.caches: dict = {}
        self.optimizer_states: dict = {}  # (layer name, "kernel" or "bias") -> its state

    def initial_weights(self, *kernel_shape) -> dict[str, np.ndarray]:
        """{"kernel": Glorot-uniform of kernel_shape (Keras's default), "bias": zeros}."""
        kernel = glorot_uniform(self.weight_rng, kernel_shape).astype(self.dtype)
        return {"kernel": kernel, "bias": np.zeros(kernel_shape[-1], self.dtype)}

    def l2_loss(self) -> float:
        """The L2 penalty on the hidden kernels (0 when l2 = 0)."""
        return sum(l2_penalty(self.params[name]["kernel"], self.l2)[0]
                   for name in self.regularized)

    def loss_and_grads(self, x, y, training=True, label_smoothing=0.0):
        """Forward, loss and backward on one batch; y: (N,) integer labels.

        Returns (loss, logits (N, 10)): loss = mean softmax cross-entropy + L2 penalty.
        `grads` then holds dL/dparam, the L2 gradient 2 * l2 * kernel included.
        """
        logits = self.forward(x, training)
        loss, dlogits = softmax_cross_entropy(logits, y, label_smoothing)
        self.backward(dlogits)
        for name in self.regularized:
            self.grads[name]["kernel"] += l2_penalty(self.params[name]["kernel"], self.l2)[1]
        return loss + self.l2_loss(), logits

    def apply_gradients(self, optimizer) -> None:
        """One `optimizer.update` per parameter array, with the gradients of the last backward."""
        for name, weights in self.params.items():
            for key, value in weights.items():
                state = self.optimizer_states.get((name, key))
                weights[key], self.optimizer_states[(name, key)] = optimizer.update(
                    value, self.grads[name][key], state)


class FC128(CourseModel):
    """Flatten -> Dense 128 ReLU -> Dense 10: 101,770 parameters."""

    regularized = ("dense1",)

    def __init__(self, l2: float = 0.0, seed: int = 0, dtype=np.float32):
        super().__init__(l2, seed, dtype)
        self.params = {"dense1": self.initial_weights(784, 128),
                       "dense2": self.initial_weights(128, 10)}

    def forward(self, x, training=False):
        """x: (N, 28, 28, 1) or (N, 784) -> logits (N, 10). (No dropout: training changes
        nothing.)"""
        p, c = self.params, self.caches
        x, c["flatten"] = layers.flatten_forward(np.asarray(x, self.dtype))  # (N, 784)
        x, c["dense1"] = layers.dense_forward(x, p["dense1"])                 # (N, 128)
        x, c["relu1"] = layers.relu_forward(x)
        logits, c["dense2"] = layers.dense_forward(x, p["dense2"])            # (N, 10)
        return logits

    def backward(self, dlogits):
        """dlogits: (N, 10). Fills `grads`; returns dL/dx, shaped like x."""
        c, g = self.caches, self.grads
        g["dense2"] = layers.dense_backward(dlogits, c["dense2"])
        dx = layers.relu_backward(g["dense2"].pop("x"), c["relu1"])["x"]    # (N, 128)
        g["dense1"] = layers.dense_backward(dx, c["dense1"])
        return layers.flatten_backward(g["dense1"].pop("x"), c["flatten"])["x"]


class Tiny(CourseModel):
    """Conv 8 5x5 ReLU -> pool -> conv 3 5x5 ReLU -> pool -> Dense 16 ReLU -> Dense 10:
    a LeNet-5 in miniature, 1,765 parameters."""

    regularized = ("conv1", "conv2", "dense1")

    def __init__(self, l2: float = 0.0, seed: int = 0, dtype=np.float32):
        super().__init__(l2, seed, dtype)
        self.params = {"conv1": self.initial_weights(5, 5, 1, 8),
                       "conv2": self.initial_weights(5, 5, 8, 3),
                       "dense1": self.initial_weights(4 * 4 * 3, 16),
                       "dense2": self.initial_weights(16, 10)}

    def forward(self, x, training=False):
        """x: (N, 28, 28, 1) -> logits (N, 10). (No dropout: training changes nothing.)"""
        p, c = self.params, self.caches
        x, c["conv1"] = layers.conv2d_forward(np.asarray(x, self.dtype), p["conv1"])
        x, c["relu1"] = layers.relu_forward(x)                      # (N, 24, 24, 8)
        x, c["pool1"] = layers.maxpool2d_forward(x, 2)              # (N, 12, 12, 8)
        x, c["conv2"] = layers.conv2d_forward(x, p["conv2"])
        x, c["relu2"] = layers.relu_forward(x)                      # (N, 8, 8, 3)
        x, c["pool2"] = layers.maxpool2d_forward(x, 2)              # (N, 4, 4, 3)
        x, c["flatten"] = layers.flatten_forward(x)                 # (N, 48)
        x, c["dense1"] = layers.dense_forward(x, p["dense1"])
        x, c["relu3"] = layers.relu_forward(x)                      # (N, 16)
        logits, c["dense2"] = layers.dense_forward(x, p["dense2"])  # (N, 10)
        return logits

    def backward(self, dlogits):
        """dlogits: (N, 10). Fills `grads`; returns dL/dx (N, 28, 28, 1)."""
        c, g = self.caches, self.grads
        g["dense2"] = layers.dense_backward(dlogits, c["dense2"])
        dx = layers.relu_backward(g["dense2"].pop("x"), c["relu3"])["x"]
        g["dense1"] = layers.dense_backward(dx, c["dense1"])
        dx = layers.flatten_backward(g["dense1"].pop("x"), c["flatten"])["x"]
        dx = layers.maxpool2d_backward(dx, c["pool2"])["x"]
        dx = layers.relu_backward(dx, c["relu2"])["x"]
        g["conv2"] = layers.conv2d_backward(dx, c["conv2"])
        dx = layers.maxpool2d_backward(g["conv2"].pop("x"), c["pool1"])["x"]
        dx = layers.relu_backward(dx, c["relu1"])["x"]
        g["conv1"] = layers.conv2d_backward(dx, c["conv1"])
        return g["conv1"].pop("x")


class ConvNet(CourseModel):
    """Conv 32 3x3 ReLU -> pool -> conv 64 3x3 ReLU -> pool -> dropout 0.5 -> Dense 10:
    keras-io's "Simple MNIST convnet", 34,826 parameters."""

    regularized = ("conv1", "conv2")

    def __init__(self, l2: float = 0.0, seed: int = 0, dtype=np.float32):
        super().__init__(l2, seed, dtype)
        self.params = {"conv1": self.initial_weights(3, 3, 1, 32),
                       "conv2": self.initial_weights(3, 3, 32, 64),
                       "dense": self.initial_weights(5 * 5 * 64, 10)}

    def forward(self, x, training=False):
        """x: (N, 28, 28, 1) -> logits (N, 10). training=True turns dropout on."""
        p, c = self.params, self.caches
        x, c["conv1"] = layers.conv2d_forward(np.asarray(x, self.dtype), p["conv1"])
        x, c["relu1"] = layers.relu_forward(x)                         # (N, 26, 26, 32)
        x, c["pool1"] = layers.maxpool2d_forward(x, 2)                 # (N, 13, 13, 32)
        x, c["conv2"] = layers.conv2d_forward(x, p["conv2"])
        x, c["relu2"] = layers.relu_forward(x)                         # (N, 11, 11, 64)
        x, c["pool2"] = layers.maxpool2d_forward(x, 2)                 # (N, 5, 5, 64)
        x, c["flatten"] = layers.flatten_forward(x)                    # (N, 1600)
        x, c["dropout"] = layers.dropout_forward(x, 0.5, training, self.rng)
        logits, c["dense"] = layers.dense_forward(x, p["dense"])       # (N, 10)
        return logits

    def backward(self, dlogits):
        """dlogits: (N, 10). Fills `grads`; returns dL/dx (N, 28, 28, 1)."""
        c, g = self.caches, self.grads
        g["dense"] = layers.dense_backward(dlogits, c["dense"])
        dx = layers.dropout_backward(g["dense"].pop("x"), c["dropout"])["x"]
        dx = layers.flatten_backward(dx, c["flatten"])["x"]
        dx = layers.maxpool2d_backward(dx, c["pool2"])["x"]
        dx = layers.relu_backward(dx, c["relu2"])["x"]
        g["conv2"] = layers.conv2d_backward(dx, c["conv2"])
        dx = layers.maxpool2d_backward(g["conv2"].pop("x"), c["pool1"])["x"]
        dx = layers.relu_backward(dx, c["relu1"])["x"]
        g["conv1"] = layers.conv2d_backward(dx, c["conv1"])
        return g["conv1"].pop("x")
