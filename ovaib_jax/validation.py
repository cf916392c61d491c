"""The checks run on a config before anything is built, and what they resolve.

:func:`validate_config` raises ONE ``ValueError`` naming the problem and its fix, section
by section (the run's schedule, the objective, the dataset and modalities, the model,
the optimizer, the evaluators), and returns the resolved pieces as :class:`Resolved`.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from typing import Any

import ml_collections

from ovaib_jax import configs, data, evaluators, losses, models

__all__ = ["REQUIRED_FIELDS", "Resolved", "validate_config"]

# Every field the trainer reads; experiments/default.py defines each (with its default).
REQUIRED_FIELDS = (
    "seed", "batch_size", "eval_batch_size", "num_train_steps", "log_every_steps",
    "eval_every_steps", "eval_num_batches", "checkpoint_every_steps", "keep_checkpoints",
    "async_checkpointing", "evaluators", "final_evaluators", "evaluator_kwargs",
    "objective.name", "objective.chunk_size",
    "dataset.name", "dataset.builder_config", "dataset.config", "dataset.modalities",
    "dataset.train_split", "dataset.eval_split", "dataset.data_dir", "dataset.manual_dir",
    "dataset.prefetch", "dataset.device_prefetch", "dataset.cache_max_mb", "dataset.shuffle_block",
    "dataset.epoch_aligned",
    "model.encoders", "model.representation_dim", "model.embedding_dim", "model.head_layers",
    "model.head_hidden", "model.normalize_embeddings", "model.learnable_temperature",
    "model.min_temperature", "model.max_temperature", "model.projector_hidden",
    "model.dtype", "model.objective_dtype", "model.branches",
    "optimizer.name", "optimizer.learning_rate", "optimizer.schedule", "optimizer.warmup_steps",
    "optimizer.weight_decay", "optimizer.weight_decay_mask", "optimizer.grad_clip_norm",
    "optimizer.b1", "optimizer.b2", "optimizer.eps", "optimizer.momentum",
    "distributed.initialize", "distributed.coordinator_address", "distributed.num_processes",
    "distributed.process_id",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Resolved:
    """What :func:`validate_config` worked out from a config.

    Attributes:
      spec: the dataset's :class:`ovaib_jax.data.spec.DatasetSpec`.
      modalities: the modalities used, in the order of z (M entries).
      objective_name: the objective's registered name.
      objective: the objective function from ``ovaib_jax.losses.get``.
      hparams: its hyper-parameters (anchor names resolved to indices; ``projector``
        removed, or the callable :func:`ovaib_jax.losses.product_projector` for
        ``"product"``; a learnable temperature's parameter still holding its initial value).
      temperature_param: ``"tau"`` or ``"logit_scale"`` when the model learns it, else None.
      init_temperature: the model's initial tau.
      learn_product_weight: whether the model learns OVA's ``product_weight`` (its
        initial value is ``hparams["product_weight"]``).
      projector: whether the model needs the MLP projector (OVA's ``projector="mlp"``;
        always for the objectives of ``losses.LEARNED_PROJECTOR``: ConFu's fusion heads).
      normalize_embeddings: whether the model L2-normalises z.
      encoders: encoder name per modality.
      fusion: whether the model needs CoMM's masked fusion (the objectives of
        ``losses.TAKES_FUSE``, which take it as ``fuse``).
    """

    spec: Any
    modalities: tuple[Any, ...]
    objective_name: str
    objective: Callable[..., Any]
    hparams: dict[str, Any]
    temperature_param: str | None
    init_temperature: float
    projector: bool
    normalize_embeddings: bool
    encoders: tuple[str, ...]
    fusion: bool = False
    learn_product_weight: bool = False

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)

    @property
    def takes_key(self) -> bool:
        """Whether the objective takes a PRNG key (random negatives)."""
        return self.objective_name in losses.TAKES_KEY


def validate_config(
    config: ml_collections.ConfigDict,
    *,
    device_count: int | None = None,
    process_count: int | None = None,
) -> Resolved:
    """Checks ``config`` before anything is built; one clear ``ValueError`` per problem.

    Checks: every field the trainer reads is there; positive step counts and intervals;
    the global batch divisible by the number of devices (and processes); the objective
    name and every hyper-parameter against the objective's signature; the dataset name,
    its modality subset and the M the objective needs; anchors; encoder names and
    overrides; optimizer and schedule; evaluator names and their config keys.

    Args:
      config: the full experiment config.
      device_count: devices of the run (default ``jax.device_count()``).
      process_count: processes of the run (default ``jax.process_count()``).

    Returns:
      The :class:`Resolved` pieces the trainer builds from.
    """
    import jax

    for path in REQUIRED_FIELDS:
        _required(config, path)
    _check_schedule(
        config,
        jax.device_count() if device_count is None else device_count,
        jax.process_count() if process_count is None else process_count,
    )
    name, fn, section = _check_objective(config)
    spec, modalities = _resolve_modalities(config, name)
    hparams, projector = _resolve_hparams(section, modalities)
    # The learned heads the objective takes from the model, which must build them.
    projector = projector or name in losses.LEARNED_PROJECTOR
    encoders, temperature_param, init_temperature = _check_model(config, name, hparams, modalities)
    learn_product_weight = _check_product_weight(config, name, hparams)
    _check_optimizer(config.optimizer)
    _check_evaluators(config, tuple(m.name for m in modalities))
    # No objective needs the model to normalise: the cosine-, projection- and volume-based
    # ones normalise inside, and Symile's MIP is left unnormalised so that the encoders
    # learn its scale (with unit vectors and the default logit_scale = 1 its logits stay
    # near 0 and it barely learns; unnormalised, it reaches the best achievable loss on
    # XOR, docs/RESULTS.md).
    normalize = bool(config.model.normalize_embeddings)
    return Resolved(
        spec=spec,
        modalities=modalities,
        objective_name=name,
        objective=fn,
        hparams=hparams,
        temperature_param=temperature_param,
        init_temperature=init_temperature,
        projector=projector,
        normalize_embeddings=normalize,
        encoders=tuple(encoders),
        fusion=name in losses.TAKES_FUSE,
        learn_product_weight=learn_product_weight,
    )


# The objectives whose ``product_weight`` weighs OVA's span + product score (the model
# may learn it); ``ova_ib_heads``' weighs a loss term, which a learned weight would zero.
PRODUCT_SCORED = ("ova_ib", "ova_sufficiency", "ova_ib_comm")


def _check_product_weight(
    config: ml_collections.ConfigDict, objective: str, hparams: dict[str, Any]
) -> bool:
    """``config.model.learnable_product_weight``: only for :data:`PRODUCT_SCORED`, from
    an initial ``objective.product_weight`` > 0, without a projector."""
    if not config.model.get("learnable_product_weight", False):
        return False
    if objective not in PRODUCT_SCORED:
        raise ValueError(
            f"config.model.learnable_product_weight=True, but objective {objective!r} has no "
            f"span + product score to weigh (only {', '.join(PRODUCT_SCORED)}); set it to False."
        )
    w = hparams.get("product_weight", 0.0)
    if not isinstance(w, (int, float)) or isinstance(w, bool) or not w > 0:
        raise ValueError(
            "config.model.learnable_product_weight=True learns the weight from its initial "
            f"value config.objective.product_weight, which must be > 0; got {w!r} "
            "(e.g. --config.objective.product_weight=1.0)."
        )
    lo, hi = models.PRODUCT_WEIGHT_BOUNDS
    if not lo <= w <= hi:
        raise ValueError(
            f"config.model.learnable_product_weight=True keeps the weight inside [{lo:g}, "
            f"{hi:g}]; its initial value config.objective.product_weight={w!r} is outside "
            "(it would train at the bound): start inside, or set learnable_product_weight=False."
        )
    return True


# --------------------------------------------------------------------------- helpers


def _required(config: ml_collections.ConfigDict, path: str) -> Any:
    node: Any = config
    for part in path.split("."):
        if not hasattr(node, "keys") or part not in node:
            raise ValueError(
                f"config has no field {path!r}; start from experiments/default.py, which "
                "defines every field the trainer reads."
            )
        node = node[part]
    return node


def check_seed(seed: Any, name: str) -> int:
    """``seed`` if it is an integer in [0, 2**32) (a PRNG seed of every run), else a
    ValueError naming ``name``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"{name} must be an integer in [0, 2**32), got {seed!r}.")
    return seed


