"""The divergence localizer: the first number where the NumPy twin and the Keras twin part ways.

    for quantities in replay(pair, batches, "adam", None, steps=5): ...  # every number, per step
    finding = localize(pair, batches, "adam", None, steps=50)            # the first wrong one
    finding.first.name   # "layer 2 (conv2d_2) input gradient"

One largest error for a whole network says that something is wrong, not where. The replay
trains both twins step by step on the same batches (float64, training mode, dropout off, as
in `twin.lockstep`), each step from the same state (the Keras twin's weights, moving
statistics and optimizer slots copied into the NumPy twin first, so that an error is that
step's own and not drift), and compares every intermediate number in the order the
computation makes them:

    forward    layer 0's output, layer 1's output, ..., the loss
    backward   dL/dlogits; then from the last layer down: layer i's input gradient (dL/dx),
               its parameter gradients (L2 included)
    update     the optimizer's state (Adam's moments m and v, SGD's momentum), each weight's
               change in the step, BatchNorm's moving mean and variance

Everything before the first disagreement agreed, so that quantity's own code is the suspect:
a wrong "layer 2 input gradient" under a right layer-3 input gradient is layer 2's backward
pass; a wrong "Adam v" with right gradients is the optimizer. The NumPy side runs its
readable layers (`scratch.layers`, where `compare.py --inject` plants bugs; the fast ones are
proven equal to them by tests/test_fast_layers.py).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from comparison import layout, twin
from keras_impl.zoo_model import arch_layers
from keras_impl.train import make_loss_fn
from scratch import gradcheck, zoo

# Every quantity, float64: the largest elementwise relative error |a-b| / max(|a|,|b|), with
# entries below FLOOR times their group's largest measured against that: sums that cancel
# towards 0 keep round-off of the largest term, which BatchNorm divides by small standard
# deviations (`best`, batch 128: 3e-13 of the largest, a relative 3e-9 at this floor).
# Per stage: forward and backward as twin.GRAD_TOLERANCE; an update looser, because Keras
# rounds Adam's beta_2 and the learning rate through float32 even for float64 variables
# (0.999 -> 0.99900001), which moves its first Adam step by 6e-6 relative.
TOLERANCE = {"forward": twin.GRAD_TOLERANCE["float64"],
             "backward": twin.GRAD_TOLERANCE["float64"], "update": 1e-4}
# compare.py calls the localizer when its float64 gradients fail or its lockstep losses
# differ by more than this (float32 drifts: 1.7e-4 after convnet's 50 Adam steps).
LOCKSTEP_TOLERANCE = {"float64": 1e-9, "float32": 1e-3}
FLOOR = 1e-4
SLOTS = {"m": "momentum", "v": "velocity"}  # NumPy optimizer state -> Keras slot variables


@dataclass
class Quantity:
    """One number (array) computed by both twins, and how far apart they are."""

    step: int  # the training step, from 1
    stage: str  # "forward", "backward" or "update" (see TOLERANCE)
    name: str  # "layer 2 (conv2d_2) input gradient"
    error: float
    tolerance: float
    where: tuple | None = None  # index of the worst entry

    @property
    def agrees(self) -> bool:
        return self.error <= self.tolerance

    def describe(self) -> str:
        at = f" at {list(self.where)}" if self.where else ""
        verdict = "<=" if self.agrees else ">"
        return (f"step {self.step} {self.stage}: {self.name}: rel. error {self.error:.1e} "
                f"{verdict} {self.tolerance:g}{at}")

    def suspect(self) -> str:
        """The code that made this number from numbers that agreed."""
        layer = " ".join(self.name.split()[:3])  # "layer 2 (conv2d_2)"
        if self.name.startswith("optimizer"):
            return "the optimizer's moment update"
        if self.name.endswith("change in the step"):
            return "the optimizer's step (learning rate, bias correction, epsilon)"
        if "moving" in self.name:
            return "BatchNorm's moving averages (momentum)"
        if self.name == "loss":
            return "the loss (or its L2 penalty)"
        if self.stage == "forward":
            return f"the forward pass of {layer}"
        if self.name == "dL/dlogits":
            return "the loss's gradient"
        if self.name.endswith("kernel gradient"):
            return f"the backward pass of {layer} (or the L2 penalty's gradient)"
        return f"the backward pass of {layer}"


def compare(step, stage, name, ours, theirs, scale=None, zero=False) -> Quantity:
    """Elementwise relative error of two arrays; entries below FLOOR times `scale` (default:
    the largest entry of either) are measured against that. zero: the quantity is 0 in exact
    arithmetic (a bias feeding BatchNorm, `Model.biases_before_batchnorm`, and what the
    optimizer makes of its gradient): both sides hold round-off, measured against `scale`."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if scale is None:
        scale = max(np.abs(ours).max(initial=0), np.abs(theirs).max(initial=0))
    floor = max(scale if zero else FLOOR * scale, gradcheck.TINY)
    error = np.abs(ours - theirs) / np.maximum(np.maximum(np.abs(ours), np.abs(theirs)), floor)
    worst = np.unravel_index(int(np.argmax(error)), error.shape) if error.ndim else None
    return Quantity(step, stage, name, float(error.max()), TOLERANCE[stage],
                    tuple(int(i) for i in worst) if worst else None)


