"""Where a wrong array goes wrong: its worst entry, a pattern when a simple one fits, a heatmap.

    relative_errors(actual, expected)   |a - b| / max(|a|, |b|, FLOOR * largest), per entry
    worst_entry(actual, expected)       "worst at [0, 5, 2, 1]: 0.8123, expected 0.4061"
    diagnose(actual, expected, ...)     "all entries off by the same factor 2.0", "sign
                                        flipped", "off by a factor N = batch size (4)",
                                        "transposed", "flipped along axes (0, 1)", "all
                                        zeros", "only border pixels wrong (bottom, right)"
    heatmap(actual, expected, path)     a PNG of the per-entry relative error

The floor: an entry far smaller than the array's largest holds mostly round-off (a sum of
products that cancel), so its error is measured against FLOOR times that largest value.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from plumbing.files import write_figure

FLOOR = 1e-3
SAME = 1e-6  # two arrays "are" each other's transpose, multiple, ... within this


def relative_errors(actual, expected, floor=FLOOR):
    """|a - b| / max(|a|, |b|, floor * largest |entry| of both) per entry (float64)."""
    a, b = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    largest = max(np.abs(a).max(initial=0), np.abs(b).max(initial=0))
    scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), max(floor * largest, 1e-300))
    return np.abs(a - b) / scale


def index_text(index) -> str:
    return "[" + ", ".join(str(int(i)) for i in index) + "]"


def worst_entry(actual, expected, mask=None) -> str:
    """Where the largest relative error is, with both values (mask: the entries judged)."""
    if np.ndim(actual) == 0:  # a scalar (the loss): its value, no index
        return f"{float(actual):.6g}, expected {float(expected):.6g}"
    errors = relative_errors(actual, expected)
    if mask is not None:
        errors = np.where(mask, errors, 0)
    errors = np.where(np.isnan(errors), np.inf, errors)  # a NaN is the worst entry
    index = np.unravel_index(np.argmax(errors), errors.shape)
    return (f"worst at {index_text(index)}: {float(np.asarray(actual)[index]):.6g}, "
            f"expected {float(np.asarray(expected)[index]):.6g}")


def close(a, b) -> bool:
    """a equals b up to SAME times the larger array's largest entry."""
    scale = max(np.abs(a).max(initial=0), np.abs(b).max(initial=0), 1e-300)
    return a.shape == b.shape and float(np.abs(a - b).max(initial=0)) <= SAME * scale


def common_factor(actual, expected) -> float | None:
    """The one number r with actual = r * expected in every entry, or None."""
    big = np.abs(expected) > FLOOR * np.abs(expected).max(initial=0)
    if not big.any():
        return None
    r = float(np.median(actual[big] / expected[big]))
    return r if close(actual, r * expected) else None


def factor_text(r: float, batch: int | None) -> str | None:
    if abs(r - 1) <= SAME:
        return None
    if abs(r + 1) <= SAME:
        return "sign flipped"
    if batch and batch > 1 and abs(r - batch) <= SAME * batch:
        return f"off by a factor N = batch size ({batch}): a sum where a mean belongs?"
    if batch and batch > 1 and abs(r * batch - 1) <= SAME:
        return f"off by a factor 1/N, N = batch size ({batch}): a mean where a sum belongs?"
    return f"all entries off by the same factor {round(r, 4)}"


def rearranged(actual, expected) -> str | None:
    """"transposed" (or an axis order) or "flipped along axes ..." when that is all."""
    for order in itertools.permutations(range(expected.ndim)):
        if order != tuple(sorted(order)) and close(actual, expected.transpose(order)):
            return "transposed" if expected.ndim == 2 else f"axes in the order {order}"
    long_axes = [axis for axis in range(expected.ndim) if expected.shape[axis] > 1]
    for count in range(1, len(long_axes) + 1):
        for axes in itertools.combinations(long_axes, count):
            if close(actual, np.flip(expected, axes)):
                return f"flipped along axes {axes}"
    return None


