"""Data augmentation for MNIST training batches, and the fixed transforms of the robustness test.

A network that has only seen centred, upright, medium-thick digits can fail on a digit
drawn 3 pixels off-centre or with a fat marker. Augmentation shows it a slightly different
version of every training digit in every epoch, so it learns that these changes do not
change the label. Each training image gets its own random draw of:

  thickness  strokes made thicker or thinner: the image is blended towards its grayscale
             dilation (each pixel replaced by the maximum of its 3x3 neighbourhood; strokes
             grow by about one pixel on each side) or towards its grayscale erosion (the
             3x3 minimum; strokes shrink). `thickness` = 0.6 draws the blend amount
             uniformly from [-0.6, 0.6]: -0.6 is 60% of the way to the erosion, +0.6 is 60%
             of the way to the dilation.
  rotation   by an angle drawn uniformly from [-rotation, +rotation] degrees about the
             image centre; positive angles turn the digit anticlockwise as displayed
             (row 0 at the top), the same direction as np.rot90.
  scale      by a factor drawn uniformly from `scale` about the image centre (> 1 enlarges).
  shift      by dx, dy pixels, each drawn uniformly from [-shift, +shift] (dx > 0 moves
             the digit right, dy > 0 moves it down).
  elastic    (off unless elastic_alpha > 0) a smooth random warp, like a wobbly hand:
             every pixel is displaced by a random field that is smoothed with a Gaussian
             of width elastic_sigma pixels and scaled to elastic_alpha pixels (Simard et
             al., 2003, "Best practices for CNNs applied to visual document analysis").

Rotation, scale and shift form one affine map per image, applied to the whole batch by a
single ImageProjectiveTransformV3 op (bilinear interpolation, zeros outside the image).
Randomness comes from stateless random ops driven by a seed tensor: the same seed gives
the same batch bit for bit, on every run. `keras_impl.data.make_dataset(..., augment=...)`
draws one seed per batch, so the NumPy model and the Keras model see the same augmented
batches, and each epoch sees new ones. Validation and test data are never augmented.

TEST_TRANSFORMS are the fixed transforms of `python -m keras_impl.test --shifted`
(rotate +-15 degrees, shift 3 px in each direction, scale 0.8 and 1.2, thick, thin),
built from the same functions.

    python -m keras_impl.augment --figure augment.png [--seed S] [--elastic ALPHA] [--data-dir D]
"""
from __future__ import annotations

import plumbing.quiet  # noqa: F401  first: quiets TensorFlow's start-up (see there)
import argparse
import dataclasses
import math

import numpy as np
import tensorflow as tf

from keras_impl.data import add_data_dir_arg, load_split, run_cli
from plumbing.args import at_most, figure_file, nonnegative_float, positive_int, seed_number
from plumbing.files import write_figure

IMAGE_SIZE = 28
CENTRE = (IMAGE_SIZE - 1) / 2  # pixel centres sit at integer coordinates 0..27
TEST_ROTATION = 15.0  # degrees
TEST_SHIFT = 3.0  # pixels
TEST_SCALES = (0.8, 1.2)
TEST_THICKNESS = 0.5  # blend amount of "thick" (+) and "thin" (-)
MAX_FIGURE_DIGITS = 20  # the figure has a row per digit, each as wide as the digits


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """The ranges random training transforms are drawn from (see the module docstring).

    Defaults and why: shift 3 px equals the robustness test's shifts and still keeps an
    MNIST digit (a 20x20 box with a 4 px margin) nearly always inside the frame;
    thickness 0.6 reaches past the test's thick and thin (0.5); rotation 12 degrees and
    scale 0.85..1.15 are the values of issue 7, a little inside the test's 15 degrees
    and 0.8 / 1.2, so the test also asks for some generalisation beyond what training
    showed. Elastic distortion is off: it costs several times the rest per epoch.
    """
    rotation: float = 12.0  # degrees, drawn from [-rotation, rotation]
    shift: float = 3.0  # pixels, dx and dy each drawn from [-shift, shift]
    scale: tuple[float, float] = (0.85, 1.15)  # factor drawn from [low, high]
    thickness: float = 0.6  # blend amount drawn from [-thickness, thickness]
    elastic_alpha: float = 0.0  # pixels of elastic displacement; 0 turns it off
    elastic_sigma: float = 4.0  # pixels, smoothness of the elastic displacement field

    def __post_init__(self):
        low, high = self.scale
        checks = [(self.rotation >= 0, "rotation must be >= 0 degrees"),
                  (self.shift >= 0, "shift must be >= 0 pixels"),
                  (0 < low <= high, "scale must be (low, high) with 0 < low <= high"),
                  (0 <= self.thickness <= 1, "thickness must be in [0, 1]"),
                  (self.elastic_alpha >= 0, "elastic_alpha must be >= 0 pixels"),
                  (self.elastic_sigma > 0, "elastic_sigma must be > 0 pixels")]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"Augmentation: {message}, got {self}")

    def __call__(self, images, seed):
        """`augment_batch(images, seed, self)`: what make_dataset(augment=...) calls."""
        return augment_batch(images, seed, self)


