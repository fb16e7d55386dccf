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
    errors = relative_errors(actual, expected)
    if mask is not None:
        errors = np.where(mask, errors, 0)
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


def diagnose(actual, expected, *, threshold: float, batch: int | None = None,
             image: bool = False, mask=None) -> str | None:
    """The first simple pattern that explains how `actual` differs from `expected`.

    batch: N, for "off by a factor N"; image: the arrays are (N, H, W, C), so wrong
    border pixels can be recognised; mask: the entries judged (others are ignored).
    """
    a, b = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if a.shape != b.shape:
        return rearranged(a, b)
    judged = (a, b) if mask is None else (a[mask], b[mask])
    if mask is not None:
        a = np.where(mask, a, b)  # entries not judged agree by construction
    if not judged[0].any() and judged[1].any():
        return "all zeros"
    r = common_factor(*judged)
    if r is not None:
        return factor_text(r, batch)
    found = rearranged(a, b)
    if found is None and image:
        found = border_only(relative_errors(a, b) > threshold)
    return found


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
