"""scratch.fast_layers against its readable twins in scratch.layers: the same values and
the same gradients, in float64 and float32, 'valid' and 'same', odd sizes, ties.

Where only the summation order differs (convolution, batch normalisation) the fast
result must be within REL_TOLERANCE[dtype] of the readable one, measured as
max|fast - readable| / max|readable| per array: 1e-12 in float64, 2e-6 in float32
(a few roundings of the 7 significant digits). Pooling only selects and routes
values, so there the two must be identical to the bit.
"""
import numpy as np
import pytest

from scratch import fast_layers as F
from scratch import layers as L

REL_TOLERANCE = {np.float64: 1e-12, np.float32: 2e-6}
DTYPES = [np.float64, np.float32]


def rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def assert_close(fast, readable, dtype):
    assert fast.shape == readable.shape and fast.dtype == readable.dtype == dtype
    error = float(np.max(np.abs(fast - readable))) / float(np.max(np.abs(readable)))
    assert error <= REL_TOLERANCE[dtype], error


def assert_grads_close(fast, readable, dtype, keys):
    assert set(fast) == set(readable) == set(keys)
    for key in keys:
        assert_close(fast[key], readable[key], dtype)


# --- dense and relu ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_backward_equals_readable_and_can_skip_the_input_gradient(dtype):
    rng = np.random.default_rng(0)
    x, params = rand(rng, (5, 7), dtype), {"kernel": rand(rng, (7, 3), dtype),
                                           "bias": rand(rng, 3, dtype)}
    _, cache = L.dense_forward(x, params)
    dout = rand(rng, (5, 3), dtype)
    readable = L.dense_backward(dout, cache)
    assert_grads_close(F.dense_backward(dout, cache), readable, dtype, ("x", "kernel", "bias"))
    skipped = F.dense_backward(dout, cache, input_grad=False)
    assert_grads_close(skipped, {k: readable[k] for k in ("kernel", "bias")}, dtype,
                       ("kernel", "bias"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_in_place_equals_readable(dtype):
    rng = np.random.default_rng(1)
    x = rand(rng, (4, 6, 5), dtype)
    x[0] = 0  # exact zeros: gradient 0 on both paths
    out, cache = L.relu_forward(x)
    fresh = x.copy()
    fast_out, fast_cache = F.relu_forward(fresh)
    assert fast_out is fresh and np.array_equal(fast_out, out)  # overwritten in place
    dout = rand(rng, x.shape, dtype)
    assert np.array_equal(L.relu_backward(dout, fast_cache)["x"],
                          L.relu_backward(dout, cache)["x"])


# --- conv2d ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel_size", [1, 2, 3, 5])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("channels", [1, 3])  # im2col copies a single channel differently
def test_conv2d_equals_readable(dtype, kernel_size, padding, channels):
    rng = np.random.default_rng(10 + kernel_size)
    x = rand(rng, (2, 7, 6, channels), dtype)
    params = {"kernel": rand(rng, (kernel_size, kernel_size, channels, 4), dtype),
              "bias": rand(rng, 4, dtype)}
    out, cache = L.conv2d_forward(x, params, padding)
    fast_out, fast_cache = F.conv2d_forward(x, params, padding)
    assert_close(fast_out, out, dtype)
    dout = rand(rng, out.shape, dtype)
    readable = L.conv2d_backward(dout, cache)
    assert_grads_close(F.conv2d_backward(dout, fast_cache), readable, dtype,
                       ("x", "kernel", "bias"))
    skipped = F.conv2d_backward(dout, fast_cache, input_grad=False)
    assert_grads_close(skipped, {k: readable[k] for k in ("kernel", "bias")}, dtype,
                       ("kernel", "bias"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv2d_in_chunks_of_images_equals_readable(dtype, padding, monkeypatch):
    """A batch of 5 split into chunks of 1 or 2 images (CHUNK_BYTES below one image's
    rows, then between one and two): forward, dx and the kernel gradient all still
    equal the readable layer's."""
    rng = np.random.default_rng(14)
    x = rand(rng, (5, 6, 7, 3), dtype)
    params = {"kernel": rand(rng, (3, 3, 3, 4), dtype), "bias": rand(rng, 4, dtype)}
    out, cache = L.conv2d_forward(x, params, padding)
    dout = rand(rng, out.shape, dtype)
    readable = L.conv2d_backward(dout, cache)
    image_rows_bytes = out[0, ..., 0].size * (3 * 3 * 3 + 1) * np.dtype(dtype).itemsize
    for chunk_bytes in (1, image_rows_bytes * 3 // 2):
        monkeypatch.setattr(F, "CHUNK_BYTES", chunk_bytes)
        assert len(F.image_chunks(5, image_rows_bytes)) == (5 if chunk_bytes == 1 else 3)
        fast_out, fast_cache = F.conv2d_forward(x, params, padding)
        assert_close(fast_out, out, dtype)
        assert_grads_close(F.conv2d_backward(dout, fast_cache), readable, dtype,
                           ("x", "kernel", "bias"))


def test_conv2d_refills_the_cols_of_a_dead_cache_of_the_same_shape_only():
    rng = np.random.default_rng(15)
    x1, x2 = rand(rng, (2, 6, 6, 3), np.float32), rand(rng, (2, 6, 6, 3), np.float32)
    params = {"kernel": rand(rng, (3, 3, 3, 4), np.float32), "bias": rand(rng, 4, np.float32)}
    _, cache1 = F.conv2d_forward(x1, params)
    out2, cache2 = F.conv2d_forward(x2, params, reuse=cache1)
    assert cache2[0] is cache1[0]  # the same buffer, refilled with x2's patches
    fresh_out, fresh_cache = F.conv2d_forward(x2, params)
    assert np.array_equal(out2, fresh_out) and np.array_equal(cache2[0], fresh_cache[0])
    _, smaller = F.conv2d_forward(x2[:1], params, reuse=cache2)  # another batch size
    _, readable = L.conv2d_forward(x2, params)  # (xp, ...): never taken for cols
    assert smaller[0] is not cache2[0]
    assert F.conv2d_forward(x2, params, reuse=readable)[1][0] is not readable[0]


@pytest.mark.parametrize("n, bytes_per_image", [(128, 666_000), (5, 10**9), (7, 1), (1, 1)])
def test_image_chunks_cover_the_batch_in_near_equal_chunks(n, bytes_per_image):
    chunks = F.image_chunks(n, bytes_per_image)
    assert chunks[0].start == 0 and chunks[-1].stop == n
    assert all(a.stop == b.start for a, b in zip(chunks, chunks[1:]))
    sizes = [c.stop - c.start for c in chunks]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1  # no small last chunk
    assert max(sizes) * bytes_per_image >= F.CHUNK_BYTES or len(chunks) == 1
    assert len(chunks) == 1 or min(sizes) * bytes_per_image >= F.CHUNK_BYTES // 2


def test_conv2d_rejects_wrong_channel_count_and_padding_like_readable():
    with pytest.raises(ValueError, match="channels"):
        F.conv2d_forward(np.zeros((1, 5, 5, 2)), {"kernel": np.zeros((3, 3, 1, 4)),
                                                  "bias": np.zeros(4)})
    with pytest.raises(ValueError, match="padding"):
        F.conv2d_forward(np.zeros((1, 5, 5, 1)), {"kernel": np.zeros((3, 3, 1, 4)),
                                                  "bias": np.zeros(4)}, "full")


@pytest.mark.parametrize("channels", [1, 3])
def test_im2col_rows_are_patches_and_col2im_is_its_adjoint(channels):
    """<im2col(x), G> == <x, col2im(G)> for every x and G: col2im is im2col transposed."""
    rng = np.random.default_rng(12)
    x = rand(rng, (2, 6, 7, channels), np.float64)
    cols = F.im2col(x, 3, 2)
    assert cols.shape == (2 * 4 * 6, 3 * 2 * channels)
    assert np.array_equal(cols[7], x[0, 1:4, 1:3, :].reshape(-1))  # row 7: patch at (1, 1)
    assert np.array_equal(F.im2col(x, 3, 2, ones=True), np.hstack([cols, np.ones((48, 1))]))
    g = rand(rng, cols.shape, np.float64)
    assert np.sum(cols * g) == pytest.approx(np.sum(x * F.col2im(g, x.shape, 3, 2)), rel=1e-12)


# --- maxpool2d ---------------------------------------------------------------------

POOL_CASES = [(1, (1, 3, 3, 2)), (2, (3, 6, 8, 4)), (2, (2, 7, 5, 3)), (3, (2, 8, 7, 2)),
              (4, (1, 9, 9, 1)),  # odd sizes leave rows and columns out
              (2, (2, 6, 5, 3)), (2, (2, 5, 6, 3))]  # ... of one axis only


def tied(rng, shape, dtype):
    """Values with many ties: small integers, a constant block of zeros (a blank image
    region, as after a ReLU) and a constant block of ones."""
    x = rng.integers(-2, 3, shape).astype(dtype)
    x[:, :4, :4] = 0
    x[:, -3:, -3:] = 1
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pool_size, shape", POOL_CASES)
@pytest.mark.parametrize("values", ["continuous", "ties"])
def test_maxpool2d_equals_readable_to_the_bit(dtype, pool_size, shape, values):
    rng = np.random.default_rng(pool_size)
    x = rand(rng, shape, dtype) if values == "continuous" else tied(rng, shape, dtype)
    out, cache = L.maxpool2d_forward(x, pool_size)
    fast_out, fast_cache = F.maxpool2d_forward(x, pool_size)
    assert fast_out.dtype == out.dtype == dtype and np.array_equal(fast_out, out)
    dout = rand(rng, out.shape, dtype)
    dx = F.maxpool2d_backward(dout, fast_cache)["x"]
    assert dx.dtype == dtype and np.array_equal(dx, L.maxpool2d_backward(dout, cache)["x"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pool_size, shape", POOL_CASES)
def test_maxpool2d_with_fused_relu_equals_readable_relu_then_pool(dtype, pool_size, shape):
    rng = np.random.default_rng(13)
    x = tied(rng, shape, dtype)  # negatives, zeros and ties
    relu_out, relu_cache = L.relu_forward(x)
    pooled, pool_cache = L.maxpool2d_forward(relu_out, pool_size)
    fused, fused_cache = F.maxpool2d_forward(x, pool_size, relu=True)
    assert np.array_equal(fused, pooled)
    dout = rand(rng, pooled.shape, dtype)
    two_steps = L.relu_backward(L.maxpool2d_backward(dout, pool_cache)["x"], relu_cache)["x"]
    assert np.array_equal(F.maxpool2d_backward(dout, fused_cache)["x"], two_steps)


# --- batchnorm ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7, 4), (3, 5, 6, 2)])  # (N, C) and (N, H, W, C)
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_equals_readable(dtype, shape, training):
    rng = np.random.default_rng(20)
    c = shape[-1]
    params = {"gamma": rand(rng, c, dtype), "beta": rand(rng, c, dtype),
              "moving_mean": rand(rng, c, dtype),
              "moving_variance": (0.5 + rng.random(c)).astype(dtype)}
    x = rand(rng, shape, dtype) * 3 + 1
    out, cache = L.batchnorm_forward(x, params, training)
    fast_out, fast_cache = F.batchnorm_forward(x, params, training)
    assert_close(fast_out, out, dtype)
    if training:  # the statistics moving_average_update receives
        for fast_stat, stat in zip(fast_cache[-1], cache[-1]):
            assert_close(fast_stat, stat, dtype)
        moved = {key: value.copy() for key, value in params.items()}
        fast_moved = {key: value.copy() for key, value in params.items()}
        L.moving_average_update(moved, cache[-1])
        L.moving_average_update(fast_moved, fast_cache[-1])
        for key in ("moving_mean", "moving_variance"):
            assert_close(fast_moved[key], moved[key], dtype)
    else:
        assert fast_cache[-1] is None and cache[-1] is None
    dout = rand(rng, shape, dtype)
    assert_grads_close(F.batchnorm_backward(dout, fast_cache), L.batchnorm_backward(dout, cache),
                       dtype, ("x", "gamma", "beta"))


def test_channel_sums_equal_plain_sums_across_blocks():
    rng = np.random.default_rng(21)
    a, b = rng.standard_normal((10_000, 3)), rng.standard_normal((10_000, 3))
    np.testing.assert_allclose(F.channel_sum(a), a.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(F.channel_dot(a, b), (a * b).sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(F.channel_dot(a, b, block=3000), (a * b).sum(axis=0), rtol=1e-12)