def affine(images, angle_degrees, scale, shift):
    """Rotate, scale (both about the centre), then shift each image; one op for the batch.

    images: (B, 28, 28, 1) float32. angle_degrees, scale: (B,); shift: (B, 2) as (dx, dy)
    in pixels. Positive angles turn anticlockwise as displayed, like np.rot90.
    ImageProjectiveTransformV3 wants the inverse map, output pixel -> input position:
    with u = output - centre - shift,  input = centre + R(-angle) u / scale.
    """
    angle = tf.cast(angle_degrees, tf.float32) * (math.pi / 180.0)
    scale = tf.cast(scale, tf.float32)
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    # Rows have y pointing down, so "anticlockwise on screen" flips the sign of sin.
    ox = CENTRE + tf.cast(shift[:, 0], tf.float32)
    oy = CENTRE + tf.cast(shift[:, 1], tf.float32)
    zeros = tf.zeros_like(cos)
    transforms = tf.stack([cos, -sin, CENTRE - cos * ox + sin * oy,
                           sin, cos, CENTRE - sin * ox - cos * oy,
                           zeros, zeros], axis=1)  # (B, 8): a0 a1 a2 b0 b1 b2 c0 c1
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=[IMAGE_SIZE, IMAGE_SIZE],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")


def thicken(images, amount):
    """Blend each image towards its 3x3 grayscale dilation (amount > 0) or erosion (< 0).

    images: (B, 28, 28, 1); amount: (B,) in [-1, 1]; 0 leaves the image unchanged.
    """
    amount = tf.reshape(tf.cast(amount, tf.float32), (1, 1, 1, -1))
    # Worked on as one image of B channels (the batch moved into the channel axis):
    # max_pool2d is about twice as fast on that as on B one-channel images.
    stacked = tf.transpose(images, (3, 1, 2, 0))  # (1, 28, 28, B)
    dilated = tf.nn.max_pool2d(stacked, 3, 1, "SAME")  # 3x3 maximum, stride 1
    eroded = -tf.nn.max_pool2d(-stacked, 3, 1, "SAME")  # 3x3 minimum
    out = (stacked + tf.nn.relu(amount) * (dilated - stacked)
           + tf.nn.relu(-amount) * (eroded - stacked))
    return tf.transpose(out, (3, 1, 2, 0))


def random_parameters(batch, seed, config: Augmentation) -> dict:
    """Each image's draws: {"thickness": (B,), "rotation": (B,) degrees, "scale": (B,),
    "shift": (B, 2) pixels as (dx, dy), "elastic": a seed (2,) for the warp}.

    seed: int tensor of shape (2,), split into one key per transform, so that the draws
    are independent of each other (a digit turned further is not also larger).
    """
    keys = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=5)
    low, high = config.scale
    uniform = tf.random.stateless_uniform
    return {"thickness": uniform([batch], keys[0], -config.thickness, config.thickness),
            "rotation": uniform([batch], keys[1], -config.rotation, config.rotation),
            "scale": uniform([batch], keys[2], low, high),
            "shift": uniform([batch, 2], keys[3], -config.shift, config.shift),
            "elastic": keys[4]}