def _positive_int(config: ml_collections.ConfigDict, path: str, allow_zero: bool = False) -> int:
    value = _required(config, path)
    ok = (
        isinstance(value, int)
        and not isinstance(value, bool)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"config.{path} must be an integer {bound}, got {value!r}.")
    return value


# --------------------------------------------------------------------------- sections


def _check_schedule(config: ml_collections.ConfigDict, device_count: int, process_count: int):
    """Step counts, intervals, seed, batch sizes and the shuffle block."""
    for path in (
        "num_train_steps",
        "log_every_steps",
        "checkpoint_every_steps",
        "batch_size",
    ):
        _positive_int(config, path)
    if config.get("keep_checkpoints", 0) is not None:  # None or 0: keep every checkpoint
        _positive_int(config, "keep_checkpoints", allow_zero=True)
    for path in ("eval_every_steps", "eval_batch_size", "eval_num_batches"):
        _positive_int(config, path, allow_zero=True)
    _positive_int(config, "dataset.shuffle_block")
    check_seed(config.seed, "config.seed")
    for path in ("batch_size", "eval_batch_size"):
        size = config[path] or config.batch_size
        if size % device_count:
            lo = size // device_count * device_count
            raise ValueError(
                f"config.{path}={size} (global) is not divisible by the {device_count} devices "
                f"of this run; use a multiple of {device_count}, e.g. "
                f"--config.{path}={max(lo, device_count)}."
            )
        if size % process_count:
            raise ValueError(
                f"config.{path}={size} is not divisible by the {process_count} processes; "
                f"use a multiple of {process_count}."
            )


