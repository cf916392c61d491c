"""Config building blocks shared by ``experiments/*.py`` and the checks run at start-up.

* :func:`objective_config` builds the ``config.objective`` section of any objective from
  its signature (so every hyper-parameter the function takes is a config key, and
  nothing else is).
* :func:`validate_config` checks a whole config before anything is built and raises ONE
  ``ValueError`` naming the problem and its fix; it returns the resolved pieces
  (dataset spec, modalities, objective function and hyper-parameters) as
  :class:`Resolved`.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections

__all__ = [
    "HEAVY_EVALUATORS",
    "OBJECTIVE_OVERRIDES",
    "OFFLINE_PROBE",
    "TEMPERATURE_PARAMS",
    "Resolved",
    "evaluation_setup",
    "objective_config",
    "objective_hparam_names",
    "parse_arg",
    "validate_config",
]

# Arguments of every objective that are not hyper-parameters: the trainer passes them.
_NOT_HPARAMS = ("z", "axis_name", "chunk_size", "key")
# The hyper-parameter that a learnable temperature replaces, and how: tau is the model's
# temperature itself; Symile's logit_scale is its inverse.
TEMPERATURE_PARAMS = ("tau", "logit_scale")
# Paper defaults that differ from (or are absent in) the objectives' signatures.
OBJECTIVE_OVERRIDES: dict[str, dict[str, Any]] = {
    # "none": the projection of SPEC section 1; "mlp": the learnable MLP projector ablation;
    # "product": the parameter-free sign-aware losses.product_projector (an extension).
    "ova_ib": {"projector": "none"},
    "ova_sufficiency": {"projector": "none"},
}
PROJECTOR_CHOICES = ("none", "mlp", "product")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "warmup_constant")


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
    """Parses a big_vision-style config argument ``"objective=symile,runlocal"``.

    Each comma-separated item is ``key=value`` or a bare ``flag`` (meaning True); values
    are converted to the type of ``defaults[key]``. Unknown keys are an error.
    """
    out = dict(defaults)
    for item in (arg or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, _, value = item.partition("=")
        if key not in out:
            raise ValueError(f"Unknown config argument {key!r}; valid arguments are {sorted(out)}.")
        kind = type(out[key])
        if kind is bool:
            out[key] = value.lower() in ("", "1", "true", "yes")
        else:
            out[key] = kind(value)
    return ml_collections.ConfigDict(out)


def _loss_fn(name: str) -> Callable[..., Any]:
    from ovaib_jax import losses

    return losses.get(name)


def objective_hparam_names(fn: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The hyper-parameters of an objective: its keyword arguments minus the trainer's."""
    params = inspect.signature(fn).parameters
    return {
        k: p
        for k, p in params.items()
        if k not in _NOT_HPARAMS and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def objective_config(name: str, **overrides: Any) -> ml_collections.ConfigDict:
    """The ``config.objective`` section for objective ``name``.

    Holds ``name``, ``chunk_size`` (0: unchunked) and every hyper-parameter of the
    objective with its default from the function signature, then
    :data:`OBJECTIVE_OVERRIDES`, then ``overrides``.

    Raises:
      ValueError: unknown objective, or an override that is not a hyper-parameter.
    """
    fn = _loss_fn(name)
    hparams = objective_hparam_names(fn)
    values: dict[str, Any] = {}
    for key, p in hparams.items():
        if p.default is not inspect.Parameter.empty and p.default is not None:
            values[key] = p.default
    values.update(OBJECTIVE_OVERRIDES.get(name, {}))
    unknown = sorted(set(overrides) - set(hparams))
    if unknown:
        raise ValueError(
            f"objective {name!r} has no hyper-parameter(s) {unknown}; it takes {sorted(hparams)}."
        )
    values.update(overrides)
    return ml_collections.ConfigDict({"name": name, "chunk_size": 0, **values})


@dataclasses.dataclass(frozen=True)
class Resolved:
    """What :func:`validate_config` worked out from a config.

    Attributes:
      spec: the dataset's :class:`ovaib_jax.data.spec.DatasetSpec`.
      modalities: the modalities used, in the order of z (M entries).
      objective: the objective function from ``ovaib_jax.losses.get``.
      hparams: its hyper-parameters (anchor names resolved to indices; ``projector``
        removed, or the callable :func:`ovaib_jax.losses.product_projector` for
        ``"product"``; a learnable temperature's parameter still holding its initial value).
      temperature_param: ``"tau"`` or ``"logit_scale"`` when the model learns it, else None.
      init_temperature: the model's initial tau.
      projector: whether the model needs the MLP projector.
      normalize_embeddings: whether the model L2-normalises z.
      encoders: encoder name per modality.
    """

    spec: Any
    modalities: tuple[Any, ...]
    objective: Callable[..., Any]
    hparams: dict[str, Any]
    temperature_param: str | None
    init_temperature: float
    projector: bool
    normalize_embeddings: bool
    encoders: tuple[str, ...]

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)

    @property
    def takes_key(self) -> bool:
        return "key" in inspect.signature(self.objective).parameters


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


