"""Models by name: per-modality encoders, projection heads and the multi-modal model.

* :func:`get_encoder` resolves an encoder name (``mlp``, ``cnn1d``, ``resnet18``, ``lstm``,
  ``small_cnn``) to its Flax module class; an unknown name lists the valid ones.
* :func:`parse_encoder_overrides` / :func:`resolve_encoders` pick the encoder of each
  modality: the config's override (``"rgb=small_cnn,force=cnn1d"``) or the dataset
  spec's suggestion.
* :func:`create_model` builds a :class:`MultiModalModel` from ``config.model``.
* :func:`get_dtype` resolves the dtype names of ``config.model.dtype`` (computation) and
  ``config.model.objective_dtype`` (what enters the objective): ``float32``, ``bfloat16``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp

from ovaib_jax.models.encoders import CNN1D, LSTM, MLP, ResNet18, SmallCNN, activation
from ovaib_jax.models.heads import MLPProjector, ProjectionHead
from ovaib_jax.models.multimodal import PRODUCT_WEIGHT_BOUNDS, EncoderDef, MultiModalModel

__all__ = [
    "DTYPES",
    "ENCODERS",
    "PRODUCT_WEIGHT_BOUNDS",
    "EncoderDef",
    "MLPProjector",
    "MultiModalModel",
    "ProjectionHead",
    "activation",
    "create_model",
    "encoder_kwargs",
    "get_dtype",
    "get_encoder",
    "parse_branch_dims",
    "parse_encoder_overrides",
    "resolve_encoders",
]

ENCODERS: dict[str, type] = {
    "mlp": MLP,
    "cnn1d": CNN1D,
    "resnet18": ResNet18,
    "lstm": LSTM,
    "small_cnn": SmallCNN,
}


# The dtypes a model may compute in (parameters are float32 whatever the choice). float16
# is not offered: without loss scaling its gradients underflow.
DTYPES: dict[str, Any] = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def get_dtype(name: str) -> Any:
    """The JAX dtype called ``name`` (a key of :data:`DTYPES`).

    Raises:
      ValueError: unknown name (the message lists the valid dtypes).
    """
    if name not in DTYPES:
        raise ValueError(f"Unknown dtype {name!r}; valid dtypes are {', '.join(DTYPES)}.")
    return DTYPES[name]


def get_encoder(name: str) -> type:
    """The encoder module class registered as ``name``.

    Raises:
      ValueError: unknown name (the message lists the valid encoders).
    """
    if name not in ENCODERS:
        raise ValueError(f"Unknown encoder {name!r}; valid encoders are {', '.join(ENCODERS)}.")
    return ENCODERS[name]


def parse_encoder_overrides(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """Parses ``"rgb=small_cnn, force=cnn1d"`` (or a mapping) into ``{modality: encoder}``.

    Raises:
      ValueError: a malformed entry or an unknown encoder name.
    """
    if not spec:
        return {}
    if isinstance(spec, Mapping):
        pairs = dict(spec)
    else:
        pairs = {}
        for item in str(spec).split(","):
            item = item.strip()
            if not item:
                continue
            if "=" not in item:
                raise ValueError(
                    f"model.encoders: malformed entry {item!r}; write 'modality=encoder' pairs "
                    "separated by commas, e.g. 'rgb=small_cnn,force=cnn1d'."
                )
            key, value = (s.strip() for s in item.split("=", 1))
            if key in pairs:
                raise ValueError(
                    f"model.encoders names modality {key!r} twice ({pairs[key]!r} and "
                    f"{value!r}); give each modality one encoder."
                )
            pairs[key] = value
    for value in pairs.values():
        get_encoder(value)
    return pairs


def resolve_encoders(modalities: Sequence[Any], overrides: Mapping[str, str]) -> list[str]:
    """Encoder name per modality: the override if given, else the spec's suggestion.

    Args:
      modalities: :class:`ovaib_jax.data.spec.Modality` objects (``.name``, ``.encoder``).
      overrides: ``{modality: encoder}``; every key must be one of the modalities.

    Raises:
      ValueError: an override names a modality that is not among ``modalities``.
    """
    names = [m.name for m in modalities]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ValueError(
            f"model.encoders overrides modalities {unknown} that the dataset does not have; "
            f"its modalities are {names}."
        )
    return [overrides.get(m.name, m.encoder) for m in modalities]


def encoder_kwargs(model_config: Any, encoder: str) -> tuple[tuple[str, Any], ...]:
    """The keyword arguments of ``encoder`` from ``model_config.<encoder>`` as sorted pairs.

    Lists become tuples so that the module definition stays hashable.
    """
    section = model_config.get(encoder) if hasattr(model_config, "get") else None
    if section is None:
        return ()
    items = section.to_dict() if hasattr(section, "to_dict") else dict(section)
    return tuple(
        sorted((k, tuple(v) if isinstance(v, list | tuple) else v) for k, v in items.items())
    )


def parse_branch_dims(spec: str) -> tuple[int, ...]:
    """``config.model.branches`` -> the embedding widths of separate encoder branches:
    ``""`` (one encoder per modality) -> ``()``; ``"16,8,8"`` -> ``(16, 8, 8)``.

    Raises:
      ValueError: a width that is not a positive integer.
    """
    parts = [p.strip() for p in str(spec or "").split(",") if p.strip()]
    if not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(
            f"config.model.branches = {spec!r}: give comma-separated positive embedding "
            f"widths, one per encoder branch, summing to model.embedding_dim (e.g. "
            f"'16,8,8'), or '' for one encoder per modality."
        )
    return tuple(int(p) for p in parts)


def create_model(
    model_config: Any,
    modalities: Sequence[Any],
    *,
    normalize_embeddings: bool = False,
    init_temperature: float = 0.07,
    init_product_weight: float = 1.0,
    projector: bool = False,
    fusion: bool = False,
) -> MultiModalModel:
    """Builds the multi-modal model from ``config.model``.

    Args:
      model_config: the ``config.model`` ConfigDict (see ``experiments/default.py``);
        its ``dtype`` and ``objective_dtype`` name the compute dtype and the dtype of what
        enters the objective (:func:`get_dtype`).
      modalities: the dataset's modalities in the order of ``z`` (``Modality`` objects).
      normalize_embeddings: L2-normalise z (decided by the trainer from the objective).
      init_temperature: initial tau of the learnable temperature.
      init_product_weight: initial w of the learnable product weight
        (``model_config.learnable_product_weight``; OVA's ``product_weight``).
      projector: build the MLP projector of the "OVA + MLP projector" ablation.
    """
    overrides = parse_encoder_overrides(model_config.encoders)
    names = resolve_encoders(modalities, overrides)
    defs: tuple[EncoderDef, ...] = tuple(
        (m.name, enc, encoder_kwargs(model_config, enc))
        for m, enc in zip(modalities, names, strict=True)
    )
    return MultiModalModel(
        encoders=defs,
        representation_dim=int(model_config.representation_dim),
        embedding_dim=int(model_config.embedding_dim),
        head_layers=int(model_config.head_layers),
        head_hidden=int(model_config.head_hidden),
        normalize_embeddings=bool(normalize_embeddings),
        learnable_temperature=bool(model_config.learnable_temperature),
        init_temperature=float(init_temperature),
        min_temperature=float(model_config.min_temperature),
        max_temperature=float(model_config.max_temperature),
        # read with a default: configs saved before the field existed still load
        learnable_product_weight=bool(model_config.get("learnable_product_weight", False)),
        init_product_weight=float(init_product_weight),
        projector=bool(projector),
        projector_hidden=tuple(model_config.projector_hidden),
        fusion=bool(fusion),
        dtype=get_dtype(model_config.dtype),
        objective_dtype=get_dtype(model_config.objective_dtype),
        branch_dims=parse_branch_dims(model_config.get("branches", "")),
    )
