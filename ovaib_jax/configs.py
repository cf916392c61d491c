"""Config authoring, loading and recording: what ``experiments/*.py`` build configs with.

* Authoring: :func:`parse_arg` (big_vision-style ``"objective=symile,runlocal"``),
  :func:`objective_config` (the ``config.objective`` section of any objective, from its
  signature: every hyper-parameter it takes is a key, nothing else is),
  :func:`evaluation_setup` and :func:`paper_setup` (shared sections).
* Loading: :func:`load_experiment` (the one experiment-file loader; :func:`sibling_config`
  for variants), :func:`apply_overrides` (the one override applier).
* Recording: :func:`to_json` / :func:`from_json` (``WORKDIR/config.json``).

Checking a config before a run is built is ``ovaib_jax.validation``'s job.
"""

from __future__ import annotations

import dataclasses
import inspect
import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections

__all__ = [
    "ADDED_FIELDS",
    "EVALUATION_FIELDS",
    "HEAVY_EVALUATORS",
    "OBJECTIVE_OVERRIDES",
    "OFFLINE_PROBE",
    "OPTIMIZERS",
    "PROJECTOR_CHOICES",
    "RESUMABLE_FIELDS",
    "SCHEDULES",
    "WEIGHT_DECAY_MASKS",
    "added_fields",
    "all_evaluator_names",
    "apply_overrides",
    "changed_keys",
    "dataset_kwargs",
    "evaluation_setup",
    "evaluator_names",
    "flatten",
    "from_json",
    "is_under",
    "load_experiment",
    "objective_config",
    "objective_hparam_names",
    "paper_setup",
    "parse_arg",
    "run_changes",
    "sibling_config",
    "to_json",
]

# Arguments of every objective that are not hyper-parameters: the trainer passes them.
_NOT_HPARAMS = ("z", "axis_name", "chunk_size", "key")
# Paper defaults that differ from (or are absent in) the objectives' signatures.
OBJECTIVE_OVERRIDES: dict[str, dict[str, Any]] = {
    # "none": the projection of SPEC section 1; "mlp": the learnable MLP projector ablation;
    # "product": the parameter-free sign-aware losses.product_projector (an extension).
    "ova_ib": {"projector": "none"},
    "ova_sufficiency": {"projector": "none"},
}
PROJECTOR_CHOICES = ("none", "mlp", "product")
OPTIMIZERS = ("adam", "adamw", "sgd")
# What adamw's decoupled weight decay applies to: every parameter, or only those of two or
# more dimensions (dense and convolution kernels, embedding tables), leaving biases, norm
# scales and the learnable temperature and product weight undecayed (CLIP, big_vision).
WEIGHT_DECAY_MASKS = ("all", "matrices")
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
            if value.lower() not in ("", "1", "true", "yes", "0", "false", "no"):
                raise ValueError(
                    f"Config argument {key}={value}: expected {key} alone or {key}=true / false."
                )
            out[key] = value.lower() in ("", "1", "true", "yes")
        else:
            try:
                out[key] = kind(value)
            except ValueError:
                what = {int: "an integer", float: "a number"}.get(kind, kind.__name__)
                raise ValueError(f"Config argument {key}={value}: expected {what}.") from None
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


def dataset_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """``config.dataset.config`` (and ``builder_config``) as keyword arguments of
    ``ovaib_jax.data.get_spec`` / ``make_source``."""
    section = config.dataset.config
    kwargs = section.to_dict() if hasattr(section, "to_dict") else dict(section or {})
    return {"config": config.dataset.builder_config or None, **kwargs}


def evaluator_names(config: ml_collections.ConfigDict, field: str = "evaluators") -> list[str]:
    """The comma-separated evaluator names of ``config.<field>`` (``evaluators`` or
    ``final_evaluators``) as a list."""
    value = config[field] or ""
    if isinstance(value, str):
        return [s.strip() for s in value.split(",") if s.strip()]
    return list(value)


def all_evaluator_names(config: ml_collections.ConfigDict) -> list[str]:
    """The evaluators of ``evaluators`` then ``final_evaluators``, each once, in order."""
    return list(
        dict.fromkeys(evaluator_names(config) + evaluator_names(config, "final_evaluators"))
    )