def _check_objective(config: ml_collections.ConfigDict) -> tuple[str, Callable, dict[str, Any]]:
    """The objective's name, function and hyper-parameters, checked against its signature."""
    name = config.objective.name
    try:
        fn = losses.get(name)
    except (ValueError, KeyError) as e:
        raise ValueError(
            f"config.objective.name={name!r} is not an objective: {e} Set "
            "--config.objective.name to one of them (or pick the matching defaults with "
            "--config=experiments/default.py:objective=NAME)."
        ) from None
    hparams_sig = configs.objective_hparam_names(fn)
    section = config.objective.to_dict()
    chunk = section.pop("chunk_size")
    section.pop("name")
    if chunk is None or not isinstance(chunk, int) or chunk < 0:
        raise ValueError(
            f"config.objective.chunk_size must be an int >= 0 (0: off), got {chunk!r}."
        )
    unknown = sorted(set(section) - set(hparams_sig))
    if unknown:
        raise ValueError(
            f"config.objective has {unknown}, which objective {name!r} does not take (it takes "
            f"{sorted(hparams_sig)}). Start from --config=experiments/default.py:objective={name} "
            "to get exactly its hyper-parameters."
        )
    missing = sorted(
        k
        for k, p in hparams_sig.items()
        if p.default is inspect.Parameter.empty and k not in section
    )
    if missing:
        raise ValueError(f"config.objective lacks {missing}, required by objective {name!r}.")
    for key, value in section.items():
        if key in ("tau", "logit_scale") and not (
            isinstance(value, int | float) and value > 0 and math.isfinite(value)
        ):
            raise ValueError(f"config.objective.{key} must be a positive number, got {value!r}.")
    return name, fn, section


def _resolve_modalities(config: ml_collections.ConfigDict, objective: str) -> tuple[Any, tuple]:
    """The dataset's spec and the modalities selected, in the order of z."""
    ds_name = config.dataset.name
    try:
        spec = data.get_spec(ds_name, **configs.dataset_kwargs(config))
    except ValueError as e:
        raise ValueError(f"config.dataset: {e}") from None
    wanted = [s.strip() for s in (config.dataset.modalities or "").split(",") if s.strip()]
    by_name = {m.name: m for m in spec.modalities}
    if wanted:
        bad = [w for w in wanted if w not in by_name]
        if bad or len(set(wanted)) != len(wanted):
            raise ValueError(
                f"config.dataset.modalities={config.dataset.modalities!r}: "
                + (f"{bad} are not modalities of {ds_name!r}" if bad else "repeated names")
                + f"; its modalities are {list(by_name)} (comma-separated; empty = all)."
            )
        modalities = tuple(by_name[w] for w in wanted)
    else:
        modalities = tuple(spec.modalities)
    m = len(modalities)
    if m < 2:
        raise ValueError(
            f"{m} modality selected ({[x.name for x in modalities]}); every objective aligns "
            f"M >= 2 modalities. Set config.dataset.modalities to two or more of {list(by_name)}."
        )
    if objective == "triangle" and m != 3:
        raise ValueError(
            f"objective 'triangle' is defined for exactly 3 modalities; {m} are selected "
            f"({[x.name for x in modalities]}). Set config.dataset.modalities to three names."
        )
    for split_key in ("train_split", "eval_split"):
        split = config.dataset[split_key]
        base = (split or "").split("[")[0]
        if split and spec.splits and base not in spec.splits:
            raise ValueError(
                f"config.dataset.{split_key}={split!r}: {ds_name!r} has splits {list(spec.splits)}."
            )
    return spec, modalities


