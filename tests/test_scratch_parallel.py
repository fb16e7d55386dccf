"""scratch.parallel: shards, the ring all-reduce, synchronized BatchNorm, K replicas as one."""
import numpy as np
import pytest

from helpers import random_batch
from scratch import gradcheck, layers, parallel
from scratch.model import build_model
from scratch.optim import SGD, Adam

pytestmark = pytest.mark.usefixtures("one_blas_thread")


def test_shards_are_contiguous_rows_in_replica_order():
    x, y = np.arange(24).reshape(12, 2), np.arange(12)
    shards = parallel.shard(x, y, 3)
    assert [list(ys) for _, ys in shards] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert np.array_equal(np.concatenate([xs for xs, _ in shards]), x)
    with pytest.raises(ValueError, match="divisible by 5"):
        parallel.shard(x, y, 5)


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("size", [1, 5, 30])
def test_ring_all_reduce_equals_the_plain_sum(workers, size):
    rng = np.random.default_rng(workers * 100 + size)
    integers = [rng.integers(-1000, 1000, (size, 2)).astype(np.float64) for _ in range(workers)]
    ring, plain = parallel.ring_all_reduce(integers), parallel.all_reduce_sum(integers)
    expected = np.sum(integers, axis=0)
    for got in (*ring, *plain):  # integers: every order of addition is exact
        assert np.array_equal(got, expected)
    floats = [rng.standard_normal((size, 3)) for _ in range(workers)]
    for got in parallel.ring_all_reduce(floats):  # floats: equal up to the order of additions
        assert np.abs(got - np.sum(floats, axis=0)).max() <= 1e-15 * workers * np.abs(floats).max()


def test_reduce_scatter_leaves_worker_r_with_the_sum_of_chunk_r_plus_one():
    k = 4
    chunks = [[np.full(2, 10.0 ** r) for _ in range(k)] for r in range(k)]  # worker r: 10^r
    parallel.reduce_scatter(chunks)
    for r in range(k):
        assert np.array_equal(chunks[r][(r + 1) % k], np.full(2, 1111.0))
        partial = [c for c in range(k) if c != (r + 1) % k]
        assert all(chunks[r][c][0] < 1111 for c in partial)  # not yet complete there