def border_only(bad) -> str | None:
    """For an (N, H, W, C) mask of wrong entries: which image borders, if only borders."""
    if bad.ndim != 4 or not bad.any():
        return None
    h, w = bad.shape[1:3]
    for depth in (1, 2):
        if h <= 2 * depth or w <= 2 * depth or bad[:, depth:h - depth, depth:w - depth].any():
            continue
        sides = [side for side, part in (("top", bad[:, :depth]), ("bottom", bad[:, h - depth:]),
                                         ("left", bad[:, :, :depth]),
                                         ("right", bad[:, :, w - depth:])) if part.any()]
        deep = "" if depth == 1 else f", {depth} pixels deep"
        return f"only border pixels wrong ({', '.join(sides)}{deep})"
    return None


def non_finite(a, b) -> str:
    """Where NaN or inf appear: in the student's result, or (central differences of the
    student's own forward pass) in what it is compared with."""
    for array, whose in ((a, "your result"), (b, "the values it is compared with (from "
                                                  "your forward pass)")):
        bad = ~np.isfinite(array)
        if bad.any():
            kinds = " and ".join(k for k, f in (("NaN", np.isnan), ("inf", np.isinf))
                                 if f(array).any())
            count = (f": {int(bad.sum())} of {array.size} entries, first at "
                     f"{index_text(np.argwhere(bad)[0])}" if array.ndim else "")
            return (f"{kinds} in {whose}{count}; an overflow (np.exp of a large number?) or "
                    "a log of 0")
    return "NaN or inf"


def shifted(a, b) -> str | None:
    """"shifted by one row down" when an (N, H, W, C) array is the expected one moved by
    a row or a column (the entries moved out of the image not judged)."""
    if a.ndim != 4:
        return None
    def part(array, rows, cols):  # the entries that stay inside when moved by (rows, cols)
        h, w = array.shape[1:3]
        return array[:, max(rows, 0):h + min(rows, 0), max(cols, 0):w + min(cols, 0)]

    for rows in (-1, 0, 1):
        for cols in (-1, 0, 1):
            if (rows or cols) and a.shape[1] > 2 and a.shape[2] > 2 and close(
                    part(a, rows, cols), part(b, -rows, -cols)):
                moved = " and ".join(filter(None, [
                    f"one row {'down' if rows > 0 else 'up'}" if rows else "",
                    f"one column {'right' if cols > 0 else 'left'}" if cols else ""]))
                return (f"shifted by {moved}: padding on the wrong side? 'same' pads "
                        "(K - 1) // 2 on top and left, the rest at the bottom and right")
    return None


def per_channel(a, b) -> str | None:
    """"a constant offset per channel" or "a scale per channel" when, in every channel
    (last axis), actual = s * expected + t with the same s and t for all its entries."""
    if a.ndim < 2 or a.size // a.shape[-1] < 3:
        return None
    fits = []
    for c in range(a.shape[-1]):
        x, y = b[..., c].ravel(), a[..., c].ravel()
        design = np.stack([x, np.ones_like(x)], axis=1)
        (slope, offset), *_ = np.linalg.lstsq(design, y, rcond=None)
        if not close(y, slope * x + offset):
            return None
        fits.append((slope, offset))
    slopes, offsets = np.array(fits).T
    scale = max(np.abs(b).max(initial=0), 1e-300)
    if np.all(np.abs(slopes - 1) <= SAME):
        if np.all(np.abs(offsets) <= SAME * scale):
            return None
        return ("a constant offset per channel (a term that is the same for a whole channel "
                "is wrong or missing: a mean?)")
    if np.all(np.abs(offsets) <= SAME * scale):
        shown = ", ".join(f"{v:.4g}" for v in slopes[:4])
        return f"a scale per channel ({shown}): a variance or a normalisation per channel?"
    return "a scale and an offset per channel: a per-channel mean or variance?"


