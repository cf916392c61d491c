"""Objectives for multi-modal contrastive alignment, as pure JAX functions.

Every objective is ``fn(z, *, <hyper-parameters>, axis_name=None, chunk_size=None)
-> (loss, aux)`` over embeddings ``z`` of shape ``(M, N, d)``; it can be jitted,
differentiated and vmapped, called inside ``jax.shard_map`` over a batch-sharded ``z``
(``axis_name``), and blocked over candidates (``chunk_size``). See ``SPEC.md`` for the
formulas and the decisions taken where the papers are ambiguous.

Example::

    import jax, jax.numpy as jnp
    from ovaib_jax import losses

    z = jax.random.normal(jax.random.key(0), (3, 64, 32))  # 3 modalities, batch 64
    loss, aux = losses.ova_ib(z, tau=0.1, beta=1.0)
    grads = jax.grad(lambda z: losses.get("ova_ib")(z)[0])(z)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ovaib_jax.losses.fusion import comm, confu, fusion_score, mean_fusion, ova_ib_comm
from ovaib_jax.losses.heads import head_sizes, ova_heads_score, ova_ib_heads
from ovaib_jax.losses.ova import ova_ib, ova_minimality, ova_sufficiency, product_projector
from ovaib_jax.losses.pairwise import anchor_clip, pairwise_clip, pairwise_clip_ib
from ovaib_jax.losses.scores import (
    clip_score,
    gram_score,
    ova_score,
    projector_score,
    symile_score,
    triangle_score,
)
from ovaib_jax.losses.symile import symile
from ovaib_jax.losses.volume import gram, triangle

OBJECTIVES: dict[str, Callable] = {
    "ova_ib": ova_ib,
    "ova_sufficiency": ova_sufficiency,
    "pairwise_clip": pairwise_clip,
    "pairwise_clip_ib": pairwise_clip_ib,
    "anchor_clip": anchor_clip,
    "symile": symile,
    "gram": gram,
    "triangle": triangle,
    "confu": confu,
    "comm": comm,
    "ova_ib_comm": ova_ib_comm,
    "ova_ib_heads": ova_ib_heads,
}

# Each objective's own similarity, for retrieval (SPEC section 4).
SCORERS: dict[str, Callable] = {
    "ova_ib": ova_score,
    "ova_sufficiency": ova_score,
    "pairwise_clip": clip_score,
    "pairwise_clip_ib": clip_score,
    "anchor_clip": clip_score,
    "symile": symile_score,
    "gram": gram_score,
    "triangle": triangle_score,
    # Without the model's fusion the fusion methods rank as their parameter-free default
    # (``mean_fusion``: per query, the ranking of the mean cosine). A run's learned fusion
    # scores through ``projector_score`` (ConFu: its fusion is the run's projector, which
    # the evaluators already use) or ``fusion_score`` (CoMM: the fused query set against
    # the fused candidate modality).
    "confu": clip_score,
    "comm": clip_score,
    # OVA-IB + CoMM's self-contrast: retrieval by the one-vs-all score it trains.
    "ova_ib_comm": ova_score,
    # OVA-IB on separate heads: the span head's projection score plus its product head's.
    "ova_ib_heads": ova_heads_score,
}


# What the trainer and the evaluators need to know of each objective, stated here rather
# than read from signatures (tests/losses check these tables against the signatures).
# Objectives that take a PRNG ``key`` (random negatives): the trainer passes the step's key.
TAKES_KEY = frozenset({"ova_ib", "ova_sufficiency", "symile", "ova_ib_comm", "ova_ib_heads"})
# Objectives whose ``projector`` is always the model's learned MLP projector (one MLP per
# held-out modality on the concatenated embeddings of the others): ConFu's fusion heads.
# The trainer builds it and passes it, as for OVA's ``projector="mlp"``.
LEARNED_PROJECTOR = frozenset({"confu"})
# Objectives that take the model's masked fusion ``fuse(parts, subset) -> (N, D)`` (CoMM):
# the trainer builds it and passes it as ``fuse``.
TAKES_FUSE = frozenset({"comm", "ova_ib_comm", "ova_ib_heads"})
# Of those, the ones whose evaluators score retrieval with the fusion
# (``fusion_score``); the others score with their own scorer (``SCORERS``).
FUSION_SCORED = frozenset({"comm"})
# The hyper-parameters an objective shares with its retrieval scorer, so that retrieval
# scores as training did.
SCORER_HPARAMS: dict[str, tuple[str, ...]] = {
    "ova_ib": ("lam", "product_weight"),
    "ova_sufficiency": ("lam", "product_weight"),
    "ova_ib_comm": ("lam", "product_weight"),
    "ova_ib_heads": ("lam", "product_share", "product_weight", "comm_share"),
}
# The temperature of each objective: ``tau`` itself, or Symile's ``logit_scale = 1 / tau``.
TEMPERATURE: dict[str, str] = {
    "ova_ib": "tau",
    "ova_sufficiency": "tau",
    "pairwise_clip": "tau",
    "pairwise_clip_ib": "tau",
    "anchor_clip": "tau",
    "symile": "logit_scale",
    "gram": "tau",
    "triangle": "tau",
    "confu": "tau",
    "comm": "tau",
    "ova_ib_comm": "tau",
    "ova_ib_heads": "tau",
}


def temperature_kwargs(name: str, tau: Any) -> dict[str, Any]:
    """``{hyper-parameter: value}`` that gives objective ``name`` the temperature ``tau``
    (a float or a traced scalar): ``{"tau": tau}``, or ``{"logit_scale": 1 / tau}``."""
    param = TEMPERATURE[name]
    return {param: tau if param == "tau" else 1.0 / tau}


def temperature_of(name: str, hparams: Mapping[str, Any]) -> float:
    """The temperature tau that the hyper-parameters ``hparams`` give objective ``name``."""
    param = TEMPERATURE[name]
    value = float(hparams[param])
    return value if param == "tau" else 1.0 / value


def names() -> tuple[str, ...]:
    """The registered objective names."""
    return tuple(OBJECTIVES)


def get(name: str) -> Callable:
    """The objective registered as ``name``; an unknown name lists the valid ones."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(
            f"Unknown objective {name!r}; valid objectives: {', '.join(OBJECTIVES)}."
        ) from None


def get_scorer(name: str) -> Callable:
    """The retrieval scorer of objective ``name``: ``(queries (Q, Nq, d), cands (Nc, d))
    -> (Nq, Nc)``; an unknown name lists the valid ones."""
    try:
        return SCORERS[name]
    except KeyError:
        raise ValueError(
            f"Unknown objective {name!r} for a scorer; valid names: {', '.join(SCORERS)}."
        ) from None


__all__ = [
    "FUSION_SCORED",
    "LEARNED_PROJECTOR",
    "OBJECTIVES",
    "SCORERS",
    "SCORER_HPARAMS",
    "TAKES_FUSE",
    "TAKES_KEY",
    "TEMPERATURE",
    "anchor_clip",
    "clip_score",
    "comm",
    "confu",
    "fusion_score",
    "get",
    "get_scorer",
    "gram",
    "gram_score",
    "head_sizes",
    "mean_fusion",
    "names",
    "ova_heads_score",
    "ova_ib",
    "ova_ib_comm",
    "ova_ib_heads",
    "ova_minimality",
    "ova_score",
    "ova_sufficiency",
    "pairwise_clip",
    "pairwise_clip_ib",
    "product_projector",
    "projector_score",
    "symile",
    "symile_score",
    "temperature_kwargs",
    "temperature_of",
    "triangle",
    "triangle_score",
]
