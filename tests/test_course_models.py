"""The course's literal models against their zoo builds: keras_impl/model.py (Sequential and
subclassed) against keras_impl.zoo_model.TwinNet, scratch/course_models.py against
scratch.model.build_model. Each must have the zoo's layers, settings and parameter table,
and from the same weights give the same logits, loss and gradients in float64: relative
error |a - b| / max(|a|, |b|) (`grad_rel_error`, elementwise) at most 1e-12. A model with a
layer out of order, a wrong kernel size, rate or activation fails here."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from comparison import layout
from comparison.twin import GRAD_TOLERANCE, keras_floatx
from keras_impl import model as course_keras
from keras_impl.zoo_model import arch_layers, build_twinnet
from scratch import course_models as course_numpy
from scratch import layers
from scratch import zoo
from scratch.gradcheck import grad_rel_error
from scratch.model import build_model
from scratch.optim import Adam
from scratch.train import evaluate, train_epoch

NAMES = ["fc128", "tiny", "convnet"]
SEQUENTIAL = {"fc128": course_keras.fc128_sequential, "tiny": course_keras.tiny_sequential,
              "convnet": course_keras.convnet_sequential}
SUBCLASSED = {"fc128": course_keras.FC128, "tiny": course_keras.Tiny,
              "convnet": course_keras.ConvNet}
NUMPY = {"fc128": course_numpy.FC128, "tiny": course_numpy.Tiny,
         "convnet": course_numpy.ConvNet}
KERAS_BUILDERS = {"sequential": SEQUENTIAL, "subclassed": SUBCLASSED}
KERAS_CASES = [(name, kind) for name in NAMES for kind in KERAS_BUILDERS]
SAME = 1e-12  # one network computed twice, the same operations in the same order
# L2 on, so that each layer's regularizer (or its absence) is compared too; a power of 2,
# because Keras's L2 turns its factor into a float32 tensor before casting it to float64
L2 = 2.0 ** -10


def batch(n=4, seed=0):
    """Random float64 images (n, 28, 28, 1) in [0, 1) and labels (n,)."""
    rng = np.random.default_rng(seed)
    return rng.random((n, *zoo.INPUT_SHAPE)), rng.integers(0, zoo.NUM_CLASSES, n)


def built(model):
    """`model` with its weights created by one call on an image (in floatx)."""
    model(batch(1)[0].astype(keras.config.floatx()))
    return model


def literal_keras(name, kind, l2=L2):
    """The course model of keras_impl/model.py, built."""
    return built(KERAS_BUILDERS[kind][name](l2))


def keras_loss_and_grads(model, x, y):
    """(logits, loss, gradient per trainable variable) at inference (dropout off)."""
    with tf.GradientTape() as tape:
        logits = model(x, training=False)
        cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        loss = cross_entropy(y, logits) + tf.add_n(model.losses)
    grads = tape.gradient(loss, model.trainable_variables)
    return logits.numpy(), float(loss), [g.numpy() for g in grads]


def output_shapes(keras_layers, shape=(None, *zoo.INPUT_SHAPE)) -> list[tuple]:
    shapes = []
    for layer in keras_layers:
        shape = layer.compute_output_shape(shape)
        shapes.append(tuple(shape[1:]))
    return shapes


def settings(layer) -> dict:
    """A layer's full Keras config but its name: units, kernel size, padding, activation,
    rate, initializers, regularizer..."""
    return {key: value for key, value in layer.get_config().items() if key != "name"}


# --- Keras: keras_impl/model.py against TwinNet --------------------------------------------


def table_mismatches(model, name) -> list[str]:
    """What differs between a Keras model's layers and those of zoo model `name`: classes,
    settings, output shapes, weight shapes, parameter count. Empty when nothing does."""
    zoo_layers, rows = build_twinnet(name, l2=L2).arch_layers, zoo.param_rows(name)
    problems = [] if [type(layer) for layer in model.layers] == [type(layer) for layer in
                                                                   zoo_layers] else ["classes"]
    problems += [f"{layer.name} settings" for layer, zoo_layer in zip(model.layers, zoo_layers)
                 if settings(layer) != settings(zoo_layer)]
    if output_shapes(model.layers) != [row.output_shape for row in rows]:
        problems.append("output shapes")
    if [{v.name: tuple(v.shape) for v in layer.trainable_weights}
            for layer in model.layers] != [row.shapes for row in rows]:
        problems.append("weight shapes")
    if model.count_params() != zoo.count_params(name):
        problems.append("parameter count")
    return problems


def keras_errors(build, name) -> dict[str, float]:
    """Relative errors between `build()` (a Keras model) and zoo model `name`'s TwinNet,
    both in float64 holding the TwinNet's weights: of the logits, the loss (L2 included)
    and each variable's gradient, on a small batch at inference."""
    x, y = batch()
    with keras_floatx("float64"):
        keras.utils.set_random_seed(1)
        zoo_model, model = build_twinnet(name, l2=L2), built(build())
        for zoo_layer, layer in zip(zoo_model.arch_layers, model.layers):
            layer.set_weights(zoo_layer.get_weights())
        expected, actual = keras_loss_and_grads(zoo_model, x, y), keras_loss_and_grads(model, x, y)
    assert len(actual[2]) == len(expected[2])
    errors = {"logits": grad_rel_error(actual[0], expected[0]),
              "loss": grad_rel_error(actual[1], expected[1])}
    for variable, got, wanted in zip(model.trainable_variables, actual[2], expected[2]):
        errors[variable.path] = grad_rel_error(got, wanted)
    return errors