def _resolve_hparams(section: dict[str, Any], modalities: tuple) -> tuple[dict[str, Any], bool]:
    """The hyper-parameters as the objective takes them (anchor names as indices, the
    projector choice resolved) and whether the model needs the MLP projector."""
    hparams = dict(section)
    m = len(modalities)
    if "anchor" in hparams:
        anchor = hparams["anchor"]
        names = [x.name for x in modalities]
        if isinstance(anchor, str):
            if anchor not in names:
                raise ValueError(
                    f"config.objective.anchor={anchor!r} is not one of the modalities {names}; "
                    "give a modality name or an index."
                )
            hparams["anchor"] = names.index(anchor)
        elif not isinstance(anchor, int) or not -m <= anchor < m:
            raise ValueError(
                f"config.objective.anchor={anchor!r} is not a modality index for M = {m} "
                f"({names}); give a modality name or an index in [0, {m})."
            )
    if hparams.get("negatives") == "shuffled" and m == 2:
        raise ValueError(
            "config.objective.negatives='shuffled' needs M >= 3 modalities; 2 are selected "
            f"({[x.name for x in modalities]}): the one remaining modality's shuffled rows "
            "are the batch's own vectors, so each positive would stand among its negatives. "
            "Use negatives='batch', or select three or more modalities."
        )
    projector = False
    if "projector" in hparams:
        choice = hparams.pop("projector")
        if choice not in configs.PROJECTOR_CHOICES:
            raise ValueError(
                f"config.objective.projector={choice!r}; valid values are "
                f"{configs.PROJECTOR_CHOICES}."
            )
        projector = choice == "mlp"
        if choice == "product":
            hparams["projector"] = losses.product_projector
    return hparams, projector


def _check_model(
    config: ml_collections.ConfigDict, objective: str, hparams: dict[str, Any], modalities: tuple
) -> tuple[list[str], str | None, float]:
    """Encoders and their overrides, dimensions, the learnable temperature: returns
    ``(encoder per modality, temperature parameter or None, initial tau)``."""
    mc = config.model
    for path in ("model.representation_dim", "model.embedding_dim", "model.head_layers"):
        _positive_int(config, path)
    try:
        overrides = models.parse_encoder_overrides(mc.encoders)
        encoders = models.resolve_encoders(modalities, overrides)
    except ValueError as e:
        raise ValueError(f"config.model.encoders: {e}") from None
    for field in ("dtype", "objective_dtype"):
        if mc[field] not in models.DTYPES:
            raise ValueError(
                f"config.model.{field}={mc[field]!r}; valid dtypes are {', '.join(models.DTYPES)}."
            )
    _check_branches(config, objective, hparams)
    for enc in encoders:
        if "dtype" in dict(models.encoder_kwargs(mc, enc)):
            raise ValueError(
                f"config.model.{enc}.dtype: the compute dtype is one for the whole model; "
                f"set config.model.dtype ({', '.join(models.DTYPES)}) instead."
            )
        kwargs = dict(models.encoder_kwargs(mc, enc))
        types = {f.name: str(f.type) for f in dataclasses.fields(models.get_encoder(enc))}
        fields = set(types)
        bad = sorted(set(kwargs) - fields)
        if bad:
            raise ValueError(
                f"config.model.{enc} has {bad}, which encoder {enc!r} does not take; it takes "
                f"{sorted(fields - {'parent', 'name', 'out_dim'})}."
            )
        for key, value in kwargs.items():
            _check_encoder_value(f"config.model.{enc}.{key}", value, types[key])
    projector_hidden = mc.get("projector_hidden", ())
    if not _widths(projector_hidden):
        raise ValueError(
            f"config.model.projector_hidden={projector_hidden!r} must be positive integer "
            "widths, e.g. (256,)."
        )
    if not mc.learnable_temperature:
        return encoders, None, 0.07  # the initial temperature is unused then
    param = losses.TEMPERATURE.get(objective)
    if param is None or param not in hparams:
        raise ValueError(
            f"config.model.learnable_temperature=True, but objective {objective!r} has no "
            "temperature (tau or logit_scale); set it to False."
        )
    init_temperature = losses.temperature_of(objective, hparams)
    lo, hi = float(mc.min_temperature), float(mc.max_temperature)
    if not 0 < lo <= init_temperature <= hi:
        raise ValueError(
            f"The initial temperature {init_temperature} is outside "
            f"[model.min_temperature, model.max_temperature] = [{lo}, {hi}]."
        )
    return encoders, param, init_temperature


