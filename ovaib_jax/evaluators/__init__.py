"""Evaluators on precomputed arrays (SPEC section 5): in-batch loss and retrieval, probes,
modality subsets, split-level retrieval and MI bounds.

The caller embeds each split once with a frozen model (:func:`embed_split` -> an
:class:`Embedded`: encoder representations per modality, embeddings ``z`` (M, N, d) and
targets) and every evaluator works on those host arrays, so none depends on the model.

Evaluators are registered by name (big_vision style) and share ONE protocol: each is
constructed from its config keys, says whether it reads the train split
(``needs_train``), and runs on the embedded splits with a :class:`RunInfo` (the
objective, the seed and the keyword arguments the run trained with)::

    from ovaib_jax import evaluators

    train = evaluators.embed_split(embed_fn, train_batches, spec=spec)
    test = evaluators.embed_split(embed_fn, test_batches, spec=spec)
    ev = evaluators.create("retrieval", {"pairs": ["resp+ecg->bvp"], "chunk_size": 512})
    info = evaluators.RunInfo(objective="ova_ib", seed=42)
    metrics = ev.run(train if ev.needs_train else None, test, info)  # {"R@1": ...}

Every ``run`` returns a flat ``{metric: value}`` dict of JSON-able numbers (log them as
``"{evaluator}/{metric}"``, :func:`scalars` does that), plus a markdown string under
``"table"`` for ``modality_subsets`` and ``retrieval``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ovaib_jax.evaluators._base import (
    Embedded,
    Evaluator,
    RunInfo,
    TargetInfo,
    embed_split,
    parse_config,
)
from ovaib_jax.evaluators.downstream import Downstream, ModalitySubsets
from ovaib_jax.evaluators.inbatch import HeldOutLoss, InBatchRetrieval
from ovaib_jax.evaluators.mi_bounds import MIBounds
from ovaib_jax.evaluators.probe import ProbeConfig, fit_probes
from ovaib_jax.evaluators.retrieval import Retrieval, retrieve

EVALUATORS: dict[str, type[Evaluator]] = {
    "heldout_loss": HeldOutLoss,
    "inbatch_retrieval": InBatchRetrieval,
    "downstream": Downstream,
    "modality_subsets": ModalitySubsets,
    "retrieval": Retrieval,
    "mi_bounds": MIBounds,
}


def names() -> tuple[str, ...]:
    """The registered evaluator names."""
    return tuple(EVALUATORS)


def get(name: str) -> type[Evaluator]:
    """The evaluator class registered as ``name``; an unknown name lists the valid ones."""
    try:
        return EVALUATORS[name]
    except KeyError:
        raise ValueError(
            f"Unknown evaluator {name!r}; valid evaluators: {', '.join(EVALUATORS)}."
        ) from None


def create(name: str, config: Mapping[str, Any] | None = None) -> Evaluator:
    """``get(name)(**config)``; ``config`` a dict or ConfigDict (unknown keys raise)."""
    if config is not None and hasattr(config, "to_dict"):
        config = config.to_dict()
    return get(name)(**dict(config or {}))


def scalars(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """``{"{evaluator}/{metric}": float}`` of the numeric entries (tables dropped), for
    TensorBoard / metrics.jsonl."""
    out = {}
    for name, res in results.items():
        for k, v in res.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"{name}/{k}"] = float(v)
    return out


__all__ = [
    "EVALUATORS",
    "Downstream",
    "Embedded",
    "Evaluator",
    "HeldOutLoss",
    "InBatchRetrieval",
    "MIBounds",
    "ModalitySubsets",
    "ProbeConfig",
    "Retrieval",
    "RunInfo",
    "TargetInfo",
    "create",
    "embed_split",
    "fit_probes",
    "get",
    "names",
    "parse_config",
    "retrieve",
    "scalars",
]
