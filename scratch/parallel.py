"""Data parallelism by hand: K replicas of one NumPy model, an all-reduce, one update.

    replicas = DataParallel(build_model("convnet"), replicas=4)
    loss = replicas.train_step(x, y, SGD(0.1))   # x: one global batch of B images

What `tf.distribute.MirroredStrategy` does on K devices, written out over K simulated
workers (plain Python objects standing in for GPUs or machines):

1. shard: the global batch of B examples is cut into K contiguous shards of B/K,
   shard k going to replica k (`shard`), as tf.distribute splits a batch;
2. every replica holds its own copy of the weights and runs forward and backward on
   its shard. Its loss is the sum of its examples' losses divided by the GLOBAL batch
   size B (not by B/K), so the K losses add up to the mean over the whole batch and
   the K gradients add up to its gradient;
3. all-reduce: every replica ends up holding the sum of the K gradients. Written as a
   ring all-reduce (`ring_all_reduce`: a reduce-scatter, then an all-gather, each
   K - 1 steps in which every worker passes one chunk to its neighbour), beside the
   plain sum (`all_reduce_sum`) it equals;
4. every replica applies the same optimizer update to its copy with the same summed
   gradient, so the copies stay identical without ever being sent.

BatchNorm is where replicas meet inside the forward pass. With per-replica statistics
(Keras's default under a strategy) each replica normalises its shard with the shard's
own mean and variance: the result is NOT the single-device network on the whole batch,
and each replica's moving statistics follow its own shards (Keras keeps one copy per
replica and reads replica 0's). Synchronized BatchNorm (`sync_batchnorm_forward`,
keras.layers.BatchNormalization(synchronized=True)) all-reduces the per-channel sums,
so every replica normalises with the statistics of the global batch: the same numbers
as one device, at the price of two all-reduces per BatchNorm layer and step.
"""
from __future__ import annotations

import copy

import numpy as np

from scratch.layer_classes import BatchNorm, Dropout
from scratch.layers import BN_EPSILON, moving_average_update
from scratch.losses import l2_penalty, softmax_cross_entropy

# --- shards ------------------------------------------------------------------


