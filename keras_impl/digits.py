"""People's own digit images turned into MNIST-like 28x28 inputs (for `test.py --apply`).

MNIST's recipe (LeCun et al.): white ink on black, the digit size-normalised into a
20x20 box keeping its aspect ratio (anti-aliased, hence grey levels), then placed in
a 28x28 field so that its centre of mass sits at the centre. `to_mnist` does the same
to any greyscale picture:

  1. invert when the background (the median of the border pixels) is light;
  2. subtract that background level and scale the ink to [0, 1];
  3. crop to the pixels with at least INK_LEVEL of the strongest ink;
  4. resize (anti-aliased) so the longer side is 20 pixels;
  5. paste into 28x28 with the centre of mass at pixel (14, 14) (where MNIST's
     training digits have theirs, on average 13.996, 14.007).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
INK_LEVEL = 0.1   # fraction of the strongest ink that still counts for the crop
BOX = 20          # MNIST's size-normalisation box
FIELD = 28
CENTRE = 14.0


class DigitImageError(Exception):
    """A file that cannot be used as a digit image; the message is one line naming it."""


def load_grey(path) -> np.ndarray:
    """The image at `path` as greyscale floats (H, W) in [0, 255].

    Transparent parts are laid over white first, as a drawing app shows them.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                image = image.convert("RGBA")
                backdrop = Image.new("RGBA", image.size, (255, 255, 255, 255))
                image = Image.alpha_composite(backdrop, image)
            return np.asarray(image.convert("L"), dtype=np.float64)
    except FileNotFoundError:
        raise DigitImageError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise DigitImageError(f"{path}: not an image (expected PNG, JPG or another format "
                              "Pillow reads)") from None
    except Image.DecompressionBombError as err:  # Pillow refuses to unpack so many pixels
        raise DigitImageError(f"{path}: too large to read ({str(err).split(',')[0]})") from None
    except (OSError, ValueError) as err:
        raise DigitImageError(f"{path}: cannot read the image ({err})") from None


def border_median(grey: np.ndarray) -> float:
    """The median of the outermost pixels: the background level."""
    edge = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])
    return float(np.median(edge))


@dataclass
class MnistSteps:
    """What `to_mnist` did, step by step (the lab shows them)."""

    inverted: bool  # the background was light
    crop: tuple[int, int, int, int]  # the ink's rows top:bottom, columns left:right
    box: np.ndarray  # (h, w), longer side BOX: the crop resized, ink scaled to [0, 1]
    top_left: tuple[int, int]  # where the box was pasted into the field
    field: np.ndarray  # (28, 28) float32 in [0, 1]: what the network gets


def to_mnist(grey: np.ndarray, name: str = "image") -> np.ndarray:
    """MNIST-style (28, 28) float32 in [0, 1] from a greyscale array (H, W) in [0, 255].

    Raises DigitImageError (naming `name`) when there is no ink to find.
    """
    return mnist_steps(grey, name).field


def mnist_steps(grey: np.ndarray, name: str = "image") -> MnistSteps:
    """`to_mnist` with its intermediate results."""
    grey = np.asarray(grey, dtype=np.float64)
    inverted = border_median(grey) > 127.5
    if inverted:
        grey = 255.0 - grey
    ink = np.clip(grey - border_median(grey), 0, None)
    if ink.max() <= 0:
        raise DigitImageError(f"{name}: no digit found (the image is one flat colour)")
    ink /= ink.max()
    rows = np.flatnonzero((ink >= INK_LEVEL).any(axis=1))
    cols = np.flatnonzero((ink >= INK_LEVEL).any(axis=0))
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    height, width = ink.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    box = np.asarray(Image.fromarray(np.float32(ink))
                     .resize(size, Image.Resampling.BILINEAR), dtype=np.float64)
    box = np.clip(box, 0, None)
    box /= box.max()
    field, top_left = _place_by_centre_of_mass(box)
    crop = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    return MnistSteps(bool(inverted), crop, box, top_left, np.float32(field))


def _place_by_centre_of_mass(box: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Paste `box` (h, w <= 20) into 28x28 so its centre of mass lands on (14, 14);
    returns the field and the box's top-left corner in it."""
    height, width = box.shape
    total = box.sum()
    com_row = (box.sum(axis=1) @ np.arange(height)) / total
    com_col = (box.sum(axis=0) @ np.arange(width)) / total
    # Clipped so a lopsided digit stays whole inside the field.
    top = int(np.clip(round(CENTRE - com_row), 0, FIELD - height))
    left = int(np.clip(round(CENTRE - com_col), 0, FIELD - width))
    field = np.zeros((FIELD, FIELD))
    field[top:top + height, left:left + width] = box
    return field, (top, left)


def preprocess_file(path) -> np.ndarray:
    """The (28, 28) float32 MNIST-style input made from the image file at `path`."""
    return to_mnist(load_grey(path), name=str(path))


def collect_images(paths) -> list[Path]:
    """Files named directly, plus the image files (by suffix) inside named folders, sorted.

    Raises DigitImageError for a missing path or a folder without images.
    """
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            inside = sorted(p for p in path.iterdir()
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise DigitImageError(f"{path}: folder holds no images "
                                      f"({', '.join(IMAGE_SUFFIXES)})")
            found.extend(inside)
        elif path.exists():
            found.append(path)
        else:
            raise DigitImageError(f"{path}: no such file or folder")
    return found