# --------------------------------------------------------------------------- loading


def load_experiment(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """``get_config(arg)`` of the experiment file ``path`` (``experiments/x.py``).

    ``path`` may carry the argument itself, ``"experiments/x.py:objective=symile"``
    (then ``arg`` must be None).

    Raises:
      FileNotFoundError: no such file.
    """
    import importlib.util
    import os
    import re

    if arg is None and ".py:" in path:
        path, _, arg = path.partition(".py:")
        path += ".py"
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No experiment file {path!r}.")
    module_name = "_ovaib_experiment_" + re.sub(r"\W", "_", os.path.relpath(path)[:-3])
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg or None)


def sibling_config(path: str, name: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """``get_config(arg)`` of the experiment file ``name``.py next to ``path``.

    Experiment files are loaded by path (``--config=experiments/x.py``), not imported as a
    package, so a variant reaches its base file this way::

        config = sibling_config(__file__, "default", "objective=symile")
        config = sibling_config(__file__, "../wesad")  # from experiments/paper/

    ``name`` is a path relative to the directory of ``path``, without ``.py``.
    """
    import os

    here = os.path.dirname(os.path.abspath(path))
    return load_experiment(os.path.normpath(os.path.join(here, f"{name}.py")), arg)


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Mapping[str, Any] | Sequence[str]
) -> None:
    """Sets dotted keys of ``config`` in place: the one override applier.

    ``overrides`` is a mapping ``{"optimizer.learning_rate": 0.5}`` (values set as
    given: the sweep's ``--config.*`` flags, already typed) or a sequence of
    ``"KEY=VALUE"`` strings (``evaluate --set``), each VALUE parsed as the type of the
    value it replaces (bool: true/false/1/0; int; float; tuple: comma-separated items of
    the first item's type, or a Python literal; str: as given; None: true/false as
    bools, else a Python literal, else the string). Every key must exist, except a new
    key under ``evaluator_kwargs.<evaluator>`` (a config written before the evaluator
    gained that key, or without that evaluator's section: the section is added;
    validation checks both).

    Raises:
      ValueError: an unknown key (listing the keys there) or a value that does not parse.
    """
    if isinstance(overrides, Mapping):
        items = [(k, v, False) for k, v in overrides.items()]
    else:
        items = []
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise ValueError(f"--set expects KEY=VALUE, got {item!r}.")
            items.append((key, raw, True))
    for key, value, parse in items:
        parts = key.split(".")
        parent = config
        kwargs = config.get("evaluator_kwargs")
        if len(parts) == 3 and parts[0] == "evaluator_kwargs" and parts[1] not in (kwargs or {}):
            if isinstance(kwargs, ml_collections.ConfigDict):  # this evaluator's first key
                with config.unlocked():
                    kwargs[parts[1]] = ml_collections.ConfigDict()
        for i, part in enumerate(parts[:-1]):
            if part not in parent or not isinstance(parent[part], ml_collections.ConfigDict):
                have = sorted(parent.keys())
                raise ValueError(
                    f"{key}: no section {'.'.join(parts[: i + 1])!r}; keys there: {have}."
                )
            parent = parent[part]
        leaf = parts[-1]
        new_evaluator_key = len(parts) == 3 and parts[0] == "evaluator_kwargs"
        if leaf not in parent and not new_evaluator_key:
            raise ValueError(f"{key}: unknown key {leaf!r}; keys there: {sorted(parent)}.")
        if isinstance(parent.get(leaf), ml_collections.ConfigDict):
            raise ValueError(f"{key} is a section; set its keys ({key}.KEY=VALUE).")
        new = _parse_like(value, parent.get(leaf), key) if parse else value
        with config.unlocked():
            try:
                parent[leaf] = new
            except TypeError as e:  # a typed field (a placeholder) given another type
                raise ValueError(f"{key}={value}: {e}") from None


