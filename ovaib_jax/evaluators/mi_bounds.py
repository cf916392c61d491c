"""InfoNCE lower bounds on mutual information, on held-out embeddings.

The test embeddings are shuffled (seeded; so that batches are not ordered by subject or
class) and cut into batches of ``batch_size`` (the last partial batch is dropped: the bound
``log N - L`` depends on N, and mixing batch sizes would mix ceilings). On each batch:

* the training objective's loss (``ovaib_jax.losses.get(objective)`` called as in
  training: with the run's hyper-parameters, learned temperature and OVA projector,
  which the caller passes in ``RunInfo.loss_kwargs``, updated with the
  config's ``loss_kwargs``) and every ``mi_bound/*`` entry of its aux, averaged over
  batches.
  Their meaning is the objective's (``mi_bound/m{m}`` for OVA and Symile,
  ``mi_bound/{p}->{q}`` for pairwise CLIP, ``mi_bound/anchor_to_rest`` for GRAM...).
  With product-of-marginals negatives (OVA's ``negatives="shuffled"``, Symile's) the
  bound is on the total correlation TC(z), not on I(z_m ; z_-m) (docs/THEORY.md 3'');
* a common yardstick whatever the objective: the One-vs-All sufficiency bound
  ``log N - L_m`` of ``ovaib_jax.losses.ova_sufficiency`` (``tau = ova_tau``) per
  modality, a lower bound on I(z_m ; z_-m) (SPEC section 1).

Every bound is at most ``log N`` (``log_n`` in the results), reached by perfectly aligned,
well-separated embeddings.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ovaib_jax.evaluators._base import Embedded, Evaluator, RunInfo, objective_of


@dataclasses.dataclass(frozen=True)
class MIBoundsConfig:
    """``mi_bounds`` config.

    Attributes:
      batch_size: N of each held-out batch (capped at the split size).
      max_batches: at most this many batches (None: all full batches).
      shuffle: shuffle the split (seeded) before batching.
      loss_kwargs: keyword arguments of the objective (e.g. ``{"tau": 0.07}``); they
        override the run's own (``RunInfo.loss_kwargs``).
      ova_tau: temperature of the OVA yardstick.
      chunk_size: candidates per block inside the losses (None: whole batch).
    """

    batch_size: int = 256
    max_batches: int | None = None
    shuffle: bool = True
    loss_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    ova_tau: float = 0.01
    chunk_size: int | None = None

    def __post_init__(self):
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, got {self.batch_size}.")
        if self.max_batches is not None and self.max_batches < 1:
            raise ValueError(
                f"max_batches must be >= 1 (None: all full batches), got {self.max_batches}."
            )
        object.__setattr__(self, "loss_kwargs", dict(self.loss_kwargs or {}))


@functools.lru_cache(maxsize=32)
def _stats_fn(objective: str, kw: tuple, ova_tau: float, m: int):
    """Jitted ``(z (M, B, d), key) -> (loss, {mi_bound/*: value}, {m: OVA bound})``,
    cached so repeated evaluations (every eval step of a run) compile once."""
    from ovaib_jax import losses

    loss_fn = losses.get(objective)
    kwargs = dict(kw)
    takes_key = objective in losses.TAKES_KEY and "key" not in kwargs
    chunk = kwargs.get("chunk_size")

    def batch_stats(zb, key):
        kw_ = dict(kwargs, key=key) if takes_key else kwargs
        loss, aux = loss_fn(zb, **kw_)
        _, ova_aux = losses.ova_sufficiency(zb, tau=ova_tau, chunk_size=chunk)
        own = {k: v for k, v in aux.items() if k.startswith("mi_bound/")}
        ova = {i: ova_aux[f"mi_bound/m{i}"] for i in range(m)}
        return loss, own, ova

    return jax.jit(batch_stats)


class MIBounds(Evaluator):
    """Per-batch InfoNCE MI lower bounds of the objective and the OVA yardstick.

    Results: ``loss`` (objective loss), ``mi_bound/<aux key>`` (the objective's own
    bounds), ``mi_bound/mean``, ``ova_mi_bound/<modality>`` (log N - L_m of OVA
    sufficiency), ``ova_mi_bound/mean``, ``log_n``, ``batch_size``, ``num_batches``.
    ``train`` is ignored.
    """

    name = "mi_bounds"
    Config = MIBoundsConfig
    needs_train = False

    def run(self, train: Embedded | None, test: Embedded, info: RunInfo) -> dict[str, Any]:
        """The objective is called as the run trained with it (``info.loss_kwargs``:
        hyper-parameters, learned temperature, ``projector``); the config's
        ``loss_kwargs`` override those."""
        from ovaib_jax import losses

        del train
        cfg = self.config
        objective, seed = objective_of(info, self.name), info.seed
        losses.get(objective)  # unknown names fail early
        if test.z is None:
            raise ValueError("mi_bounds: the test split has no embeddings z.")
        z = np.asarray(test.z, np.float32)
        m, n, _ = z.shape
        b = min(cfg.batch_size, n)
        if b < 2:
            raise ValueError(f"mi_bounds: needs at least 2 test examples, got {n}.")
        order = np.random.default_rng(seed).permutation(n) if cfg.shuffle else np.arange(n)
        num = n // b if cfg.max_batches is None else min(n // b, cfg.max_batches)

        kwargs = {**info.loss_kwargs, **cfg.loss_kwargs}
        if cfg.chunk_size is not None:
            kwargs.setdefault("chunk_size", cfg.chunk_size)
        items = tuple(sorted(kwargs.items()))
        uncached = _stats_fn.__wrapped__
        # A projector closes over the run's parameters: never cache it.
        fn = uncached if any(callable(v) for v in kwargs.values()) else _stats_fn
        try:
            stats = fn(objective, items, cfg.ova_tau, m)
        except TypeError:  # unhashable loss_kwargs (e.g. an array): compile uncached
            stats = uncached(objective, items, cfg.ova_tau, m)
        key = jax.random.key(seed)
        sums: dict[str, float] = {}
        for i in range(num):
            zb = jnp.asarray(z[:, order[i * b : (i + 1) * b]])
            loss, own, ova = stats(zb, jax.random.fold_in(key, i))
            flat = {"loss": loss, **own}
            flat.update({f"ova_mi_bound/{test.modality_names[j]}": v for j, v in ova.items()})
            for k, v in flat.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        out: dict[str, Any] = {k: v / num for k, v in sums.items()}
        own_keys = [k for k in out if k.startswith("mi_bound/")]
        if own_keys:
            out["mi_bound/mean"] = float(np.mean([out[k] for k in own_keys]))
        out["ova_mi_bound/mean"] = float(
            np.mean([out[f"ova_mi_bound/{name}"] for name in test.modality_names])
        )
        out["log_n"] = math.log(b)
        out["batch_size"] = b
        out["num_batches"] = num
        return out
