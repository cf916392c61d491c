"""Evaluation: evaluators by name, run on restored parameters (no optimizer state).

    python -m ovaib_jax.evaluate --workdir=DIR [--config=experiments/default.py] [--step=N] \
        [--set=final_evaluators=downstream --set=evaluator_kwargs.downstream.features=embedding]

restores the model variables of step N (default: the latest good checkpoint), runs every
evaluator named in ``config.evaluators`` and ``config.final_evaluators`` (comma-separated)
on ``config.dataset.eval_split`` and writes ``DIR/eval/results.json`` (``{"step": N,
"<evaluator>": {"<metric>": value}}``). Without ``--config`` the run's own
``DIR/config.json`` is used; ``--set=KEY=VALUE`` (repeatable) overrides one of its keys
(dotted, parsed as the type of the value it replaces; see :func:`apply_overrides`).

Evaluators plug in by name (big_vision style). Two kinds:

* :data:`EVALUATORS` here (on batches, with the model): ``heldout_loss`` (the training
  objective on the eval split) and ``inbatch_retrieval`` (retrieval inside each batch).
  Each is a class constructed as ``cls(ctx, **kwargs)`` (``ctx`` an
  :class:`EvalContext`) whose ``run(variables)`` yields ``(metric, value)`` pairs.
* every name of the ``ovaib_jax.evaluators`` package (``downstream``,
  ``modality_subsets``, ``retrieval``, ``mi_bounds``, ...), which work on whole embedded
  splits: :class:`EmbeddedSplitEvaluator` embeds the train and eval splits once with
  the frozen model and runs them.

kwargs come from ``config.evaluator_kwargs.<name>`` when present. The trainer runs
``config.evaluators`` every ``eval_every_steps`` and logs their numbers as
``eval/<evaluator>/<metric>``; it runs ``config.final_evaluators`` (the heavy ones:
probes, retrieval over the whole split) once, after the last step, and writes both to
``WORKDIR/results.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "EVALUATORS",
    "EvalContext",
    "HeldOutLoss",
    "InBatchRetrieval",
    "apply_overrides",
    "create_evaluators",
    "evaluate_checkpoint",
    "run_evaluators",
    "run_loss_kwargs",
    "run_projector",
    "run_scorer_kwargs",
]


@dataclasses.dataclass
class EvalContext:
    """What an evaluator may use: the config, the resolved pieces, mesh, model, objective."""

    config: ml_collections.ConfigDict
    resolved: Any
    mesh: jax.sharding.Mesh
    model: Any
    objective: Callable[..., Any]
    # Embedded splits of the variables last evaluated: {split: (extra keys, Embedded)}.
    _cache: dict[str, Any] = dataclasses.field(default_factory=dict, init=False, repr=False)
    _cache_variables: Any = dataclasses.field(default=None, init=False, repr=False)

    @property
    def modality_names(self) -> tuple[str, ...]:
        return self.resolved.modality_names

    @property
    def eval_batch_size(self) -> int:
        return int(self.config.get("eval_batch_size") or self.config.batch_size)

    def batches(self) -> Iterator[dict[str, jax.Array]]:
        """Global batches of the eval split, in order, at most ``config.eval_num_batches``."""
        from ovaib_jax import train

        it = train.create_data_iterator(
            self.config,
            self.config.dataset.eval_split,
            batch_size=self.eval_batch_size,
            train=False,
        )
        limit = int(self.config.get("eval_num_batches", 0) or 0)
        count = 0
        for local in it:
            if limit and count >= limit:
                break
            count += 1
            yield train.global_batch(local, self.mesh, list(self.modality_names))
        if count == 0:
            raise ValueError(
                f"The eval split {self.config.dataset.eval_split!r} has fewer examples than "
                f"eval_batch_size={self.eval_batch_size}; lower --config.eval_batch_size."
            )

    @functools.cached_property
    def embed(self) -> Callable[[Any, Mapping[str, jax.Array]], jax.Array]:
        """Jitted ``(variables, batch) -> z`` (M, B, d), replicated on every device."""
        model = self.model

        def embed(variables, batch):
            z, _ = model.apply(variables, batch, train=False)
            return z

        return jax.jit(embed, out_shardings=NamedSharding(self.mesh, P()))

    @functools.cached_property
    def loss(self) -> Callable[[Any, Mapping[str, jax.Array]], tuple[jax.Array, dict]]:
        """Jitted ``(variables, batch) -> (loss, aux)`` with the training objective."""
        model, objective = self.model, self.objective
        key = jax.random.key(int(self.config.seed) + 1)

        def loss(variables, batch):
            z, _ = model.apply(variables, batch, train=False)
            return objective(z, variables["params"], key)

        return jax.jit(loss, out_shardings=NamedSharding(self.mesh, P()))

    @functools.cached_property
    def _embed_both(self) -> Callable[[Any, Mapping[str, jax.Array]], Any]:
        model = self.model
        return jax.jit(
            lambda v, b: model.apply(v, b, train=False),
            out_shardings=NamedSharding(self.mesh, P()),
        )

    def embedded(self, variables: Any, split: str, extra_keys: Sequence[str] = ()) -> Any:
        """``split`` embedded with ``variables``: an ``ovaib_jax.evaluators.Embedded`` with
        z, the representations, the dataset's targets and ``extra_keys`` (stored example
        keys read as targets). Whole batches only (the last partial batch is dropped).

        Cached while ``variables`` is the same object (the evaluators of one evaluation
        share one pass over each split); :meth:`clear_cache` frees it.
        """
        from ovaib_jax import evaluators, train

        if self._cache_variables is not variables:
            self.clear_cache()
            self._cache_variables = variables
        spec = self.resolved.spec
        names = list(self.modality_names)
        declared = {t.name for t in spec.targets} | set(names)
        extra = tuple(dict.fromkeys(k for k in extra_keys if k not in declared))
        cached = self._cache.get(split)
        if cached is not None and set(extra) <= set(cached[0]):
            return cached[1]
        if cached is not None:  # embed once more, keeping every key asked for so far
            extra = tuple(dict.fromkeys((*cached[0], *extra)))

        def embed(local):
            z, reps = self._embed_both(variables, train.global_batch(local, self.mesh, names))
            return jax.tree.map(_host, (z, reps))

        def batches():
            it = train.create_data_iterator(
                self.config,
                split,
                batch_size=self.eval_batch_size,
                train=False,
                spec=spec,
                extra_keys=extra,
            )
            for local in it:
                if jax.process_count() > 1:  # targets of every process's rows
                    from jax.experimental import multihost_utils

                    local = {
                        k: v
                        if k in names
                        else np.asarray(multihost_utils.process_allgather(v, tiled=True))
                        for k, v in local.items()
                    }
                yield local

        out = evaluators.embed_split(
            embed,
            batches(),
            spec=spec,
            modality_names=names,
            target_names=[t.name for t in spec.targets] + list(extra),
        )
        self._cache[split] = (extra, out)
        return out

    def clear_cache(self) -> None:
        """Drops the embedded splits (and the reference to their variables)."""
        self._cache = {}
        self._cache_variables = None


def _host(x: jax.Array) -> np.ndarray:
    return np.asarray(x.addressable_data(0))


class HeldOutLoss:
    """The training objective on the eval split: ``loss`` and every aux entry, averaged
    over batches (each batch its own set of in-batch negatives)."""

    def __init__(self, ctx: EvalContext):
        self.ctx = ctx

    def run(self, variables: Any) -> Iterator[tuple[str, float]]:
        sums: dict[str, float] = {}
        n = 0
        for batch in self.ctx.batches():
            loss, aux = self.ctx.loss(variables, batch)
            for k, v in {"loss": loss, **aux}.items():
                sums[k] = sums.get(k, 0.0) + float(_host(v))
            n += 1
        for k, v in sums.items():
            yield k, v / n


def run_projector(ctx: EvalContext, variables: Any) -> Callable | None:
    """The OVA projector the run trains with, as ``projector(rest, m) -> (N, d)``: the
    parameter-free one from the objective's hyper-parameters (``projector="product"``),
    the model's MLP projector with ``variables`` (``"mlp"``), else None."""
    from ovaib_jax import models

    fixed = ctx.resolved.hparams.get("projector")
    if fixed is not None:
        return fixed
    if ctx.resolved.projector:
        params = {"params": variables["params"]}
        return lambda rest, m: ctx.model.apply(
            params, rest, m, method=models.MultiModalModel.project
        )
    return None