@pytest.mark.parametrize("name, kind", KERAS_CASES)
def test_keras_model_has_the_zoo_layers_settings_and_parameter_table(name, kind):
    model = literal_keras(name, kind)
    assert table_mismatches(model, name) == []
    assert arch_layers(model) == model.layers  # in the zoo's order: comparison/layout.py pairs them


@pytest.mark.parametrize("name, kind", KERAS_CASES)
def test_keras_model_computes_what_the_zoo_build_computes(name, kind):
    errors = keras_errors(lambda: KERAS_BUILDERS[kind][name](L2), name)
    assert max(errors.values()) <= SAME, errors


def edited_sequential(build, edit):
    """The Sequential model `build(L2)` rebuilt from its config after `edit(list of layer
    configs)`: a student's one-line mistake."""
    config = build(L2).get_config()
    for layer in config["layers"]:
        layer.pop("build_config", None)  # the shapes it was built for: build afresh
    edit(config["layers"])
    return keras.Sequential.from_config(config)


def by_name(layers, name):
    return next(layer for layer in layers if layer["config"]["name"] == name)


def test_a_wrong_kernel_size_fails_the_table():
    def five_by_five(layers):
        by_name(layers, "conv1")["config"]["kernel_size"] = (5, 5)

    model = edited_sequential(course_keras.convnet_sequential, five_by_five)
    assert table_mismatches(model, "convnet") == [
        "conv1 settings", "output shapes", "weight shapes", "parameter count"]


def test_a_wrong_layer_order_fails_the_table():
    def pool_first(layers):
        i = layers.index(by_name(layers, "conv1"))
        layers[i], layers[i + 1] = layers[i + 1], layers[i]

    model = edited_sequential(course_keras.tiny_sequential, pool_first)
    assert table_mismatches(model, "tiny")[:3] == ["classes", "pool1 settings", "conv1 settings"]


def test_a_wrong_flatten_order_fails_the_numbers():
    class ColumnsFirst(course_keras.ConvNet):
        def call(self, x, training=False):
            x = self.pool2(self.conv2(self.pool1(self.conv1(x))))
            x = self.flatten(keras.ops.transpose(x, (0, 2, 1, 3)))  # (W, H, C) order
            return self.dense(self.dropout(x, training=training))

    assert table_mismatches(built(ColumnsFirst(L2)), "convnet") == []  # a table cannot tell
    errors = keras_errors(lambda: ColumnsFirst(L2), "convnet")
    assert errors["logits"] > 1e-3 and errors["convnet/dense/kernel"] > 1e-3


@pytest.mark.parametrize("kind", KERAS_BUILDERS)
def test_keras_convnet_drops_out_only_while_training(kind):
    model = literal_keras("convnet", kind)
    x = batch()[0].astype("float32")
    np.testing.assert_array_equal(model(x).numpy(), model(x, training=False).numpy())
    assert not np.allclose(model(x, training=True).numpy(), model(x).numpy())


# --- NumPy: scratch/course_models.py against build_model ----------------------------------


def weights_of(model) -> list:
    return [value for params in model.params.values() for value in params.values()]


def grads_of(model) -> list:
    return [model.grads[name][key] for name, params in model.params.items() for key in params]


def numpy_pair(model, name, l2=L2, seed=5):
    """`model` (float64) and zoo model `name` built with the readable layers, holding the
    zoo build's weights; the same seed, so the same dropout masks."""
    zoo_model = build_model(name, l2=l2, seed=seed, dtype=np.float64, fast=False)
    for (_, _, zoo_value), value in zip(zoo_model.parameters(), weights_of(model),
                                        strict=True):
        value[...] = zoo_value
    return model, zoo_model