@contextlib.contextmanager
def recording(layers, outputs: dict, input_grads: dict, output_grads: dict):
    """Within the block, each NumPy layer also keeps what its forward and backward return
    (layer index -> array); afterwards the layers are as they were."""
    for i, layer in enumerate(layers):
        def forward(x, training=False, i=i, run=layer.forward):
            outputs[i] = run(x, training)
            return outputs[i]

        def backward(dout, i=i, run=layer.backward):
            output_grads[i] = dout
            input_grads[i] = run(dout)
            return input_grads[i]

        layer.forward, layer.backward = forward, backward  # shadow the class's methods
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward, layer.backward


def keras_step(pair: twin.TwinPair, x, y, loss_fn):
    """One training-mode forward and backward of the Keras twin, dropout off, keeping the
    numbers in between: (layer outputs, loss, dlogits, layer input gradients, the variable
    gradients as tensors in trainable_variables order)."""
    arch = arch_layers(pair.keras_model)
    x = tf.convert_to_tensor(x, dtype=pair.dtype)
    with tf.GradientTape() as tape:
        tape.watch(x)
        inputs, outputs = [], []
        for layer in arch:
            inputs.append(outputs[-1] if outputs else x)
            outputs.append(layer(inputs[-1],
                                 training=not isinstance(layer, keras.layers.Dropout)))
        loss = loss_fn(y, outputs[-1])
        if pair.keras_model.losses:
            loss = loss + tf.add_n(pair.keras_model.losses)
    grads = tape.gradient(loss, [outputs[-1], *inputs, *pair.keras_model.trainable_variables])
    return ([o.numpy() for o in outputs], float(loss), grads[0].numpy(),
            [g.numpy() for g in grads[1:len(arch) + 1]], grads[len(arch) + 1:])


def trainable_pairs(pair) -> list[tuple[str, tuple[int, str], int]]:
    """[(name, NumPy (layer index, key), index in Keras's trainable_variables)]."""
    trainable = pair.keras_model.trainable_variables
    found = []
    for _, variable, layer, key in layout.paired_weights(pair.keras_model, pair.numpy_model):
        index = next((j for j, v in enumerate(trainable) if v is variable), None)
        if index is not None:
            i = pair.numpy_model.layers.index(layer)
            found.append((f"layer {i} ({layer.name}) {key}", (i, key), index))
    return found


