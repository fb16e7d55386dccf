"""keras_impl.augment: the transforms, the seeded augmented pipeline, the figure and --shifted."""
import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from helpers import write_idx_folder
from keras_impl import augment, data
from keras_impl import test as keras_test
from keras_impl.augment import Augmentation, affine, augment_batch, thicken
from keras_impl.export import export_h5
from keras_impl.zoo_model import build_sequential, build_twinnet

IDENTITY = Augmentation(rotation=0.0, shift=0.0, scale=(1.0, 1.0), thickness=0.0)


@pytest.fixture(scope="module")
def idx_folder(tmp_path_factory):
    """Generated IDX files whose training split keeps 300 images after the 5,000 validation."""
    return write_idx_folder(tmp_path_factory.mktemp("idx"), n_train=data.VAL_SIZE + 300,
                            n_test=60)


def epochs(folder, config, seed=0, count=2, **kwargs):
    """`count` epochs of one dataset instance: [(images, labels) concatenated per epoch]."""
    ds = data.make_dataset("train", 64, seed=seed, data_dir=folder, augment=config, **kwargs)
    return [tuple(np.concatenate([t.numpy() for t in part])
                  for part in zip(*[(x, y) for x, y in ds])) for _ in range(count)]


def stroke_image():
    """One (1, 28, 28, 1) image: an off-centre bar and a single grey dot, zeros elsewhere."""
    image = np.zeros((1, 28, 28, 1), np.float32)
    image[0, 3:10, 5:8, 0] = 1.0
    image[0, 20, 21, 0] = 0.5
    return image


def test_rotation_by_90_degrees_is_np_rot90():
    image = stroke_image()
    out = affine(image, tf.constant([90.0]), tf.constant([1.0]), tf.zeros((1, 2))).numpy()
    # positive = anticlockwise as displayed, np.rot90's direction (bilinear rounding only)
    np.testing.assert_allclose(out[0, ..., 0], np.rot90(image[0, ..., 0]), atol=1e-5)


def test_shift_moves_right_and_down_by_whole_pixels_exactly():
    image = stroke_image()
    out = affine(image, tf.constant([0.0]), tf.constant([1.0]), tf.constant([[2.0, 1.0]]))
    expected = np.zeros_like(image)
    expected[0, 1:, 2:] = image[0, :-1, :-2]
    np.testing.assert_array_equal(out.numpy(), expected)


def test_scale_enlarges_about_the_centre():
    image = np.zeros((1, 28, 28, 1), np.float32)
    image[0, 11:17, 11:17, 0] = 1.0  # a 6x6 square centred on the image centre 13.5
    out = affine(image, tf.constant([0.0]), tf.constant([2.0]), tf.zeros((1, 2))).numpy()
    ink = np.argwhere(out[0, ..., 0] > 0.5)
    assert ink.min(axis=0).tolist() == [8, 8] and ink.max(axis=0).tolist() == [19, 19]


def test_thick_adds_ink_and_thin_removes_it():
    image = tf.constant(stroke_image())
    base = float(tf.reduce_sum(image))
    thick = float(tf.reduce_sum(augment.TEST_TRANSFORMS["thick"](image)))
    thin = float(tf.reduce_sum(augment.TEST_TRANSFORMS["thin"](image)))
    assert thick > 1.2 * base and thin < 0.8 * base
    full = thicken(image, tf.constant([1.0])).numpy()[0, ..., 0]
    assert np.array_equal(full[2:11, 4:9], np.ones((9, 5)))  # the bar grew by one pixel a side
    assert np.array_equal(thicken(image, tf.constant([0.0])).numpy(), image.numpy())


def test_training_thickness_range_covers_the_test_transforms():
    """Training draws (default thickness, nothing else) reach past "thick" and "thin"."""
    images = tf.constant(np.repeat(stroke_image(), 200, axis=0))
    only_thickness = dataclasses.replace(IDENTITY, thickness=Augmentation().thickness)
    ink = tf.reduce_sum(augment_batch(images, tf.constant([0, 1]), only_thickness),
                        axis=(1, 2, 3)).numpy()
    thick, thin = (float(tf.reduce_sum(augment.TEST_TRANSFORMS[name](images[:1])))
                   for name in ("thick", "thin"))
    assert ink.min() < thin < thick < ink.max()