def augment_batch(images, seed, config: Augmentation):
    """Randomly transformed copies of images (B, 28, 28, 1) float32 in [0, 1], same shape.

    seed: int tensor of shape (2,). Every image gets its own thickness, rotation, scale
    and shift (and elastic warp), drawn by random_parameters; the result is clipped to
    [0, 1].
    """
    drawn = random_parameters(tf.shape(images)[0], seed, config)
    out = thicken(images, drawn["thickness"])
    out = affine(out, drawn["rotation"], drawn["scale"], drawn["shift"])
    if config.elastic_alpha > 0:
        out = elastic(out, drawn["elastic"], config.elastic_alpha, config.elastic_sigma)
    return tf.clip_by_value(out, 0.0, 1.0)


def elastic(images, seed, alpha: float, sigma: float):
    """Warp each image by a smooth random displacement field, bilinear resampling.

    The field starts as independent uniform(-1, 1) values per pixel and direction, is
    Gaussian-blurred (sigma pixels) and rescaled so each image's largest displacement is
    alpha pixels. Output pixel (r, c) reads the input at (r + dy, c + dx); positions
    outside the image read 0.
    """
    batch = tf.shape(images)[0]
    noise = tf.random.stateless_uniform([batch, 2, IMAGE_SIZE, IMAGE_SIZE], seed, -1.0, 1.0)
    # The separable Gaussian blur (zeros beyond the border) as two small matrix products,
    # blur @ noise @ blur (blur is symmetric); its normalisation does not matter because
    # the field is rescaled next.
    grid = np.arange(IMAGE_SIZE, dtype=np.float32)
    blur = tf.constant(np.exp(-0.5 * ((grid[:, None] - grid[None, :]) / sigma) ** 2), tf.float32)
    field = blur @ noise @ blur  # (B, 2, 28, 28): column and row displacements
    largest = tf.reduce_max(tf.abs(field), axis=(1, 2, 3), keepdims=True)
    field = alpha * field / (largest + 1e-12)
    rows = grid[None, :, None] + field[:, 1]  # (B, 28, 28) input row to read
    cols = grid[None, None, :] + field[:, 0]
    return bilinear_sample(images, rows, cols)


def bilinear_sample(images, rows, cols):
    """images (B, H, W, 1) read at fractional positions rows, cols (B, H, W); 0 outside."""
    side = IMAGE_SIZE + 2  # with a ring of zeros around each image
    padded = tf.reshape(tf.pad(images[..., 0], [[0, 0], [1, 1], [1, 1]]), [-1])
    # Clamp into the padded frame: far-away positions land in the zero ring.
    rows = tf.clip_by_value(rows + 1.0, 0.0, side - 1.0)
    cols = tf.clip_by_value(cols + 1.0, 0.0, side - 1.0)
    r0, c0 = tf.floor(rows), tf.floor(cols)
    wr, wc = rows - r0, cols - c0
    r0, c0 = tf.cast(r0, tf.int32), tf.cast(c0, tf.int32)
    r1, c1 = tf.minimum(r0 + 1, side - 1), tf.minimum(c0 + 1, side - 1)
    start = tf.range(tf.shape(images)[0])[:, None, None] * side * side

    def read(r, c):  # one flat gather: ~3x faster than gather_nd with batch_dims
        return tf.gather(padded, start + r * side + c)

    out = ((1 - wr) * ((1 - wc) * read(r0, c0) + wc * read(r0, c1))
           + wr * ((1 - wc) * read(r1, c0) + wc * read(r1, c1)))
    return out[..., None]


def _fixed_affine(angle=0.0, factor=1.0, dx=0.0, dy=0.0):
    """The same rotation (degrees), scale and shift for every image of a batch."""
    def transform(images):
        ones = tf.ones(tf.shape(images)[:1])
        return affine(images, angle * ones, factor * ones, tf.stack([dx * ones, dy * ones], 1))
    return transform