def step_quantities(step, pair, x, y, label_smoothing, loss_fn) -> tuple[list, list]:
    """Forward and backward of both twins on (x, y), every quantity compared in order.
    Returns (quantities, Keras's variable gradients for its optimizer); NumPy's stay in
    its layers' `grads`."""
    model = pair.numpy_model
    outputs, input_grads, output_grads = {}, {}, {}
    with recording(model.layers, outputs, input_grads, output_grads):
        loss, _ = model.loss_and_grads(x, y, training=True, label_smoothing=label_smoothing,
                                       dropout=False)
    k_outputs, k_loss, k_dlogits, k_input_grads, tf_grads = keras_step(pair, x, y, loss_fn)
    names = [f"layer {i} ({layer.name})" for i, layer in enumerate(model.layers)]
    found = [compare(step, "forward", f"{name} output", outputs[i], k_outputs[i])
             for i, name in enumerate(names)]
    found.append(compare(step, "forward", "loss", loss, k_loss))
    found.append(compare(step, "backward", "dL/dlogits", output_grads[len(names) - 1],
                         k_dlogits))
    largest = max(float(np.abs(g).max()) for g in tf_grads)
    zeros = model.biases_before_batchnorm()
    params = trainable_pairs(pair)
    for i in reversed(range(len(names))):
        if input_grads.get(i) is not None:  # layers before the first weights are not run
            found.append(compare(step, "backward", f"{names[i]} input gradient",
                                 input_grads[i], k_input_grads[i]))
        found += [compare(step, "backward", f"{name} gradient", model.layers[i].grads[key],
                          tf_grads[index].numpy(), largest, zero=(i, key) in zeros)
                  for name, (layer, key), index in params if layer == i]
    return found, tf_grads


def numpy_slots(state) -> dict:
    """The arrays of a scratch.optim state, by NumPy name: Adam {"m", "v"}, SGD {"m"}."""
    if state is None:
        return {}
    return {key: state[key] for key in SLOTS} if isinstance(state, dict) else {"m": state}


def keras_slots(keras_opt) -> dict:
    """Keras's optimizer slot variables by NumPy name, in trainable_variables order."""
    return {key: [v for v in keras_opt.variables if v.path.endswith(f"_{slot}")]
            for key, slot in SLOTS.items()}


def synchronize(pair, keras_opt) -> None:
    """Start the NumPy twin from the Keras twin's state: weights, moving statistics and
    optimizer slots, so that a step's differences are that step's own and not drift."""
    layout.to_numpy(pair.keras_model, pair.numpy_model)
    slots = keras_slots(keras_opt)
    for _, (i, key), index in trainable_pairs(pair):
        for slot, ours in numpy_slots(pair.numpy_model.optimizer_states.get((i, key))).items():
            ours[...] = slots[slot][index].numpy()


def update_quantities(step, pair, keras_opt, before) -> list[Quantity]:
    """After an update: the optimizer's slots, each weight's change (after - before), then
    BatchNorm's moving statistics. before: (layer index, key) -> the weight before the step."""
    model = pair.numpy_model
    trainable = pair.keras_model.trainable_variables
    slots = keras_slots(keras_opt)
    zeros = model.biases_before_batchnorm()
    state, changes = [], []  # (slot or None, name, ours, theirs, zero)
    for name, (i, key), index in trainable_pairs(pair):
        for slot, ours in numpy_slots(model.optimizer_states.get((i, key))).items():
            state.append((slot, f"optimizer {slot} of {name}", ours,
                          slots[slot][index].numpy(), (i, key) in zeros))
        changes.append((None, f"{name}: change in the step", model.layers[i].params[key]
                        - before[i, key], trainable[index].numpy() - before[i, key],
                        (i, key) in zeros))
    largest = {slot: max(float(np.abs(q[3]).max()) for q in group)
               for slot, group in (("m", [q for q in state if q[0] == "m"]),
                                   ("v", [q for q in state if q[0] == "v"]),
                                   (None, changes)) if group}
    moving = [compare(step, "update", f"layer {label.split('/')[0]} ({layer.name}) {key} "
                      "after the step", layer.params[key], variable.numpy())
              for label, variable, layer, key in layout.paired_weights(pair.keras_model, model)
              if key in layer.non_trainable]
    return [compare(step, "update", name, ours, theirs, largest[slot], zero)
            for slot, name, ours, theirs, zero in state + changes] + moving