def dataset_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """``config.dataset.config`` as keyword arguments for ``get_spec``/``make_source``."""
    section = config.dataset.get("config")
    kwargs = section.to_dict() if hasattr(section, "to_dict") else dict(section or {})
    builder_config = config.dataset.get("builder_config") or None
    return {"config": builder_config, **kwargs}


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


def validate_config(
    config: ml_collections.ConfigDict,
    *,
    device_count: int | None = None,
    process_count: int | None = None,
) -> Resolved:
    """Checks ``config`` before anything is built; one clear ``ValueError`` per problem.

    Checks: positive step counts and intervals; the global batch divisible by the
    number of devices (and processes); the objective name and every hyper-parameter
    against the objective's signature; the dataset name, its modality subset and the M
    the objective needs; anchors; encoder names and overrides; optimizer and schedule;
    evaluator names.

    Args:
      config: the full experiment config.
      device_count: devices of the run (default ``jax.device_count()``).
      process_count: processes of the run (default ``jax.process_count()``).

    Returns:
      The :class:`Resolved` pieces the trainer builds from.
    """
    import jax

    from ovaib_jax import data, models

    device_count = jax.device_count() if device_count is None else device_count
    process_count = jax.process_count() if process_count is None else process_count

    # ---- schedule of the run ---------------------------------------------------------
    for path in ("num_train_steps", "log_every_steps", "checkpoint_every_steps", "batch_size"):
        _positive_int(config, path)
    _positive_int(config, "eval_every_steps", allow_zero=True)
    _positive_int(config, "eval_batch_size", allow_zero=True)
    seed = _required(config, "seed")
    if not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"config.seed must be an integer in [0, 2**32), got {seed!r}.")
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

    # ---- objective -------------------------------------------------------------------
    name = _required(config, "objective.name")
    from ovaib_jax import losses

    try:
        fn = losses.get(name)
    except (ValueError, KeyError) as e:
        raise ValueError(
            f"config.objective.name={name!r} is not an objective: {e} Set "
            "--config.objective.name to one of them (or pick the matching defaults with "
            "--config=experiments/default.py:objective=NAME)."
        ) from None
    hparams_sig = objective_hparam_names(fn)
    section = config.objective.to_dict()
    chunk = section.pop("chunk_size", 0)
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

    # ---- dataset and modalities ------------------------------------------------------
    ds_name = _required(config, "dataset.name")
    try:
        spec = data.get_spec(ds_name, **dataset_kwargs(config))
    except ValueError as e:
        raise ValueError(f"config.dataset: {e}") from None
    wanted = [s.strip() for s in (config.dataset.get("modalities") or "").split(",") if s.strip()]
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
    for split_key in ("train_split", "eval_split"):
        split = config.dataset.get(split_key)
        base = (split or "").split("[")[0]
        if split and spec.splits and base not in spec.splits:
            raise ValueError(
                f"config.dataset.{split_key}={split!r}: {ds_name!r} has splits {list(spec.splits)}."
            )

    hparams = dict(section)
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
    if name == "triangle" and m != 3:
        raise ValueError(
            f"objective 'triangle' is defined for exactly 3 modalities; {m} are selected "
            f"({[x.name for x in modalities]}). Set config.dataset.modalities to three names."
        )

    projector = False
    if "projector" in hparams:
        choice = hparams.pop("projector")
        if choice not in PROJECTOR_CHOICES:
            raise ValueError(
                f"config.objective.projector={choice!r}; valid values are {PROJECTOR_CHOICES}."
            )
        projector = choice == "mlp"
        if choice == "product":
            hparams["projector"] = losses.product_projector

    # ---- model -----------------------------------------------------------------------
    mc = _required(config, "model")
    for path in ("model.representation_dim", "model.embedding_dim"):
        _positive_int(config, path)
    try:
        overrides = models.parse_encoder_overrides(mc.get("encoders"))
        encoders = models.resolve_encoders(modalities, overrides)
    except ValueError as e:
        raise ValueError(f"config.model.encoders: {e}") from None
    for enc in encoders:
        kwargs = dict(models.encoder_kwargs(mc, enc))
        fields = {f.name for f in dataclasses.fields(models.get_encoder(enc))}
        bad = sorted(set(kwargs) - fields)
        if bad:
            raise ValueError(
                f"config.model.{enc} has {bad}, which encoder {enc!r} does not take; it takes "
                f"{sorted(fields - {'parent', 'name', 'out_dim'})}."
            )
    temperature_param = None
    init_temperature = 0.07  # unused unless the model learns its temperature
    if mc.get("learnable_temperature", False):
        present = [p for p in TEMPERATURE_PARAMS if p in hparams]
        if not present:
            raise ValueError(
                f"config.model.learnable_temperature=True, but objective {name!r} has no "
                f"temperature ({' or '.join(TEMPERATURE_PARAMS)}); set it to False."
            )
        temperature_param = present[0]
        value = float(hparams[temperature_param])
        init_temperature = value if temperature_param == "tau" else 1.0 / value
        lo, hi = float(mc.min_temperature), float(mc.max_temperature)
        if not 0 < lo <= init_temperature <= hi:
            raise ValueError(
                f"The initial temperature {init_temperature} is outside "
                f"[model.min_temperature, model.max_temperature] = [{lo}, {hi}]."
            )
    normalize = mc.get("normalize_embeddings")
    if normalize is None:
        # No objective needs the model to normalise: the cosine-, projection- and
        # volume-based ones normalise inside, and Symile's MIP is left unnormalised so
        # that the encoders learn its scale (with unit vectors and the default
        # logit_scale = 1 its logits stay near 0 and it barely learns; unnormalised, it
        # reaches the best achievable loss on XOR, docs/RESULTS.md).
        normalize = False

    # ---- optimizer -------------------------------------------------------------------
    opt = _required(config, "optimizer")
    if opt.name not in OPTIMIZERS:
        raise ValueError(f"config.optimizer.name={opt.name!r}; valid optimizers are {OPTIMIZERS}.")
    if opt.schedule not in SCHEDULES:
        raise ValueError(
            f"config.optimizer.schedule={opt.schedule!r}; valid schedules are {SCHEDULES}."
        )
    if not opt.learning_rate > 0:
        raise ValueError(f"config.optimizer.learning_rate must be > 0, got {opt.learning_rate}.")
    if opt.get("warmup_steps", 0) < 0 or opt.get("grad_clip_norm", 0) < 0:
        raise ValueError("config.optimizer.warmup_steps and grad_clip_norm must be >= 0.")
    if opt.name != "adamw" and opt.get("weight_decay", 0):
        raise ValueError(
            f"config.optimizer.weight_decay={opt.weight_decay} needs "
            "--config.optimizer.name=adamw (decoupled weight decay)."
        )

    # ---- evaluators ------------------------------------------------------------------
    from ovaib_jax import evaluate

    valid = evaluate.all_evaluator_names()
    for field in ("evaluators", "final_evaluators"):
        for ev in _evaluator_names(config, field):
            if ev not in valid:
                raise ValueError(
                    f"config.{field} names {ev!r}; valid evaluators are {valid} (comma-separated)."
                )
    kwargs_all = config.get("evaluator_kwargs") or {}
    for ev in kwargs_all:
        if ev not in valid:
            raise ValueError(
                f"config.evaluator_kwargs has {ev!r}, which is not an evaluator; valid "
                f"evaluators are {valid}."
            )
    from ovaib_jax import evaluators

    for ev in kwargs_all:
        if ev in evaluators.names():  # builds the config dataclass: unknown keys raise
            try:
                evaluators.create(ev, kwargs_all[ev])
            except (TypeError, ValueError) as e:
                raise ValueError(f"config.evaluator_kwargs.{ev}: {e}") from None

    return Resolved(
        spec=spec,
        modalities=modalities,
        objective=fn,
        hparams=hparams,
        temperature_param=temperature_param,
        init_temperature=init_temperature,
        projector=projector,
        normalize_embeddings=bool(normalize),
        encoders=tuple(encoders),
    )