def test_augment_batch_draws_for_each_image_and_is_deterministic():
    images = tf.constant(np.repeat(stroke_image(), 16, axis=0))
    config = Augmentation(elastic_alpha=2.0)
    first = augment_batch(images, tf.constant([1, 2]), config).numpy()
    assert first.shape == (16, 28, 28, 1) and first.dtype == np.float32
    # sixteen copies of one image, sixteen different results: each image its own draw
    assert len({image.tobytes() for image in first}) == 16
    assert np.array_equal(first, augment_batch(images, tf.constant([1, 2]), config).numpy())
    assert not np.array_equal(first, augment_batch(images, tf.constant([1, 3]), config).numpy())


def test_bilinear_sample_agrees_with_the_affine_op():
    """The elastic warp's sampler, fed the affine inverse map, gives the affine op's output."""
    image = tf.constant(np.random.default_rng(1).random((1, 28, 28, 1), np.float32))
    angle, factor, dx, dy = np.deg2rad(30.0), 1.3, 4.5, -2.0
    c = augment.CENTRE
    y, x = np.mgrid[0:28, 0:28].astype(np.float64)
    ux, uy = x - c - dx, y - c - dy  # the inverse map documented in affine()
    cols = c + (np.cos(angle) * ux - np.sin(angle) * uy) / factor
    rows = c + (np.sin(angle) * ux + np.cos(angle) * uy) / factor
    sampled = augment.bilinear_sample(image, tf.constant(rows[None], tf.float32),
                                      tf.constant(cols[None], tf.float32))
    expected = affine(image, tf.constant([30.0]), tf.constant([factor]),
                      tf.constant([[dx, dy]]))
    assert np.abs(expected.numpy()).sum() < np.abs(image.numpy()).sum()  # some fell outside
    np.testing.assert_allclose(sampled.numpy(), expected.numpy(), atol=1e-4)


def test_elastic_warp_with_tiny_alpha_is_close_to_identity_and_large_alpha_is_not():
    image = tf.constant(stroke_image())
    seed = tf.constant([0, 7], tf.int64)
    tiny = augment.elastic(image, seed, alpha=1e-4, sigma=4.0).numpy()
    np.testing.assert_allclose(tiny, image.numpy(), atol=1e-3)
    large = augment.elastic(image, seed, alpha=3.0, sigma=4.0).numpy()
    assert np.abs(large - image.numpy()).max() > 0.3


@pytest.mark.parametrize("bad", [dict(rotation=-1.0), dict(shift=-1.0), dict(scale=(1.2, 0.9)),
                                 dict(scale=(0.0, 1.0)), dict(thickness=1.5),
                                 dict(elastic_alpha=-1.0), dict(elastic_sigma=0.0)])
def test_bad_augmentation_settings_are_one_line_errors(bad):
    with pytest.raises(ValueError, match="Augmentation: ") as err:
        Augmentation(**bad)
    assert "\n" not in str(err.value)


def test_same_seed_same_augmented_batches_and_each_epoch_differs(idx_folder):
    first, second = epochs(idx_folder, Augmentation()), epochs(idx_folder, Augmentation())
    for (x1, y1), (x2, y2) in zip(first, second):
        assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(first[0][0], first[1][0])
    assert not np.array_equal(first[0][0], epochs(idx_folder, Augmentation(), seed=1)[0][0])


def test_creating_an_iterator_skips_an_epoch_of_augmentation(idx_folder):
    """comparison/scratch_loop.py resumes by calling iter() once per finished epoch."""
    second_epoch = epochs(idx_folder, Augmentation())[1]
    ds = data.make_dataset("train", 64, seed=0, data_dir=idx_folder, augment=Augmentation())
    iter(ds)
    assert np.array_equal(np.concatenate([x.numpy() for x, _ in ds]), second_epoch[0])