def _parse_like(raw: str, old: Any, key: str) -> Any:
    import ast

    try:
        if isinstance(old, bool):
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError("expected true or false")
            return raw.lower() in ("true", "1")
        if isinstance(old, int):
            return int(raw)
        if isinstance(old, float):
            return float(raw)
        if isinstance(old, (tuple, list)):
            if raw.strip().startswith(("(", "[")):
                value = ast.literal_eval(raw)  # "(64)" is the int 64
                return tuple(value) if isinstance(value, (tuple, list)) else (value,)
            kind = type(old[0]) if old else str
            return tuple(kind(v.strip()) for v in raw.split(",") if v.strip())
        if isinstance(old, str):
            return raw
        if raw.strip().lower() in ("true", "false"):  # as a bool field takes them
            return raw.strip().lower() == "true"
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return raw
    except (ValueError, SyntaxError) as e:
        kind = type(old).__name__
        raise ValueError(f"{key}={raw}: cannot parse as {kind} ({e}).") from None


# --------------------------------------------------------------------------- run config

# Fields a rerun on an existing workdir may change: what is logged, evaluated and kept,
# and where and how fast data and checkpoints are read and written. Anything else would
# make the checkpoints and records another run's (``num_train_steps`` has its own rule:
# ovaib_jax.workdir).
RESUMABLE_FIELDS = (
    "num_train_steps", "log_every_steps", "eval_every_steps", "eval_num_batches",
    "eval_batch_size", "checkpoint_every_steps", "keep_checkpoints", "async_checkpointing",
    "evaluators", "final_evaluators", "evaluator_kwargs",
    "dataset.data_dir", "dataset.manual_dir", "dataset.prefetch", "dataset.device_prefetch",
    "dataset.cache_max_mb", "distributed",
)  # fmt: skip
# Fields added to the config after runs were recorded without them, with the value that
# reproduces how those runs behaved (not defaults: experiments/default.py holds those), or
# a function of the recorded config (flat, dotted keys) giving it. A recorded config.json
# lacking one reads as having that value: it can be evaluated, and a rerun holding that
# value continues it.
ADDED_FIELDS: dict[str, Any] = {
    "dataset.epoch_aligned": False,
    "dataset.shuffle_block": 1,
    "model.branches": "",
    "model.dtype": "float32",
    "model.learnable_product_weight": False,
    "model.objective_dtype": "float32",
    "optimizer.weight_decay_mask": lambda recorded: (
        # every parameter was decayed: that matters only where adamw decayed
        "all"
        if recorded.get("optimizer.name") == "adamw" and recorded.get("optimizer.weight_decay")
        else "matrices"
    ),
}
# The fields of the evaluation only (a sweep keeps a finished run's results when only
# these differ).
EVALUATION_FIELDS = ("evaluators", "final_evaluators", "evaluator_kwargs")


def added_fields(recorded: Mapping[str, Any]) -> dict[str, Any]:
    """:data:`ADDED_FIELDS` with the value each has for a run recorded as ``recorded``
    (its config.json, flat: dotted keys) before the field existed."""
    return {k: v(recorded) if callable(v) else v for k, v in ADDED_FIELDS.items()}


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a.b.c": leaf}`` of a nested mapping (a ConfigDict as JSON, or a dict)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else k
        out.update(flatten(v, key) if isinstance(v, Mapping) else {key: v})
    return out


def is_under(key: str, fields: Sequence[str]) -> bool:
    """Whether dotted ``key`` is one of ``fields`` or inside one of them."""
    return any(key == f or key.startswith(f + ".") for f in fields)


def changed_keys(recorded: Mapping[str, Any], config: ml_collections.ConfigDict) -> list[str]:
    """The dotted keys in which ``config`` differs from a recorded run config (its
    ``config.json``), sorted.

    An objective hyper-parameter added to the library after the run was recorded does
    not count when ``config`` holds it at its default: the run behaved that way.
    """
    import json

    new, was = flatten(json.loads(to_json(config))), flatten(recorded)
    diff = sorted(k for k in set(new) | set(was) if new.get(k) != was.get(k))
    try:
        defaults = flatten({"objective": objective_config(config.objective.name).to_dict()})
    except ValueError:
        defaults = {}
    defaults.update(added_fields(was))
    return [k for k in diff if not (k not in was and k in defaults and new[k] == defaults[k])]