def _evaluator_names(config: ml_collections.ConfigDict, field: str = "evaluators") -> Sequence[str]:
    value = config.get(field) or ""
    if isinstance(value, str):
        return [s.strip() for s in value.split(",") if s.strip()]
    return list(value)


def sibling_config(path: str, name: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """``get_config(arg)`` of the experiment file ``name``.py next to ``path``.

    Experiment files are loaded by path (``--config=experiments/x.py``), not imported as a
    package, so a variant reaches its base file this way::

        config = sibling_config(__file__, "default", "objective=symile")
        config = sibling_config(__file__, "../wesad")  # from experiments/paper/

    ``name`` is a path relative to the directory of ``path``, without ``.py``.
    """
    import importlib.util
    import os
    import re

    file = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), f"{name}.py"))
    module = re.sub(r"\W", "_", name)
    spec = importlib.util.spec_from_file_location(f"_ovaib_experiment_{module}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


# Probe settings of the offline benchmarks: the paper's 4-layer MLP probe, fewer epochs.
OFFLINE_PROBE = {"batch_size": 256, "max_epochs": 30, "patience": 5}
HEAVY_EVALUATORS = "downstream,modality_subsets,retrieval,mi_bounds"


def evaluation_setup(
    config: ml_collections.ConfigDict,
    *,
    probe: dict[str, Any] | None = None,
    targets: tuple[str, ...] | None = None,
    downstream: dict[str, Any] | None = None,
    retrieval: dict[str, Any] | None = None,
) -> ml_collections.ConfigDict:
    """The evaluation of SPEC section 5 on ``config``.

    The light evaluators (``heldout_loss``, ``inbatch_retrieval``) run every
    ``eval_every_steps``; the heavy ones (``downstream`` probes on all modalities,
    ``modality_subsets``, split-level ``retrieval``, ``mi_bounds``) once, after the last
    step (``final_evaluators``).

    Args:
      config: the experiment config (changed in place and returned).
      probe: probe keys shared by ``downstream`` and ``modality_subsets`` (default: the
        probe's own defaults, the paper's 4-layer MLP with 100 epochs, patience 10).
      targets: the targets probed by ``downstream`` and ``modality_subsets`` (None:
        every target of the dataset).
      downstream: extra ``downstream`` keys (e.g. ``per_modality_targets``).
      retrieval: ``retrieval`` keys (e.g. ``pairs``, ``relevance``).
    """
    from ovaib_jax import evaluators

    def keys(name: str, given: dict[str, Any]) -> dict[str, Any]:
        # Every key with a non-None default, so that any of them can be overridden on the
        # command line (--config.evaluator_kwargs.downstream.max_epochs=10).
        defaults = dataclasses.asdict(evaluators.get(name).Config())
        return {**{k: v for k, v in defaults.items() if v is not None}, **given}

    config.evaluators = "heldout_loss,inbatch_retrieval"
    config.final_evaluators = HEAVY_EVALUATORS
    probe = dict(probe or {})
    if targets is not None:
        probe["targets"] = tuple(targets)
    config.evaluator_kwargs = ml_collections.ConfigDict(
        {
            "downstream": keys("downstream", {**probe, **(downstream or {})}),
            "modality_subsets": keys("modality_subsets", probe),
            "retrieval": keys("retrieval", dict(retrieval or {})),
            "mi_bounds": keys("mi_bounds", {}),
        }
    )
    return config


def paper_setup(
    config: ml_collections.ConfigDict, *, learning_rate: float, beta: float = 1.0
) -> ml_collections.ConfigDict:
    """The paper's shared hyper-parameters (SPEC section 5) applied to ``config``.

    Adam, global batch 64, tau 0.01, representation and embedding dim 256, 3-layer
    heads, lam 1e-8, seed 42; ``beta`` of OVA-IB (1, or 0.5 on WESAD).
    """
    config.seed = 42
    config.batch_size = 64
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = learning_rate
    config.model.representation_dim = 256
    config.model.embedding_dim = 256
    config.model.head_layers = 3
    config.model.projector_hidden = (256,)
    config.model.mlp.hidden = (256, 256)
    config.model.lstm.hidden = 256
    if "tau" in config.objective:
        config.objective.tau = 0.01
    if "beta" in config.objective and config.objective.name != "pairwise_clip_ib":
        config.objective.beta = beta
    if "lam" in config.objective:
        config.objective.lam = 1e-8
    return config