def test_identity_augmentation_reproduces_the_plain_pipeline(idx_folder):
    plain = data.make_dataset("train", 64, seed=0, data_dir=idx_folder, flat=True)
    plain = [tuple(np.concatenate([t.numpy() for t in part]) for part in zip(*list(plain)))]
    augmented = epochs(idx_folder, IDENTITY, count=1, flat=True)
    assert np.array_equal(plain[0][0], augmented[0][0])  # so labels stay with their images
    assert np.array_equal(plain[0][1], augmented[0][1])


def test_augmented_pipeline_keeps_the_plain_label_order_and_the_scale(idx_folder):
    (x, y), (plain_x, plain_y) = (epochs(idx_folder, config, count=1)[0]
                                  for config in (Augmentation(), None))
    assert np.array_equal(y, plain_y)
    assert x.shape == plain_x.shape == (300, 28, 28, 1) and x.dtype == np.float32
    assert not np.array_equal(x, plain_x)
    # augmented after the scaling to [0, 1], not before (the clip would hide it: mean ~1)
    assert x.mean() == pytest.approx(plain_x.mean(), rel=0.25)


@pytest.mark.parametrize("split", ["val", "test"])
def test_augment_is_rejected_outside_training(idx_folder, split):
    with pytest.raises(ValueError, match=f"training split only, got split '{split}'"):
        data.make_dataset(split, data_dir=idx_folder, augment=Augmentation())


def test_figure_cli_writes_a_png(idx_folder, tmp_path, capsys):
    path = tmp_path / "augment.png"
    assert augment.main(["--figure", str(path), "--data-dir", str(idx_folder), "--seed", "3"]) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[1] > image.size[0] > 500


def saved_model(kind, folder):
    """An untrained MLP as .keras (Sequential, logits) or CNN as .h5 (softmax outputs)."""
    keras.utils.set_random_seed(6)
    if kind == "fc8.keras":
        model = build_sequential("fc8")
        model.save(folder / kind)
    else:
        export_h5(build_twinnet("tiny"), folder / kind)
    return folder / kind


def shifted_right_3(images):
    """images (N, 28, 28) moved 3 pixels right with zeros coming in: np only, for comparison."""
    out = np.zeros_like(images)
    out[:, :, 3:] = images[:, :, :-3]
    return out