def sync_bn_inputs(shape=(6, 3, 3, 4), replicas=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2 + 1
    params = {"gamma": rng.standard_normal(shape[-1]), "beta": rng.standard_normal(shape[-1]),
              "moving_mean": np.zeros(shape[-1]), "moving_variance": np.ones(shape[-1])}
    return x, params, np.array_split(x, replicas)


def test_synchronized_batchnorm_is_single_device_batchnorm_on_the_whole_batch():
    x, params, xs = sync_bn_inputs()
    dout = np.random.default_rng(1).standard_normal(x.shape)
    outs, caches, (mean, var) = parallel.sync_batchnorm_forward(xs, [params] * 3)
    single, cache = layers.batchnorm_forward(x, params, training=True)
    assert np.abs(np.concatenate(outs) - single).max() <= 1e-13
    assert np.abs(mean - cache[3][0]).max() <= 1e-14 and np.abs(var - cache[3][1]).max() <= 1e-13
    grads = parallel.sync_batchnorm_backward(np.array_split(dout, 3), caches)
    expected = layers.batchnorm_backward(dout, cache)
    assert gradcheck.grad_rel_error(np.concatenate([g["x"] for g in grads]), expected["x"]) <= 1e-10
    for key in ("gamma", "beta"):  # the replicas' own terms add up to the whole
        assert gradcheck.grad_rel_error(sum(g[key] for g in grads), expected[key]) <= 1e-12
    # per-replica statistics are another function: its input gradient differs
    local = np.concatenate([layers.batchnorm_backward(d, layers.batchnorm_forward(
        xk, params, True)[1])["x"] for xk, d in zip(xs, np.array_split(dout, 3))])
    assert gradcheck.grad_rel_error(local, expected["x"]) > 1e-2


def test_synchronized_batchnorm_backward_against_central_differences():
    x, params, xs = sync_bn_inputs(shape=(4, 2, 2, 3), replicas=2, seed=3)
    weights = [np.random.default_rng(k).standard_normal(xk.shape) for k, xk in enumerate(xs)]

    def loss():  # sum over replicas of sum(w_k * out_k): dout_k = w_k
        outs, _, _ = parallel.sync_batchnorm_forward(xs, [params] * 2)
        return sum(float((w * out).sum()) for w, out in zip(weights, outs))

    _, caches, _ = parallel.sync_batchnorm_forward(xs, [params] * 2)
    grads = parallel.sync_batchnorm_backward(weights, caches)
    checked = 0
    for k, xk in enumerate(xs):
        numeric = gradcheck.numeric_gradient(loss, xk, h=1e-5)
        assert gradcheck.grad_rel_error(grads[k]["x"], numeric, 1e-8) <= 1e-7
        checked += numeric.size
    for key in ("gamma", "beta"):
        numeric = gradcheck.numeric_gradient(loss, params[key], h=1e-5)
        assert gradcheck.grad_rel_error(sum(g[key] for g in grads), numeric) <= 1e-7
        checked += numeric.size
    assert checked == x.size + 6


def single_and_parallel(name, replicas, sync_bn=False, l2=0.0, batch=8, seed=0):
    model = build_model(name, seed=seed, l2=l2).astype(np.float64)
    x, y = random_batch(batch, seed=seed, model=name)
    data_parallel = parallel.DataParallel(model, replicas, sync_bn=sync_bn)
    loss_k, _ = data_parallel.loss_and_grads(x, y, dropout=False)
    data_parallel.all_reduce_gradients()
    loss_1, _ = model.loss_and_grads(x, y, dropout=False)
    # entries below 1e-8 of the largest gradient are measured against that (as compare.py)
    floor = 1e-8 * max(float(np.abs(model.layers[i].grads[key]).max())
                       for i, key, _ in model.parameters())
    errors = {(i, key): gradcheck.grad_rel_error(grad, model.layers[i].grads[key], floor)
              for (i, key), grad in data_parallel.gradients().items()
              if (i, key) not in model.biases_before_batchnorm()}
    return loss_1, loss_k, errors


@pytest.mark.parametrize("name, replicas", [("fc16", 4), ("tiny", 2)])
def test_all_reduced_gradient_is_the_whole_batch_gradient(name, replicas):
    loss_1, loss_k, errors = single_and_parallel(name, replicas, l2=2.0**-10)
    assert abs(loss_1 - loss_k) <= 1e-13 and len(errors) == 4 * (1 + (name == "tiny"))
    assert max(errors.values()) <= 1e-10, errors


def test_batchnorm_needs_synchronized_statistics_to_match_one_device():
    _, _, per_replica = single_and_parallel("best", 2)
    loss_1, loss_k, synchronized = single_and_parallel("best", 2, sync_bn=True)
    assert max(per_replica.values()) > 1e-2  # K separate normalisations: another function
    assert abs(loss_1 - loss_k) <= 1e-13
    assert max(synchronized.values()) <= 1e-7, synchronized


@pytest.mark.parametrize("sync_bn", [False, True])
def test_replicas_stay_identical_and_follow_single_device_training(sync_bn):
    name = "best" if sync_bn else "tiny"
    model = build_model(name, seed=1).astype(np.float64)
    data_parallel = parallel.DataParallel(model, 2, sync_bn=sync_bn)
    for step in range(3):
        x, y = random_batch(4, seed=10 + step, model=name)
        data_parallel.train_step(x, y, Adam(1e-3), dropout=False)
        model.loss_and_grads(x, y, dropout=False)
        model.apply_gradients(Adam(1e-3))
    assert data_parallel.max_replica_difference(trainable_only=False) == 0.0
    for (_, _, ours), (_, _, single) in zip(data_parallel.replicas[0].weights(), model.weights()):
        assert np.abs(ours - single).max() <= 1e-9


def test_per_replica_batchnorm_keeps_one_set_of_moving_statistics_per_replica():
    model = build_model("best", seed=1).astype(np.float64)
    data_parallel = parallel.DataParallel(model, 2)
    x, y = random_batch(4, seed=5, model="best")
    data_parallel.train_step(x, y, SGD(0.01), dropout=False)
    assert data_parallel.max_replica_difference() == 0.0  # the trained weights agree
    assert data_parallel.max_replica_difference(trainable_only=False) > 1e-6