def routed(a, b) -> str | None:
    """For a pooling gradient: entries that should get nothing got some."""
    extra = (b == 0) & (a != 0)
    if not extra.any():
        return None
    if extra.sum() > 2 * (b != 0).sum():  # most entries of a window got some
        return ("gradient spread over the window: every entry got a share; only the maximum "
                "should receive it")
    if close(np.where(b != 0, a, 0), b):
        return ("gradient sent to entries that should get none: to every one of tied maxima? "
                "(only the first of a window, np.argmax's, receives it) or where a ReLU blocks?")
    return None


def diagnose(actual, expected, *, threshold: float, batch: int | None = None,
             image: bool = False, mask=None) -> str | None:
    """The first simple pattern that explains how `actual` differs from `expected`.

    batch: N, for "off by a factor N"; image: the arrays are (N, H, W, C), so wrong
    border pixels can be recognised; mask: the entries judged (others are ignored).
    """
    a, b = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if a.shape != b.shape:
        return rearranged(a, b)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return non_finite(a, b)
    judged = (a, b) if mask is None else (a[mask], b[mask])
    if mask is not None:
        a = np.where(mask, a, b)  # entries not judged agree by construction
    if not judged[0].any() and judged[1].any():
        return "all zeros"
    r = common_factor(*judged)
    if r is not None:
        text = factor_text(r, batch)
        return (text.replace("all entries off by the same", "off by a") if text and a.ndim == 0
                else text)
    if (np.all(a == a.astype(np.float32)) and not np.all(b == b.astype(np.float32))
            and float(relative_errors(a, b).max()) < 1e-6):
        return "rounded to float32 precision: computed or returned in float32?"
    found = rearranged(a, b)
    if found is None and image:
        found = shifted(a, b) or border_only(relative_errors(a, b) > threshold)
    return found or per_channel(a, b) or (routed(a, b) if image else None)


def mosaic(errors):
    """A 2-d picture of an array and its axis labels: (N, H, W, C) as an N x C grid of
    H x W images, (A, B, C) as A blocks of B x C, (A,) as one row.
    Returns (picture, block height, block width, x label, y label)."""
    if errors.ndim <= 2:
        picture = errors.reshape(1, -1) if errors.ndim < 2 else errors
        return picture, picture.shape[0], picture.shape[1], "axis -1", "axis 0"
    if errors.ndim == 3:
        errors = errors[..., None]  # (A, B, C, 1): A blocks of B x C
    errors = errors.reshape(-1, *errors.shape[-3:])  # merge leading axes into N
    n, h, w, c = errors.shape
    return (errors.transpose(0, 1, 3, 2).reshape(n * h, c * w), h, w,
            "blocks: last axis (channels); in a block: axis 2 (width)",
            "blocks: axis 0 (batch); in a block: axis 1 (height)")


def heatmap(actual, expected, path, title: str, mask=None) -> Path:
    """Write a PNG of the per-entry relative error of `actual` against `expected`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    errors = relative_errors(actual, expected)
    if mask is not None:
        errors = np.where(mask, errors, 0)
    picture, block_h, block_w, xlabel, ylabel = mosaic(errors)
    fig, ax = plt.subplots(figsize=(min(12, 2 + picture.shape[1] / 4),
                                    min(10, 1.5 + picture.shape[0] / 4)))
    shown = ax.imshow(np.maximum(picture, 1e-17), cmap="magma",
                      norm=LogNorm(1e-16, max(1.0, float(picture.max()))), interpolation="nearest")
    for row in range(block_h, picture.shape[0], block_h):
        ax.axhline(row - 0.5, color="white", linewidth=1)
    for col in range(block_w, picture.shape[1], block_w):
        ax.axvline(col - 0.5, color="white", linewidth=1)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    fig.colorbar(shown, ax=ax, label="relative error |a - b| / max(|a|, |b|)")
    path = Path(path)
    write_figure(fig, path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path