@pytest.mark.parametrize("kind", ["fc8.keras", "tiny.h5"])
def test_shifted_cli_table_and_json(idx_folder, tmp_path, capsys, kind):
    path = saved_model(kind, tmp_path)
    report, plain = tmp_path / "robust.json", tmp_path / "plain.json"
    common = ["--model-path", str(path), "--data-dir", str(idx_folder)]
    assert keras_test.main([*common, "--shifted", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "robustness: 60 test images per set" in out and "mean of 10 transforms" in out
    result = json.loads(report.read_text())
    assert list(result["sets"]) == ["original", *augment.TEST_TRANSFORMS]
    assert all(name in out for name in result["sets"])
    accuracies = [result["sets"][name]["accuracy"] for name in augment.TEST_TRANSFORMS]
    assert result["mean_transformed_accuracy"] == pytest.approx(np.mean(accuracies), abs=1e-12)
    assert f"{result['mean_transformed_accuracy']:.2%}" in out
    for row in result["sets"].values():
        assert row["errors"] == round((1 - row["accuracy"]) * 60)
    # "original" is the plain test report; "shift right 3" matches a NumPy shift.
    assert keras_test.main([*common, "--json", str(plain)]) == 0
    plain = json.loads(plain.read_text())
    assert result["sets"]["original"]["accuracy"] == plain["accuracy"]
    assert result["sets"]["original"]["loss"] == pytest.approx(plain["loss"], rel=1e-6)
    images, labels = data.load_mnist("test", idx_folder)
    model = keras_test.load_model(path)
    shifted = keras_test.log_probabilities(model, shifted_right_3(images / np.float32(255)))
    expected = keras_test.evaluate(shifted, labels)
    assert result["sets"]["shift right 3"]["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert result["sets"]["shift right 3"]["loss"] != pytest.approx(plain["loss"], rel=1e-3)


def test_shifted_on_the_validation_split(idx_folder, tmp_path, capsys):
    report = tmp_path / "val.json"
    assert keras_test.main(["--model-path", str(saved_model("fc8.keras", tmp_path)),
                            "--data-dir", str(idx_folder), "--shifted", "--split", "val",
                            "--json", str(report)]) == 0
    assert "5,000 val images per set" in capsys.readouterr().out
    assert json.loads(report.read_text())["split"] == "val"


@pytest.mark.parametrize("extra, message", [
    (["--split", "val"], "--split is only used with"),
    (["--shifted", "--apply", "x.png"], "cannot be combined"),
])
def test_shifted_option_errors(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_:
        keras_test.main(["--model-path", str(tmp_path / "m.keras"), *extra])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_two_epochs_in_the_same_order_get_different_augmentations(idx_folder):
    """Without shuffling the images come in the same order every epoch: only new draws
    make the two epochs differ."""
    first, second = epochs(idx_folder, Augmentation(), shuffle=False)
    assert np.array_equal(first[1], second[1])  # the same labels in the same order
    changed = np.mean([not np.array_equal(a, b) for a, b in zip(first[0], second[0])])
    assert changed > 0.99, f"only {changed:.1%} of the images got new draws"


def test_each_transform_draws_independently_of_the_others():
    """Over 4,000 images the correlation of any two draws stays near 0 (its standard
    error is 1/sqrt(4000) = 0.016); one key shared by two transforms makes it 1."""
    drawn = augment.random_parameters(4000, tf.constant([3, 4]), Augmentation())
    columns = {"thickness": drawn["thickness"], "rotation": drawn["rotation"],
               "scale": drawn["scale"], "dx": drawn["shift"][:, 0], "dy": drawn["shift"][:, 1]}
    names = list(columns)
    correlation = np.corrcoef(np.stack([columns[n].numpy() for n in names]))
    for i, j in zip(*np.triu_indices(len(names), k=1)):
        assert abs(correlation[i, j]) < 0.08, (names[i], names[j], correlation[i, j])


def test_augment_batch_applies_the_drawn_rotation_scale_and_shift():
    """A thin bar through the centre, augmented: its measured angle (principal axis of
    the ink), length (spread along that axis) and centre of mass follow the drawn
    rotation, scale and shift of each image."""
    bar = np.zeros((1, 28, 28, 1), np.float32)
    bar[0, 13:15, 6:22, 0] = 1.0  # horizontal, centred on (13.5, 13.5)
    images = tf.constant(np.repeat(bar, 200, axis=0))
    config = Augmentation(rotation=30.0, thickness=0.0)
    seed = tf.constant([5, 6])
    out = augment_batch(images, seed, config).numpy()[..., 0]
    drawn = {k: v.numpy() for k, v in augment.random_parameters(200, seed, config).items()}
    rows, cols = np.mgrid[:28, :28]
    mass = out.sum(axis=(1, 2))
    x = (out * cols).sum(axis=(1, 2)) / mass  # to the right
    y = (out * rows).sum(axis=(1, 2)) / mass  # down
    dx, dy = cols - x[:, None, None], rows - y[:, None, None]
    cxx, cyy = ((out * dx**2).sum(axis=(1, 2)) / mass, (out * dy**2).sum(axis=(1, 2)) / mass)
    cxy = (out * dx * dy).sum(axis=(1, 2)) / mass
    angle = -np.degrees(0.5 * np.arctan2(2 * cxy, cxx - cyy))  # anticlockwise as displayed
    length = np.sqrt(0.5 * (cxx + cyy + np.hypot(cxx - cyy, 2 * cxy)))
    # bilinear resampling of a 2-pixel bar moves its measured centre by up to 0.12 px
    assert np.allclose(x, 13.5 + drawn["shift"][:, 0], atol=0.2)
    assert np.allclose(y, 13.5 + drawn["shift"][:, 1], atol=0.2)
    assert np.allclose(angle, drawn["rotation"], atol=1.0)
    assert np.corrcoef(length, drawn["scale"])[0, 1] > 0.95