def run_scorer_kwargs(ctx: EvalContext) -> dict[str, Any]:
    """The run's objective hyper-parameters that its retrieval scorer takes too (OVA's
    ``lam`` and ``product_weight``), so that retrieval scores as training did."""
    from ovaib_jax import losses

    takes = inspect.signature(losses.get_scorer(ctx.config.objective.name)).parameters
    return {k: v for k, v in ctx.resolved.hparams.items() if k in takes and k != "projector"}


def run_loss_kwargs(ctx: EvalContext, variables: Any) -> dict[str, Any]:
    """The keyword arguments the run's objective trains with, as ``variables`` give
    them: the objective's hyper-parameters, the learned temperature (``tau`` or
    ``logit_scale``) when the model learns one, and the run's OVA projector."""
    from ovaib_jax import models

    kwargs = dict(ctx.resolved.hparams)
    name = ctx.resolved.temperature_param
    if name is not None:
        params = {"params": variables["params"]}
        tau = ctx.model.apply(params, method=models.MultiModalModel.temperature)
        kwargs[name] = float(tau if name == "tau" else 1.0 / tau)
    projector = run_projector(ctx, variables)
    if projector is not None:
        kwargs["projector"] = projector
    return kwargs


class InBatchRetrieval:
    """Retrieve modality c of each sample from its other modalities, inside each batch.

    For every target modality c the queries are the remaining modalities of sample i,
    the candidates modality c of every sample of the batch, scored with the objective's
    own similarity (``ovaib_jax.losses.get_scorer``; a run trained with an OVA
    projector: :func:`ovaib_jax.losses.projector_score`). Reports top-1 and top-5 accuracy
    per target (``<c>/top1``) and their means over targets (``top1``, ``top5``). The
    rank of the true candidate is the number of candidates scoring strictly higher.

    Args:
      ctx: the evaluation context.
      ks: the k of the top-k accuracies.
    """

    def __init__(self, ctx: EvalContext, ks: tuple[int, ...] = (1, 5)):
        from ovaib_jax import losses

        self.ctx = ctx
        self.ks = tuple(ks)
        scorer = functools.partial(
            losses.get_scorer(ctx.config.objective.name), **run_scorer_kwargs(ctx)
        )
        m = len(ctx.modality_names)
        ks_ = self.ks

        def accuracies(z, variables):
            projector = run_projector(ctx, variables)
            out = []
            n = z.shape[1]
            for c in range(m):
                rest = jnp.delete(z, c, axis=0)
                if projector is None:
                    scores = scorer(rest, z[c])  # (N, N)
                else:  # the projector's score, as in training
                    scores = losses.projector_score(rest, z[c], projector=projector, m=c)
                true = jnp.diagonal(scores)
                # rank of the true candidate: how many score strictly higher
                rank = jnp.sum(scores > true[:, None], axis=1)
                out.append(jnp.stack([jnp.mean(rank < min(k, n)) for k in ks_]))
            return jnp.stack(out)  # (M, len(ks))

        self._accuracies = jax.jit(accuracies)

    def run(self, variables: Any) -> Iterator[tuple[str, float]]:
        total = None
        n = 0
        for batch in self.ctx.batches():
            z = self.ctx.embed(variables, batch)
            acc = _host(self._accuracies(z, variables))
            total = acc if total is None else total + acc
            n += 1
        acc = total / n
        for c, name in enumerate(self.ctx.modality_names):
            for j, k in enumerate(self.ks):
                yield f"{name}/top{k}", float(acc[c, j])
        for j, k in enumerate(self.ks):
            yield f"top{k}", float(acc[:, j].mean())