def numpy_errors(model, name) -> dict[str, float]:
    """Relative errors between `model` (float64) and zoo model `name` from the same weights,
    in training mode on a small batch: logits, loss (L2 included), every parameter's
    gradient and the input gradient."""
    model, zoo_model = numpy_pair(model, name)
    x, y = batch()
    loss, logits = model.loss_and_grads(x, y)
    zoo_loss, zoo_logits = zoo_model.loss_and_grads(x, y)
    errors = {"logits": grad_rel_error(logits, zoo_logits), "loss": grad_rel_error(loss, zoo_loss)}
    for (i, key, _), got in zip(zoo_model.parameters(), grads_of(model), strict=True):
        layer = zoo_model.layers[i]
        errors[f"{layer.name}/{key}"] = grad_rel_error(got, layer.grads[key])
    dlogits = np.random.default_rng(9).normal(size=logits.shape)  # backward again: same caches
    errors["x"] = grad_rel_error(model.backward(dlogits), zoo_model.backward(dlogits, True))
    return errors


@pytest.mark.parametrize("name", NAMES)
def test_numpy_model_has_the_zoo_parameter_table_and_initial_weights(name):
    model, zoo_model = NUMPY[name](seed=5), build_model(name, seed=5)
    rows = [row for row in zoo.param_rows(name) if row.count]
    assert [{key: value.shape for key, value in params.items()}
            for params in model.params.values()] == [row.shapes for row in rows]
    assert sum(value.size for value in weights_of(model)) == zoo.count_params(name)
    for value, (_, _, zoo_value) in zip(weights_of(model), zoo_model.parameters(), strict=True):
        assert value.dtype == zoo_value.dtype == np.float32
        np.testing.assert_array_equal(value, zoo_value)  # the same seed draws the same weights


@pytest.mark.parametrize("name", NAMES)
def test_numpy_model_computes_what_the_zoo_build_computes(name):
    # training mode: convnet's dropout draws its masks from the seed's stream on both sides
    errors = numpy_errors(NUMPY[name](l2=L2, seed=5, dtype=np.float64), name)
    assert max(errors.values()) <= SAME, errors


def test_a_missing_relu_fails_the_numbers():
    class NoHiddenReLU(course_numpy.FC128):
        def forward(self, x, training=False):
            p, c = self.params, self.caches
            x, c["flatten"] = layers.flatten_forward(np.asarray(x, self.dtype))
            x, c["dense1"] = layers.dense_forward(x, p["dense1"])
            c["relu1"] = np.ones_like(x)  # relu_backward then passes every gradient
            logits, c["dense2"] = layers.dense_forward(x, p["dense2"])
            return logits

    errors = numpy_errors(NoHiddenReLU(l2=L2, seed=5, dtype=np.float64), "fc128")
    assert errors["logits"] > 1e-3 and errors["dense_1/kernel"] > 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_numpy_model_trains_like_the_zoo_build(name):
    model, zoo_model = numpy_pair(NUMPY[name](l2=1e-4, seed=2, dtype=np.float64), name,
                                  l2=1e-4, seed=2)
    batches = [batch(3, seed) for seed in range(3)]
    results = [train_epoch(m, Adam(1e-2), batches, label_smoothing=0.1) + evaluate(m, batches)
               for m in (model, zoo_model)]
    assert max(grad_rel_error(a, b) for a, b in zip(*results)) <= SAME
    for value, (_, _, zoo_value) in zip(weights_of(model), zoo_model.parameters(), strict=True):
        assert grad_rel_error(value, zoo_value) <= SAME


def test_numpy_convnet_drops_out_only_while_training():
    model = course_numpy.ConvNet(seed=0)
    x = batch()[0]
    np.testing.assert_array_equal(model.forward(x), model.forward(x, training=False))
    assert not np.allclose(model.forward(x, training=True), model.forward(x))


# --- the literal twins of both sides, paired by name ---------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_literal_twins_pair_by_name_and_agree(name):
    x, y = batch()
    with keras_floatx("float64"):
        keras_model = literal_keras(name, "subclassed")
        keras_logits, keras_loss, keras_grads = keras_loss_and_grads(keras_model, x, y)
    model = NUMPY[name](l2=L2, dtype=np.float64)
    layout.course_to_numpy(keras_model, model)
    loss, logits = model.loss_and_grads(x, y, training=False)
    labels = [label for label, *_ in layout.paired_course_weights(keras_model, model)]
    assert labels == [v.path.split("/", 1)[1] for v in keras_model.weights]
    # two libraries summing in different orders: the cross-engine float64 tolerance
    assert grad_rel_error(logits, keras_logits) <= GRAD_TOLERANCE["float64"]
    assert grad_rel_error(loss, keras_loss) <= GRAD_TOLERANCE["float64"]
    for label, got, wanted in zip(labels, grads_of(model), keras_grads, strict=True):
        assert grad_rel_error(got, wanted) <= GRAD_TOLERANCE["float64"], label


def test_pairing_by_name_refuses_a_missing_layer():
    keras_model = literal_keras("tiny", "sequential")
    model = course_numpy.Tiny()
    model.params["conv3"] = model.params.pop("conv2")
    with pytest.raises(ValueError, match="no layer of that name"):
        layout.course_to_numpy(keras_model, model)
