"""keras_impl.zoo_model: both generic Keras builders against the zoo declaration, and .keras
round trips."""
import keras
import numpy as np
import pytest

from keras_impl.zoo_model import (TwinNet, batch_input_shape, build_sequential, build_twinnet,
                                  input_shape, weight_key)
from scratch import zoo

NAMES = [*zoo.model_names(), "fc1", "fc37"]


def trainable_count(model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def moving_count(model) -> int:
    """BatchNorm's moving mean and variance: in Keras's count_params(), trained by no one."""
    return sum(int(np.prod(v.shape)) for v in model.non_trainable_weights)


def weight_shapes(layer) -> dict:
    return {weight_key(layer, v): tuple(v.shape) for v in layer.trainable_weights}


def images_for(model, n=8, seed=0):
    shape = batch_input_shape(model)[1:]
    return np.random.default_rng(seed).uniform(size=(n, *shape)).astype("float32")


@pytest.mark.parametrize("name", NAMES)
def test_twinnet_layers_and_counts_equal_the_zoo(name):
    model = build_twinnet(name)
    rows = zoo.param_rows(name)
    assert trainable_count(model) == model.count_params() - moving_count(model) \
        == zoo.count_params(name)
    assert [layer.name for layer in model.arch_layers] == [row.layer for row in rows]
    for layer, row in zip(model.arch_layers, rows):
        assert weight_shapes(layer) == row.shapes, layer.name


@pytest.mark.parametrize("name", NAMES)
def test_sequential_counts_equal_the_zoo(name):
    model = build_sequential(name)
    assert trainable_count(model) == model.count_params() - moving_count(model) \
        == zoo.count_params(name)
    assert moving_count(model) == {"best": 640, "resnet": 416}.get(name, 0)
    for layer, row in zip(model.layers, zoo.param_rows(name)):
        assert weight_shapes(layer) == row.shapes, layer.name


@pytest.mark.parametrize("name, expected", [("fc128", (None, 784)), ("mlp500", (None, 784)),
                                            ("tiny", (None, 28, 28, 1)),
                                            ("convnet", (None, 28, 28, 1))])
def test_input_shapes(name, expected):
    assert build_sequential(name).input_shape == expected
    assert batch_input_shape(build_sequential(name)) == expected
    assert batch_input_shape(build_twinnet(name)) == expected
    assert (None, *input_shape(name)) == expected


def test_a_subclassed_model_takes_images_until_it_is_built_for_other_input():
    from keras_impl.model import FC128

    model = FC128()
    assert batch_input_shape(model) == (None, 28, 28, 1)  # before its first call
    model(np.zeros((2, 784), "float32"))
    assert batch_input_shape(model) == (None, 784)  # the shape it was built for


def test_mlp_can_take_images_instead_of_flat_vectors():
    model = build_twinnet("fc16", flat=False)
    assert batch_input_shape(model) == (None, 28, 28, 1)
    assert model(np.zeros((3, 28, 28, 1), "float32")).shape == (3, 10)


def test_sequential_and_twinnet_compute_the_same_function():
    keras.utils.set_random_seed(3)
    seq, twin = build_sequential("tiny"), build_twinnet("tiny")
    for source, target in zip(seq.layers, twin.arch_layers):
        target.set_weights(source.get_weights())
    x = images_for(seq)
    np.testing.assert_array_equal(seq(x).numpy(), twin(x).numpy())


def test_l2_penalty_is_collected_from_every_hidden_kernel():
    l2 = 1e-3
    model = build_twinnet("mlp500", l2=l2)
    model(images_for(model))
    hidden = [layer.kernel.numpy() for layer in model.arch_layers[1:3]]
    expected = sum(l2 * float(np.sum(k.astype(np.float64) ** 2)) for k in hidden)
    assert len(model.losses) == 2  # the output layer's kernel is not regularised
    assert model.arch_layers[3].kernel_regularizer is None
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)
    assert not build_twinnet("mlp500").losses


def test_training_flag_reaches_dropout():
    model = build_twinnet("convnet")
    x = images_for(model, n=4)
    np.testing.assert_array_equal(model(x).numpy(), model(x, training=False).numpy())
    assert not np.array_equal(model(x, training=True).numpy(), model(x).numpy())


@pytest.mark.parametrize("arch, l2, flat", [("fc37", 1e-4, None), ("convnet", 0.0, None),
                                            ("fc128", 2e-3, False)])
def test_keras_round_trip_keeps_hyperparameters_and_predictions(tmp_path, arch, l2, flat):
    keras.utils.set_random_seed(7)
    model = TwinNet(arch, l2=l2, flat=flat)
    model.build((None, *input_shape(arch, flat)))
    x = images_for(model)
    path = tmp_path / f"{arch}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is TwinNet
    assert (loaded.arch, loaded.l2, loaded.flat) == (arch, l2, model.flat)
    assert [v.path for v in loaded.weights] == [v.path for v in model.weights]
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    if l2:
        assert float(sum(loaded.losses)) == float(sum(model.losses)) > 0


def test_sequential_keras_round_trip(tmp_path):
    keras.utils.set_random_seed(8)
    model = build_sequential("tiny", l2=1e-4)
    x = images_for(model)
    model.save(tmp_path / "tiny.keras")
    loaded = keras.models.load_model(tmp_path / "tiny.keras")
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


def test_unknown_architecture_is_refused():
    with pytest.raises(KeyError, match="unknown model 'fc0'"):
        TwinNet("fc0")