def run_changes(
    recorded: Mapping[str, Any], config: ml_collections.ConfigDict
) -> dict[str, tuple[Any, Any]]:
    """``{key: (recorded value, value in config)}`` for the keys of :func:`changed_keys`
    that make ``config`` another run than the recorded one (outside
    :data:`RESUMABLE_FIELDS`), values as JSON holds them ("(absent)" for none; a field
    added since the record reads as :func:`added_fields` gives it)."""
    import json

    keys = [k for k in changed_keys(recorded, config) if not is_under(k, RESUMABLE_FIELDS)]
    was = flatten(recorded)
    was = {**added_fields(was), **was}
    now = flatten(json.loads(to_json(config)))
    return {k: (was.get(k, "(absent)"), now.get(k, "(absent)")) for k in keys}


def continue_flags(changes: Mapping[str, tuple[Any, Any]]) -> str:
    """The ``--config.KEY=VALUE`` flags that give back the recorded values of
    :func:`run_changes` (numbers, strings, booleans; "" when none can be written so)."""
    flags = [
        shlex.quote(f"--config.{k}={was}")
        for k, (was, _) in changes.items()
        if isinstance(was, (bool, int, float, str)) and was != "(absent)"
    ]
    return " ".join(flags) if len(flags) == len(changes) else ""


def to_json(config: ml_collections.ConfigDict) -> str:
    """The run config as recorded in ``WORKDIR/config.json``."""
    return config.to_json_best_effort(indent=2)


def from_json(raw: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A recorded run config (JSON: lists for tuples) as a ConfigDict, tuples restored,
    :data:`ADDED_FIELDS` filled in where the record predates them."""

    def fix(x):
        if isinstance(x, dict):
            return {k: fix(v) for k, v in x.items()}
        if isinstance(x, list):
            return tuple(fix(v) for v in x)
        return x

    config = ml_collections.ConfigDict(fix(dict(raw)))
    for key, value in added_fields(flatten(raw)).items():  # recorded before the field existed
        *parents, leaf = key.split(".")
        node = config
        if all(p in node and isinstance(node := node[p], ml_collections.ConfigDict)
               for p in parents) and leaf not in node:  # fmt: skip
            node[leaf] = value
    return config


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
    step (``final_evaluators``). ``downstream`` also fits a linear probe beside the main
    one, on all train labels and on 10 per class (issue 13: a saturated MLP probe hides
    differences): results ``linear/{target}/...`` and ``linear_few10/{target}/...``.

    Args:
      config: the experiment config (changed in place and returned).
      probe: probe keys shared by ``downstream`` and ``modality_subsets`` (default: the
        probe's own defaults, the paper's 4-layer MLP with 100 epochs, patience 10).
      targets: the targets probed by ``downstream`` and ``modality_subsets`` (None:
        every target of the dataset).
      downstream: extra ``downstream`` keys (e.g. ``per_modality_targets``; or
        ``extra_probes=()``, ``few_label_per_class=0`` to turn the linear probes off).
      retrieval: ``retrieval`` keys (e.g. ``pairs``, ``relevance``).
    """
    from ovaib_jax import evaluators

    def keys(name: str, given: dict[str, Any]) -> dict[str, Any]:
        # Every key with a non-None default, so that any of them can be overridden on the
        # command line (--config.evaluator_kwargs.downstream.max_epochs=10).
        defaults = dataclasses.asdict(evaluators.get(name).Config())
        return {**{k: v for k, v in defaults.items() if v is not None}, **given}

    extra_probes = {"extra_probes": ("linear",), "few_label_per_class": 10}
    config.evaluators = "heldout_loss,inbatch_retrieval"
    config.final_evaluators = HEAVY_EVALUATORS
    probe = dict(probe or {})
    if targets is not None:
        probe["targets"] = tuple(targets)
    config.evaluator_kwargs = ml_collections.ConfigDict(
        {
            "downstream": keys("downstream", {**extra_probes, **probe, **(downstream or {})}),
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
