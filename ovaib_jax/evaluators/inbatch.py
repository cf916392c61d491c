"""In-batch evaluators: the training objective and retrieval inside batches of the run's
eval batch size (cheap, so the trainer runs them every ``eval_every_steps``).

The test split's embeddings are cut, in order, into whole batches of
``RunInfo.batch_size`` (at most ``RunInfo.num_batches`` of them, 0: all); each batch is
its own set of in-batch negatives, as in training.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ovaib_jax.evaluators._base import Embedded, Evaluator, RunInfo, objective_of
from ovaib_jax.evaluators.retrieval import nan_scores_last


def batches(test: Embedded, info: RunInfo, evaluator: str) -> Iterator[jax.Array]:
    """The whole ``(M, B, d)`` batches of ``test.z`` in order (``B = info.batch_size``)."""
    objective_of(info, evaluator)
    if test.z is None:
        raise ValueError(f"{evaluator}: the test split has no embeddings z.")
    b = int(info.batch_size)
    count = test.num_examples // b
    if info.num_batches:
        count = min(count, int(info.num_batches))
    if count == 0:
        raise ValueError(
            f"{evaluator}: the eval split has {test.num_examples} examples, fewer than one "
            f"batch of {b}; lower --config.eval_batch_size."
        )
    for i in range(count):
        yield jnp.asarray(test.z[:, i * b : (i + 1) * b])


def _split(objective: str, kwargs: Mapping[str, Any]) -> tuple[tuple, dict[str, Any]]:
    """``(static items, traced)``: the learned temperature is traced (it changes between
    evaluations without recompiling); every other keyword is static."""
    from ovaib_jax import losses

    temp = losses.TEMPERATURE.get(objective)
    traced = {k: v for k, v in kwargs.items() if k == temp}
    static = tuple(sorted((k, v) for k, v in kwargs.items() if k != temp))
    return static, traced


@functools.lru_cache(maxsize=32)
def _loss_fn(objective: str, static: tuple) -> Callable:
    from ovaib_jax import losses

    fn = functools.partial(losses.get(objective), **dict(static))
    return jax.jit(lambda z, traced, **kw: fn(z, **traced, **kw))


@dataclasses.dataclass(frozen=True)
class HeldOutLossConfig:
    """``heldout_loss`` config (no keys: batches are the run's eval batches)."""


class HeldOutLoss(Evaluator):
    """The training objective on the eval split: ``loss`` and every aux entry, averaged
    over batches, called with the run's own keyword arguments (``info.loss_kwargs``:
    hyper-parameters, learned temperature, projector) and, for objectives with random
    negatives, the PRNG key ``fold_in(key(seed + 1), i)`` for eval batch i (fresh
    negatives in every batch, the same in every evaluation)."""

    name = "heldout_loss"
    Config = HeldOutLossConfig
    needs_train = False

    def run(self, train: Embedded | None, test: Embedded, info: RunInfo) -> dict[str, Any]:
        from ovaib_jax import losses

        del train
        static, traced = _split(info.objective, info.loss_kwargs)
        try:
            fn = _loss_fn(info.objective, static)
        except TypeError:  # unhashable (a projector bound to parameters): compile uncached
            fn = _loss_fn.__wrapped__(info.objective, static)
        takes_key = info.objective in losses.TAKES_KEY
        key = jax.random.key(info.seed + 1)
        sums: dict[str, float] = {}
        n = 0
        for i, z in enumerate(batches(test, info, self.name)):
            extra = {"key": jax.random.fold_in(key, i)} if takes_key else {}
            loss, aux = fn(z, traced, **extra)
            for k, v in {"loss": loss, **aux}.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n += 1
        return {k: v / n for k, v in sums.items()}


@dataclasses.dataclass(frozen=True)
class InBatchRetrievalConfig:
    """``inbatch_retrieval`` config.

    Attributes:
      ks: the k of the top-k accuracies.
    """

    ks: tuple[int, ...] = (1, 5)


@functools.lru_cache(maxsize=32)
def _accuracies_fn(
    objective: str, scorer_items: tuple, projector: Any, ks: tuple, fuse: Any = None
) -> Callable:
    """Jitted ``z (M, B, d) -> (M, len(ks))`` top-k accuracies of each target modality."""
    from ovaib_jax import losses

    scorer = functools.partial(losses.get_scorer(objective), **dict(scorer_items))

    def accuracies(z):
        out = []
        n = z.shape[1]
        for c in range(z.shape[0]):
            rest = jnp.delete(z, c, axis=0)
            if projector is not None:  # the projector's score, as in training
                scores = losses.projector_score(rest, z[c], projector=projector, m=c)
            elif fuse is not None:  # the rest fused, against modality c alone
                others = tuple(i for i in range(z.shape[0]) if i != c)
                scores = losses.fusion_score(rest, z[c], fuse=fuse, subset=others, m=c)
            else:
                scores = scorer(rest, z[c])  # (N, N)
            # NaN scores rank last, as in split retrieval (retrieval.nan_scores_last).
            scores, true_nan = nan_scores_last(scores, jnp.arange(n))
            true = jnp.diagonal(scores)
            # rank of the true candidate (0-based): how many others score at least as
            # high (ties count against it, retrieval's default "pessimistic" convention:
            # collapsed embeddings, all tied, retrieve nothing)
            rank = jnp.where(true_nan, n - 1, jnp.sum(scores >= true[:, None], axis=1) - 1)
            out.append(jnp.stack([jnp.mean(rank < min(k, n)) for k in ks]))
        return jnp.stack(out)

    return jax.jit(accuracies)


class InBatchRetrieval(Evaluator):
    """Retrieve modality c of each sample from its other modalities, inside each batch.

    For every target modality c the queries are the remaining modalities of sample i,
    the candidates modality c of every sample of the batch, scored with the objective's
    own similarity (``ovaib_jax.losses.get_scorer`` with ``info.scorer_kwargs``; a run
    trained with an OVA projector: :func:`ovaib_jax.losses.projector_score`). Reports
    top-k accuracy per target (``<c>/top1``) and the means over targets (``top1``,
    ``top5``). The rank of the true candidate counts the other candidates scoring at
    least as high: ties count against it, as in ``retrieval``'s default ("pessimistic"),
    so collapsed embeddings (every score tied) retrieve nothing; a NaN true score ranks
    last (a hit only when k >= B), as in ``retrieval``.
    """

    name = "inbatch_retrieval"
    Config = InBatchRetrievalConfig
    needs_train = False

    def run(self, train: Embedded | None, test: Embedded, info: RunInfo) -> dict[str, Any]:
        del train
        ks = tuple(int(k) for k in self.config.ks)
        items = tuple(sorted(info.scorer_kwargs.items()))
        args = (info.objective, items, info.projector, ks, info.fuse)
        try:
            fn = _accuracies_fn(*args)
        except TypeError:  # unhashable projector: compile uncached
            fn = _accuracies_fn.__wrapped__(*args)
        total = None
        n = 0
        for z in batches(test, info, self.name):
            acc = np.asarray(fn(z))
            total = acc if total is None else total + acc
            n += 1
        acc = total / n
        out: dict[str, Any] = {}
        for c, name in enumerate(test.modality_names):
            for j, k in enumerate(ks):
                out[f"{name}/top{k}"] = float(acc[c, j])
        for j, k in enumerate(ks):
            out[f"top{k}"] = float(acc[:, j].mean())
        return out