def _fixed_thickness(amount):
    return lambda images: thicken(images, amount * tf.ones(tf.shape(images)[:1]))


# The robustness test set: name -> function of images (B, 28, 28, 1) float32 in [0, 1].
TEST_TRANSFORMS = {
    "rotate -15": _fixed_affine(angle=-TEST_ROTATION),  # clockwise as displayed
    "rotate +15": _fixed_affine(angle=TEST_ROTATION),  # anticlockwise
    "shift left 3": _fixed_affine(dx=-TEST_SHIFT),
    "shift right 3": _fixed_affine(dx=TEST_SHIFT),
    "shift up 3": _fixed_affine(dy=-TEST_SHIFT),
    "shift down 3": _fixed_affine(dy=TEST_SHIFT),
    "scale 0.8": _fixed_affine(factor=TEST_SCALES[0]),
    "scale 1.2": _fixed_affine(factor=TEST_SCALES[1]),
    "thick": _fixed_thickness(TEST_THICKNESS),  # part way to the 3x3 dilation
    "thin": _fixed_thickness(-TEST_THICKNESS),  # part way to the 3x3 erosion
}


def plot_examples(images, config: Augmentation, seed: int, path, versions: int = 7) -> None:
    """A PNG: each digit with `versions` augmented copies, then every test transform.

    images: (N, 28, 28) float32 in [0, 1], a few training digits.
    """
    from matplotlib.figure import Figure

    count = len(images)
    batch = tf.constant(images[:, :, :, None], tf.float32)
    repeated = tf.repeat(batch, versions, axis=0)  # each digit `versions` times in a row
    augmented = augment_batch(repeated, tf.constant([seed, 0], tf.int64), config).numpy()
    augmented = augmented.reshape(count, versions, IMAGE_SIZE, IMAGE_SIZE)
    rows = [(f"digit {i + 1}", [images[i], *augmented[i]]) for i in range(count)]
    rows += [("original", list(images))]
    rows += [(name, list(transform(batch).numpy()[..., 0]))
             for name, transform in TEST_TRANSFORMS.items()]
    cols = max(versions + 1, count)
    fig = Figure(figsize=(0.9 * cols + 1.2, 0.9 * len(rows) + 0.8), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[count, len(rows) - count])
    elastic_note = f", elastic {config.elastic_alpha:g} px" if config.elastic_alpha else ""
    top.suptitle(f"training augmentation (seed {seed}{elastic_note}): original, then "
                 f"{versions} random versions", fontsize=10)
    bottom.suptitle("robustness test transforms (python -m keras_impl.test --shifted)",
                    fontsize=10)
    for sub, part in ((top, rows[:count]), (bottom, rows[count:])):
        axes = sub.subplots(len(part), cols, squeeze=False)
        for ax_row, (label, pictures) in zip(axes, part):
            for ax, picture in zip(ax_row, pictures):
                ax.imshow(picture, cmap="gray_r", vmin=0, vmax=1)
            for ax in ax_row:
                ax.set(xticks=[], yticks=[])
                ax.spines[:].set_visible(ax.has_data())
            ax_row[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    write_figure(fig, path, dpi=100)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keras_impl.augment", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--figure", metavar="FILE", required=True, type=figure_file,
                        help="write a PNG of augmented training digits and the test transforms")
    parser.add_argument("--seed", type=seed_number, default=0,
                        help="augmentation seed (default 0)")
    parser.add_argument("--count", type=at_most(positive_int, MAX_FIGURE_DIGITS), default=6,
                        help=f"training digits shown (default 6, at most {MAX_FIGURE_DIGITS})")
    parser.add_argument("--elastic", type=nonnegative_float, default=0.0, metavar="ALPHA",
                        help="add elastic distortion of up to ALPHA pixels (default 0: off)")
    add_data_dir_arg(parser)
    args = parser.parse_args(argv)
    config = Augmentation(elastic_alpha=args.elastic)
    images, _ = load_split("train", args.data_dir, args.count)
    plot_examples(images.astype(np.float32) / 255.0, config, args.seed, args.figure)
    print(f"wrote {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