class EmbeddedSplitEvaluator:
    """Runs an evaluator of the ``ovaib_jax.evaluators`` package on whole embedded splits.

    The train split (``config.dataset.train_split``, read once in order) and the eval
    split are embedded with the frozen model (``(z, reps)`` and targets, on the host;
    :meth:`EvalContext.embedded`, shared by the evaluators of one evaluation), then
    ``ovaib_jax.evaluators.get(name)(**kwargs).run(train, test, objective=, seed=)``.
    Whole batches only: the last partial batch of each split is not embedded. Numbers
    are yielded; strings (markdown tables) too, and the trainer logs numbers only.

    Args:
      ctx: the evaluation context.
      name: the package evaluator's name.
      needs_train: embed the train split too (probes); False passes ``train=None``.
      **kwargs: the evaluator's config keys.
    """

    def __init__(self, ctx: EvalContext, name: str, needs_train: bool = True, **kwargs: Any):
        from ovaib_jax import evaluators

        self.ctx = ctx
        self.name = name
        self.needs_train = needs_train
        self.evaluator = evaluators.get(name)(**kwargs)

    def run(self, variables: Any) -> Iterator[tuple[str, Any]]:
        cfg = self.ctx.config
        extra = self.evaluator.extra_keys()
        train_split = (
            self.ctx.embedded(variables, cfg.dataset.train_split, extra)
            if self.needs_train
            else None
        )
        test_split = self.ctx.embedded(variables, cfg.dataset.eval_split, extra)
        kwargs = {}
        takes = inspect.signature(self.evaluator.run).parameters
        if "projector" in takes:
            kwargs["projector"] = run_projector(self.ctx, variables)
        if "scorer_kwargs" in takes:
            kwargs["scorer_kwargs"] = run_scorer_kwargs(self.ctx)
        if "loss_kwargs" in takes:
            kwargs["loss_kwargs"] = run_loss_kwargs(self.ctx, variables)
        out = self.evaluator.run(
            train_split, test_split, objective=cfg.objective.name, seed=int(cfg.seed), **kwargs
        )
        yield from out.items()