def shard(x, y, replicas: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cut one global batch into `replicas` contiguous shards of equal size.

    x: (B, ...), y: (B,), B divisible by K = replicas. Returns [(x_k (B/K, ...),
    y_k (B/K,))] for k = 0 .. K-1: rows k*B/K .. (k+1)*B/K - 1, the rows
    tf.distribute gives replica k of a global batch.
    """
    if replicas < 1:
        raise ValueError(f"replicas {replicas}: expected at least 1")
    if len(x) != len(y) or len(x) % replicas:
        raise ValueError(f"a batch of {len(x)} images and {len(y)} labels cannot be cut into "
                         f"{replicas} equal shards: use a global batch divisible by {replicas}")
    size = len(x) // replicas
    return [(x[k * size:(k + 1) * size], y[k * size:(k + 1) * size]) for k in range(replicas)]


# --- all-reduce --------------------------------------------------------------


def all_reduce_sum(values: list[np.ndarray]) -> list[np.ndarray]:
    """The plain all-reduce: the sum of the K workers' arrays, one copy per worker.

    values: K arrays of one shape. Returns K arrays, each the sum over workers,
    added in worker order 0, 1, ..., K-1.
    """
    total = values[0].copy()
    for value in values[1:]:
        total += value
    return [total.copy() for _ in values]


def reduce_scatter(chunks: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    """The first half of the ring all-reduce, in place on `chunks`.

    chunks[r][c]: worker r's chunk c (c = 0 .. K-1), the K chunks of its array.
    The workers sit in a ring, r sending to r + 1 (mod K). In step s = 0 .. K-2,
    every worker r at once sends its chunk (r - s) mod K, and the receiver adds
    it to its own copy of that chunk. Chunk c starts at worker c and travels the
    ring, picking up one worker's part per step, so after K - 1 steps worker r
    holds the complete sum of chunk (r + 1) mod K (and partial sums elsewhere).
    Each worker sent K - 1 chunks of 1/K of the array: 2 (K-1)/K of it for the
    whole all-reduce, however large K gets.
    """
    k = len(chunks)
    for step in range(k - 1):
        sent = [(r, (r - step) % k, chunks[r][(r - step) % k].copy()) for r in range(k)]
        for r, c, chunk in sent:  # every send of a step happens at once
            chunks[(r + 1) % k][c] += chunk
    return chunks


def all_gather(chunks: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    """The second half of the ring all-reduce, in place: after reduce_scatter worker r
    holds the complete chunk (r + 1) mod K. In step s = 0 .. K-2 every worker r sends
    its complete chunk (r + 1 - s) mod K to r + 1, which overwrites its copy; after
    K - 1 steps every worker holds every complete chunk."""
    k = len(chunks)
    for step in range(k - 1):
        sent = [(r, (r + 1 - step) % k, chunks[r][(r + 1 - step) % k].copy()) for r in range(k)]
        for r, c, chunk in sent:
            chunks[(r + 1) % k][c] = chunk
    return chunks


def ring_all_reduce(values: list[np.ndarray]) -> list[np.ndarray]:
    """The ring all-reduce of K workers' arrays: reduce_scatter, then all_gather.

    values: K arrays of one shape (each worker's gradients). Each is flattened and
    cut into K chunks (np.array_split: sizes differ by at most one). Returns K
    arrays, each the sum over workers: equal to all_reduce_sum up to the order of
    the additions (exactly equal for integer-valued floats).
    """
    chunks = [np.array_split(value.reshape(-1).copy(), len(values)) for value in values]
    chunks = all_gather(reduce_scatter(chunks))
    return [np.concatenate(worker).reshape(values[0].shape) for worker in chunks]


ALL_REDUCE = {"ring": ring_all_reduce, "sum": all_reduce_sum}


# --- synchronized BatchNorm ----------------------------------------------------


def sync_batchnorm_forward(xs, params, all_reduce=all_reduce_sum):
    """BatchNorm in training mode with the statistics of the GLOBAL batch, K replicas.

    xs: K arrays (N_k, ..., C), replica k's input; params: K dicts with "gamma"
    and "beta" (C,), each replica's copy (the same values). Per channel, with
    M = sum of the replicas' M_k values (M_k = x_k.size / C):
        mean = all_reduce(sum over x_k) / M
        var  = all_reduce(sum over (x_k - mean)^2) / M       (biased, two passes)
        out_k = gamma * (x_k - mean) / sqrt(var + eps) + beta
    Each replica sends C numbers per all-reduce, never its activations. The result
    is single-device batchnorm_forward on the K inputs stacked, cut back into K.
    Returns (outs: K arrays shaped like xs, caches: K tuples (xhat_k, gamma, std,
    (mean, var), M), (mean, var) for the moving statistics).
    """
    axes = tuple(range(xs[0].ndim - 1))
    count = sum(x.size // x.shape[-1] for x in xs)
    mean = all_reduce([x.sum(axis=axes) for x in xs])[0] / count
    var = all_reduce([((x - mean) ** 2).sum(axis=axes) for x in xs])[0] / count
    std = np.sqrt(var + BN_EPSILON)
    outs, caches = [], []
    for x, p in zip(xs, params):
        xhat = (x - mean) / std
        outs.append(p["gamma"] * xhat + p["beta"])
        caches.append((xhat, p["gamma"], std, (mean, var), count))
    return outs, caches, (mean, var)


def sync_batchnorm_backward(douts, caches, all_reduce=all_reduce_sum):
    """douts: K arrays, dL/dout_k shaped like replica k's output. Returns K dicts
    {"x": dL/dx_k, "gamma": (C,), "beta": (C,)}: the gamma and beta gradients of
    replica k's copy alone (the gradient all-reduce adds them up, as for any weight).

    The derivation. L = sum over replicas of L_k, and out_k enters only L_k, so
    dout_k is replica k's own upstream gradient. Per channel, with sums over the
    M values of all replicas (the global batch),
        xhat = (x - mean) / std,  mean = sum(x) / M,  var = sum((x - mean)^2) / M,
    which is single-device BatchNorm on the stacked batch, so the single-device
    result holds, its sums now running over every replica:
        dx_k = gamma / std * (dout_k - dbeta / M - xhat_k * dgamma / M),
        dbeta = sum over all replicas of dout,  dgamma = sum of dout * xhat.
    (Step by step: dxhat = gamma * dout; dvar = -sum(dxhat * xhat) / (2 (var + eps));
    dmean = -sum(dxhat) / std, the var term sum(x - mean) being 0; and
    dx = dxhat / std + dvar * 2 (x - mean) / M + dmean / M.) Replica k holds only its
    own terms of dbeta and dgamma: one all-reduce of the 2C numbers (sum(dout_k),
    sum(dout_k * xhat_k)) gives every replica the global sums, so x_k's gradient
    also carries the loss terms of the other replicas' examples, through the shared
    mean and variance. With per-replica statistics those sums stay local: the
    replicas' gradients then describe K separate networks.
    """
    axes = tuple(range(douts[0].ndim - 1))
    local_dbeta = [dout.sum(axis=axes) for dout in douts]
    local_dgamma = [(dout * cache[0]).sum(axis=axes) for dout, cache in zip(douts, caches)]
    dbeta, dgamma = all_reduce(local_dbeta)[0], all_reduce(local_dgamma)[0]
    grads = []
    for dout, (xhat, gamma, std, _, count), own_dbeta, own_dgamma in zip(
            douts, caches, local_dbeta, local_dgamma):
        dx = gamma / std * (dout - dbeta / count - xhat * dgamma / count)
        grads.append({"x": dx, "gamma": own_dgamma, "beta": own_dbeta})
    return grads


# --- K replicas of a model ------------------------------------------------------


class DataParallel:
    """K replicas of a `scratch.model.Model`, trained as one by an all-reduce.

    replicas: K deep copies of `model` (its weights, moving statistics and dropout
    generator; give each replica its own dropout stream with `seed_dropout`).
    sync_bn: BatchNorm layers normalise with the global batch's statistics
    (`sync_batchnorm_forward`) instead of each replica's shard's.
    all_reduce: "ring" (`ring_all_reduce`) or "sum" (`all_reduce_sum`).
    """

    def __init__(self, model, replicas: int, sync_bn: bool = False, all_reduce: str = "ring"):
        if replicas < 1:
            raise ValueError(f"replicas {replicas}: expected at least 1")
        if all_reduce not in ALL_REDUCE:
            raise ValueError(f"all_reduce {all_reduce!r}: expected one of {', '.join(ALL_REDUCE)}")
        self.replicas = [copy.deepcopy(model) for _ in range(replicas)]
        self.sync_bn = sync_bn
        self.synced = False  # the last forward synchronized its BatchNorm layers
        self.all_reduce = ALL_REDUCE[all_reduce]

    def seed_dropout(self, seed: int) -> None:
        """One independent dropout generator per replica (copies would draw equal masks)."""
        for model, seq in zip(self.replicas, np.random.SeedSequence(seed).spawn(len(self))):
            model.rng = np.random.default_rng(seq)
            for layer in model.layers:
                if isinstance(layer, Dropout):
                    layer.rng = model.rng

    def __len__(self) -> int:
        return len(self.replicas)

    def forward(self, xs, training=True, dropout=True):
        """xs: K shards -> K logits (N_k, 10), layer by layer across the replicas
        (a synchronized BatchNorm needs every replica's input at once)."""
        outs = [model._check_input(x) for model, x in zip(self.replicas, xs)]
        self.synced = self.sync_bn and training  # what backward must undo
        for i in range(len(self.replicas[0].layers)):
            layers = [model.layers[i] for model in self.replicas]
            if self.synced and isinstance(layers[0], BatchNorm):
                outs, caches, stats = sync_batchnorm_forward(
                    outs, [layer.params for layer in layers], self.all_reduce)
                for layer, cache in zip(layers, caches):
                    layer.cache = cache
                    moving_average_update(layer.params, stats)
            else:
                on = training and (dropout or not isinstance(layers[0], Dropout))
                outs = [layer.forward(out, on) for layer, out in zip(layers, outs)]
        return outs

    def backward(self, dlogits) -> None:
        """Backpropagate K upstream gradients; fills every replica's layer.grads."""
        first = self.replicas[0].first_trainable
        for model in self.replicas:
            model.layers[first].input_grad = False
        grads = list(dlogits)
        for i in reversed(range(first, len(self.replicas[0].layers))):
            layers = [model.layers[i] for model in self.replicas]
            if self.synced and isinstance(layers[0], BatchNorm):
                results = sync_batchnorm_backward(grads, [layer.cache for layer in layers],
                                                  self.all_reduce)
                grads = [result.pop("x") for result in results]
                for layer, result in zip(layers, results):
                    layer.grads = result
            else:
                grads = [layer.backward(grad) for layer, grad in zip(layers, grads)]

    def loss_and_grads(self, x, y, training=True, dropout=True, label_smoothing=0.0):
        """Forward and backward of every replica on its shard of the global batch x, y.

        Replica k's loss is its examples' summed loss / B (B = len(y), the global
        batch), plus 1/K of the L2 penalty; the K losses add up to the single-device
        loss of the whole batch. Afterwards each replica's layer.grads holds ITS
        gradient, before any all-reduce. Returns (global loss, logits (B, 10)).
        """
        shards = shard(np.asarray(x), np.asarray(y), len(self))
        logits = self.forward([xs for xs, _ in shards], training, dropout)
        losses, dlogits = [], []
        for (_, ys), out in zip(shards, logits):
            loss, dout = softmax_cross_entropy(out, ys, label_smoothing)
            scale = len(ys) / len(y)  # the shard's mean -> its share of the global mean
            losses.append(loss * scale)
            dlogits.append(dout * out.dtype.type(scale))
        self.backward(dlogits)
        for model in self.replicas:
            losses.append(self._add_l2(model) / len(self))
        return float(sum(losses)), np.concatenate(logits)

    def _add_l2(self, model) -> float:
        """Add 1/K of the L2 gradient to the model's grads; returns the whole penalty."""
        penalty = 0.0
        for layer in model.layers:
            if model.l2 and layer.regularized:
                value, grad = l2_penalty(layer.params["kernel"], model.l2)
                layer.grads["kernel"] += grad / len(self)
                penalty += value
        return penalty

    def all_reduce_gradients(self) -> None:
        """Replace every replica's gradient of every parameter by the sum over replicas."""
        for i, key, _ in self.replicas[0].parameters():
            summed = self.all_reduce([model.layers[i].grads[key] for model in self.replicas])
            for model, total in zip(self.replicas, summed):
                model.layers[i].grads[key] = total

    def gradients(self) -> dict[tuple[int, str], np.ndarray]:
        """{(layer index, param name): gradient} of replica 0 (after `all_reduce_gradients`,
        every replica holds the same)."""
        model = self.replicas[0]
        return {(i, key): model.layers[i].grads[key] for i, key, _ in model.parameters()}

    def train_step(self, x, y, optimizer, dropout=True, label_smoothing=0.0) -> float:
        """One data-parallel step on the global batch x, y: shards, K forward and backward
        passes, the all-reduce, the same update on every replica. Returns the loss."""
        loss, _ = self.loss_and_grads(x, y, True, dropout, label_smoothing)
        self.all_reduce_gradients()
        for model in self.replicas:
            model.apply_gradients(optimizer)
        return loss

    def max_replica_difference(self, trainable_only: bool = True) -> float:
        """The largest |difference| between replica 0's weights and any other replica's:
        0.0 when the copies are identical. trainable_only=False includes BatchNorm's
        moving statistics (which per-replica BatchNorm lets drift apart)."""
        def arrays(model):
            return model.parameters() if trainable_only else model.weights()
        first = arrays(self.replicas[0])
        return max((float(np.abs(a - b).max())
                    for model in self.replicas[1:]
                    for (_, _, a), (_, _, b) in zip(first, arrays(model))), default=0.0)