def replay(pair, batches, optimizer, lr, steps, momentum=0.0, nesterov=False,
           label_smoothing=0.0):
    """Train both twins `steps` steps on `batches` (numpy (x, y) pairs), each step from the
    same state (`synchronize`); yield, per step, every compared quantity in order (forward,
    backward, update) with fresh optimizers on both sides. pair should be float64; its NumPy
    model is switched to the readable layers."""
    pair.numpy_model.fast = False
    pair.numpy_model.optimizer_states = {}
    keras_opt, numpy_opt = twin.optimizer_pair(optimizer, lr, momentum, nesterov)
    with twin.keras_floatx(pair.dtype):
        loss_fn = make_loss_fn(label_smoothing)
    for step, (x, y) in enumerate(batches, start=1):
        if step > steps:
            return
        synchronize(pair, keras_opt)
        before = {(i, key): value.copy() for i, key, value in pair.numpy_model.parameters()}
        x = np.asarray(x, dtype=pair.dtype)
        found, tf_grads = step_quantities(step, pair, x, np.asarray(y), label_smoothing,
                                          loss_fn)
        pair.numpy_model.apply_gradients(numpy_opt)
        keras_opt.apply_gradients(zip(tf_grads, pair.keras_model.trainable_variables))
        yield found + update_quantities(step, pair, keras_opt, before)


@dataclass
class Finding:
    """The localizer's answer: the first disagreeing quantity (None: all agree)."""

    first: Quantity | None
    steps: int  # steps replayed
    compared: int  # quantities compared
    agreed_before: list  # the quantities of the first's step that agreed before it

    def summary(self) -> str:
        if self.first is None:
            return (f"NumPy and Keras agree on all {self.compared} quantities of {self.steps} "
                    "steps (float64, readable layers)")
        return (f"first disagreement: {self.first.describe()}; look at "
                f"{self.first.suspect()}")


def localize(pair, batches, optimizer, lr, steps, momentum=0.0, nesterov=False,
             label_smoothing=0.0) -> Finding:
    """The first quantity, in computation order, on which the twins disagree (`replay`)."""
    compared = step = 0
    for step, found in enumerate(replay(pair, batches, optimizer, lr, steps, momentum,
                                        nesterov, label_smoothing), start=1):
        for n, quantity in enumerate(found):
            if not quantity.agrees:
                return Finding(quantity, step, compared + n + 1, found[:n])
        compared += len(found)
    return Finding(None, step, compared, [])


def disagreement(result: dict) -> str | None:
    """What in compare.py's `result` for one model calls for the localizer, if anything."""
    grads, lockstep = result["gradients"]["float64"], result["lockstep"]
    if not grads["passed"]:
        return f"float64 gradients differ by {grads['max_error']:.1e}"
    if lockstep["max_abs_diff"] > LOCKSTEP_TOLERANCE[lockstep["dtype"]]:
        return f"lockstep losses differ by {lockstep['max_abs_diff']:.1e}"
    return None


def section(name, args, result, console) -> dict | None:
    """compare.py's localizer section: replay the lockstep part in float64 when it or the
    gradients disagree, or a bug was planted (--inject); None when not run."""
    from keras_impl.data import make_dataset

    reason = disagreement(result) or (args.inject and f"bug {args.inject} planted")
    if not reason:
        return None
    console.print(f"{name}: {reason}: localizing (float64 replay of up to "
                  f"{args.lockstep_steps} steps)")
    batches = make_dataset("train", args.batch_size, flat=not zoo.has_conv(name),
                           seed=args.seed, data_dir=args.data_dir, limit=args.limit)
    finding = localize(twin.twin_pair(name, "float64", args.seed),
                       batches.repeat().as_numpy_iterator(), args.optimizer, args.lr,
                       args.lockstep_steps, args.momentum, args.nesterov)
    for quantity in finding.agreed_before[-3:]:
        console.print(f"  agrees: {quantity.describe()}", style="dim")
    console.print(f"{name}: [bold]{finding.summary()}[/]")
    return {"reason": reason, "steps": finding.steps, "compared": finding.compared,
            "first": None if finding.first is None else {**vars(finding.first),
                                                         "suspect": finding.first.suspect()}}