EVALUATORS: dict[str, Callable[..., Any]] = {
    "heldout_loss": HeldOutLoss,
    "inbatch_retrieval": InBatchRetrieval,
}


# Package evaluators that read the eval split only (no probe to fit on the train split).
_EVAL_SPLIT_ONLY = ("retrieval", "mi_bounds")


def all_evaluator_names() -> list[str]:
    """Every name ``config.evaluators`` may hold: :data:`EVALUATORS` and the package's."""
    from ovaib_jax import evaluators

    return sorted(set(EVALUATORS) | set(evaluators.names()))


def evaluator_names(config: ml_collections.ConfigDict, field: str = "evaluators") -> list[str]:
    """The comma-separated names of ``config.<field>`` (``evaluators`` or
    ``final_evaluators``) as a list."""
    value = config.get(field) or ""
    if isinstance(value, str):
        return [s.strip() for s in value.split(",") if s.strip()]
    return list(value)


def create_evaluators(
    config: ml_collections.ConfigDict, ctx: Any, names: Sequence[str] | None = None
) -> dict[str, Any]:
    """``{name: evaluator}`` for ``names`` (default: ``config.evaluators``); ``ctx`` an
    EvalContext or a train Run (evaluators created in one call share one context, so
    they embed each split once per evaluation)."""
    if not isinstance(ctx, EvalContext):
        ctx = EvalContext(config, ctx.resolved, ctx.mesh, ctx.model, ctx.objective)
    kwargs_all = config.get("evaluator_kwargs") or {}
    out = {}
    for name in evaluator_names(config) if names is None else names:
        kwargs = kwargs_all.get(name) if hasattr(kwargs_all, "get") else None
        kwargs = kwargs.to_dict() if hasattr(kwargs, "to_dict") else dict(kwargs or {})
        if name in EVALUATORS:
            out[name] = EVALUATORS[name](ctx, **kwargs)
        elif name in all_evaluator_names():
            needs_train = name not in _EVAL_SPLIT_ONLY
            out[name] = EmbeddedSplitEvaluator(ctx, name, needs_train=needs_train, **kwargs)
        else:
            raise ValueError(
                f"Unknown evaluator {name!r}; valid evaluators are {all_evaluator_names()}."
            )
    return out


def run_evaluators(evaluators: Mapping[str, Any], variables: Any) -> dict[str, dict[str, float]]:
    """Runs every evaluator on ``variables``: ``{evaluator: {metric: value}}``."""
    try:
        return {name: dict(ev.run(variables)) for name, ev in evaluators.items()}
    finally:
        for ev in evaluators.values():
            ctx = getattr(ev, "ctx", None)
            if isinstance(ctx, EvalContext):
                ctx.clear_cache()


def restore_for_eval(
    config: ml_collections.ConfigDict, workdir: str, step: int | None = None
) -> tuple[EvalContext, Any, int]:
    """The model variables of ``step`` (latest good if None) of the run in ``workdir``,
    restored without the optimizer state, with an :class:`EvalContext` to evaluate or
    embed with them: ``(ctx, variables, step)``.

    Raises:
      FileNotFoundError: no checkpoint in ``workdir``.
    """
    from ovaib_jax import checkpointing, configs, train

    train.initialize_distributed(config)
    resolved = configs.validate_config(config)
    mesh = train.create_mesh()
    model = train.create_model(config, resolved)
    replicated = NamedSharding(mesh, P())
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), train.example_inputs(resolved.modalities))
    )
    abstract = {
        "params": shapes["params"],
        "batch_stats": shapes.get("batch_stats", {}),
    }
    abstract = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), abstract
    )
    ckpt = checkpointing.Checkpointer(
        os.path.join(workdir, "checkpoints"), read_only=True, async_save=False
    )
    try:
        restored = ckpt.restore({"model": abstract}, step=step, with_data=False)
    finally:
        ckpt.close()
    if restored is None:
        raise FileNotFoundError(f"No checkpoint in {os.path.join(workdir, 'checkpoints')}.")
    tree = restored.trees["model"]
    variables = train._variables(tree["params"], tree["batch_stats"])
    objective = train.make_objective(resolved, model, mesh, config.objective.get("chunk_size", 0))
    return EvalContext(config, resolved, mesh, model, objective), variables, restored.step