def _widths(value: Any, allow_int: bool = False) -> bool:
    """Whether ``value`` is a tuple or list of integers >= 1 (or, with ``allow_int``, one)."""
    if allow_int and not isinstance(value, (tuple, list)):
        value = (value,)
    return isinstance(value, (tuple, list)) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value
    )


def _check_encoder_value(path: str, value: Any, annotation: str) -> None:
    """An encoder setting of the types the encoders take: integers >= 1 (``input_channels``
    >= 0: 0 keeps the channels as stored), tuples of them, a known activation name. They
    failed inside flax at model build (a string or 1.5 for a width, a kernel of 0)."""
    if annotation == "int":
        low = 0 if path.endswith(".input_channels") else 1
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
            raise ValueError(f"{path}={value!r} must be an integer >= {low}.")
    elif annotation in ("Sequence[int]", "int | Sequence[int]"):
        if not _widths(value, allow_int=annotation.startswith("int |")):
            raise ValueError(f"{path}={value!r} must be a tuple of integers >= 1, e.g. (64, 64).")
    elif path.endswith(".act"):
        try:
            models.activation(value)  # an unknown name lists the valid ones
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None


def _check_branches(
    config: ml_collections.ConfigDict, objective: str, hparams: dict[str, Any]
) -> None:
    """``model.branches``: positive widths summing to ``model.embedding_dim``; with
    ``ova_ib_heads``, its heads' widths (one branch per head, none straddling two)."""
    d = int(config.model.embedding_dim)
    dims = models.parse_branch_dims(config.model.branches)  # ValueError naming the format
    if not dims:
        return
    if sum(dims) != d:
        raise ValueError(
            f"config.model.branches = {config.model.branches!r} sums to {sum(dims)}; the "
            f"widths must sum to model.embedding_dim = {d}."
        )
    if objective == "ova_ib_heads":
        sizes = losses.head_sizes(d, hparams["product_share"], hparams["comm_share"])
        heads = ",".join(str(w) for w in sizes if w > 0)
        if ",".join(map(str, dims)) != heads:
            raise ValueError(
                f"config.model.branches = {config.model.branches!r} does not split z where "
                f"ova_ib_heads' heads do (span, product, comm widths {sizes} at d = {d}); "
                f"set config.model.branches = {heads!r} for one encoder branch per head."
            )


def _check_optimizer(opt: ml_collections.ConfigDict) -> None:
    if opt.name not in configs.OPTIMIZERS:
        raise ValueError(
            f"config.optimizer.name={opt.name!r}; valid optimizers are {configs.OPTIMIZERS}."
        )
    if opt.schedule not in configs.SCHEDULES:
        raise ValueError(
            f"config.optimizer.schedule={opt.schedule!r}; valid schedules are {configs.SCHEDULES}."
        )
    if not opt.learning_rate > 0:
        raise ValueError(f"config.optimizer.learning_rate must be > 0, got {opt.learning_rate}.")
    if opt.warmup_steps < 0 or opt.grad_clip_norm < 0:
        raise ValueError("config.optimizer.warmup_steps and grad_clip_norm must be >= 0.")
    if opt.weight_decay_mask not in configs.WEIGHT_DECAY_MASKS:
        raise ValueError(
            f"config.optimizer.weight_decay_mask={opt.weight_decay_mask!r}; valid masks are "
            f"{configs.WEIGHT_DECAY_MASKS}."
        )
    if opt.name != "adamw" and opt.weight_decay:
        raise ValueError(
            f"config.optimizer.weight_decay={opt.weight_decay} needs "
            "--config.optimizer.name=adamw (decoupled weight decay)."
        )


def _check_evaluators(config: ml_collections.ConfigDict, modality_names: tuple) -> None:
    valid = sorted(evaluators.names())
    for field in ("evaluators", "final_evaluators"):
        for ev in configs.evaluator_names(config, field):
            if ev not in valid:
                raise ValueError(
                    f"config.{field} names {ev!r}; valid evaluators are {valid} (comma-separated)."
                )
    kwargs_all = config.evaluator_kwargs or {}
    for ev in kwargs_all:
        if ev not in valid:
            raise ValueError(
                f"config.evaluator_kwargs has {ev!r}, which is not an evaluator; valid "
                f"evaluators are {valid}."
            )
        try:  # builds the config dataclass: unknown keys raise
            evaluators.create(ev, kwargs_all[ev]).check(modality_names)
        except (TypeError, ValueError) as e:
            raise ValueError(f"config.evaluator_kwargs.{ev}: {e}") from None