def evaluate_checkpoint(
    config: ml_collections.ConfigDict, workdir: str, step: int | None = None
) -> dict[str, Any]:
    """Restores the model variables of ``step`` (latest good if None) and evaluates them
    with ``config.evaluators`` and ``config.final_evaluators``.

    Writes ``WORKDIR/eval/results.json`` (process 0) and returns its content.
    """
    ctx, variables, step = restore_for_eval(config, workdir, step)
    names = list(
        dict.fromkeys(evaluator_names(config) + evaluator_names(config, "final_evaluators"))
    )
    if names:
        evaluators = create_evaluators(config, ctx, names)
    else:  # the minimum an evaluation reports
        evaluators = {"heldout_loss": HeldOutLoss(ctx), "inbatch_retrieval": InBatchRetrieval(ctx)}
    results: dict[str, Any] = {"step": step, **run_evaluators(evaluators, variables)}
    if jax.process_index() == 0:
        out_dir = os.path.join(workdir, "eval")
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=2, sort_keys=True)
    return results


def load_config(path_or_none: Any, workdir: str) -> ml_collections.ConfigDict:
    """The ``--config`` given, else the run's ``WORKDIR/config.json``."""
    if path_or_none is not None:
        return path_or_none
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No --config given and no {path}.")
    with open(path) as f:
        raw = json.load(f)
    return _to_config(raw)


def apply_overrides(config: ml_collections.ConfigDict, items: Sequence[str]) -> None:
    """Applies ``KEY=VALUE`` overrides in place (``--set`` of the command line).

    ``KEY`` is a dotted path of an existing key; ``VALUE`` is parsed as the type of the
    value it replaces (bool: true/false/1/0; int; float; tuple: comma-separated items of
    the first item's type, or a Python literal; str: as given; None: a Python literal,
    else the string). Under ``evaluator_kwargs.<evaluator>`` a new key may be set (a
    config written before the evaluator gained that key); the evaluator checks it.
    """
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}.")
        parts = key.split(".")
        parent = config
        for i, part in enumerate(parts[:-1]):
            if part not in parent or not isinstance(parent[part], ml_collections.ConfigDict):
                have = sorted(parent.keys())
                raise ValueError(
                    f"--set {key}: no section {'.'.join(parts[: i + 1])!r}; keys there: {have}."
                )
            parent = parent[part]
        leaf = parts[-1]
        new_evaluator_key = len(parts) == 3 and parts[0] == "evaluator_kwargs"
        if leaf not in parent and not new_evaluator_key:
            raise ValueError(f"--set {key}: unknown key {leaf!r}; keys there: {sorted(parent)}.")
        with config.unlocked():
            parent[leaf] = _parse_like(raw, parent.get(leaf), key)


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
                return tuple(ast.literal_eval(raw))
            kind = type(old[0]) if old else str
            return tuple(kind(v.strip()) for v in raw.split(",") if v.strip())
        if isinstance(old, str):
            return raw
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return raw
    except (ValueError, SyntaxError) as e:
        kind = type(old).__name__
        raise ValueError(f"--set {key}={raw}: cannot parse as {kind} ({e}).") from None


def _to_config(raw: Any) -> ml_collections.ConfigDict:
    """JSON (lists for tuples) -> a ConfigDict with tuples restored."""

    def fix(x):
        if isinstance(x, dict):
            return {k: fix(v) for k, v in x.items()}
        if isinstance(x, list):
            return tuple(fix(v) for v in x)
        return x

    return ml_collections.ConfigDict(fix(raw))


def main(argv: list[str]) -> None:
    from absl import flags

    del argv
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax/TFDS file-level chatter
    cfg = load_config(flags.FLAGS.config, flags.FLAGS.workdir)
    apply_overrides(cfg, flags.FLAGS.set)
    results = evaluate_checkpoint(cfg, flags.FLAGS.workdir, flags.FLAGS.step)
    if jax.process_index() == 0:
        json.dump(results, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")


def _define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file(
        "config",
        None,
        "Experiment config file (default: WORKDIR/config.json).",
        lock_config=True,
    )
    flags.DEFINE_string("workdir", None, "The run's directory (holds checkpoints/).")
    flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: latest good).")
    flags.DEFINE_multi_string("set", [], "KEY=VALUE: override a key of the config (repeatable).")
    flags.mark_flags_as_required(["workdir"])


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
