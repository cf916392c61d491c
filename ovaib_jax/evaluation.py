"""Evaluation assembly: embed the splits with a model, then run evaluators on them.

:class:`Evaluation` embeds the eval split (and the train split when an evaluator needs
it) once with the given variables, on the run's mesh, and runs each evaluator of
``ovaib_jax.evaluators`` with the run's :class:`~ovaib_jax.evaluators.RunInfo`.
:func:`restore` gives the model variables of a checkpoint with what is needed to
evaluate them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ovaib_jax import configs, evaluators, host, inputs, models, objective, runtime, state
from ovaib_jax.validation import Resolved, validate_config

__all__ = ["Evaluation", "Restored", "restore"]


@dataclasses.dataclass
class Evaluation:
    """The evaluators ``names`` of a run, ready to run on any variables of its model.

    Args:
      config: the run's config (evaluator keys from ``config.evaluator_kwargs.<name>``).
      resolved: the config's resolved pieces.
      mesh: the run's mesh.
      model: the run's model.
      names: evaluator names (default: ``config.evaluators``).
      prepared: the dataset is built already (``train.build`` with data and
        ``evaluate.evaluate_checkpoint`` build it once); otherwise the first
        :meth:`embed` builds it where it is not built yet (:func:`inputs.prepare_dataset`,
        one barrier across processes), and no later one checks again.
    """

    config: ml_collections.ConfigDict
    resolved: Resolved
    mesh: jax.sharding.Mesh
    model: models.MultiModalModel
    names: Sequence[str] | None = None
    prepared: bool = False

    def __post_init__(self):
        names = configs.evaluator_names(self.config) if self.names is None else self.names
        kwargs = self.config.evaluator_kwargs
        self.evaluators = {n: evaluators.create(n, kwargs.get(n)) for n in names}

    @functools.cached_property
    def _embed(self):
        model = self.model
        return jax.jit(
            lambda v, b: model.apply(v, b, train=False),
            out_shardings=NamedSharding(self.mesh, P()),
        )

    def embed(self, variables: Any, split: str, extra_keys: Sequence[str] = ()) -> Any:
        """``split`` embedded with ``variables``: an :class:`ovaib_jax.evaluators.Embedded`
        with z, the representations, the dataset's targets and ``extra_keys`` (stored
        example keys read as targets), for every example of the split (batches of
        ``eval_batch_size``, the last one padded and its padding dropped)."""
        spec = self.resolved.spec
        names = list(self.resolved.modality_names)
        declared = {t.name for t in spec.targets} | set(names)
        extra = tuple(dict.fromkeys(k for k in extra_keys if k not in declared))
        batch_size = int(self.config.eval_batch_size or self.config.batch_size)
        if not self.prepared:
            inputs.prepare_dataset(self.config)
            self.prepared = True

        def embed(local):
            z, reps = self._embed(variables, runtime.global_batch(local, self.mesh, names))
            return jax.tree.map(host.to_host, (z, reps))

        def batches():
            for local in inputs.eval_batches(
                self.config, split, batch_size=batch_size, spec=spec, extra_keys=extra
            ):
                if jax.process_count() > 1:  # targets and mask of every process's rows
                    local = {k: v if k in names else host.all_rows(v) for k, v in local.items()}
                yield local

        return evaluators.embed_split(
            embed,
            batches(),
            spec=spec,
            modality_names=names,
            target_names=[t.name for t in spec.targets] + list(extra),
            valid_key=inputs.VALID,
        )

    def run(self, variables: Any) -> dict[str, dict[str, Any]]:
        """Runs every evaluator on ``variables``: ``{evaluator: {metric: value}}``.

        Each split is embedded once for all evaluators (the train split only when one of
        them needs it).
        """
        if not self.evaluators:
            return {}
        info = objective.run_info(self.config, self.resolved, self.model, variables)
        extra = tuple(k for ev in self.evaluators.values() for k in ev.extra_keys())
        test = self.embed(variables, self.config.dataset.eval_split, extra)
        train = None
        if any(ev.needs_train for ev in self.evaluators.values()):
            train = self.embed(variables, self.config.dataset.train_split, extra)
        return {
            name: ev.run(train if ev.needs_train else None, test, info)
            for name, ev in self.evaluators.items()
        }


@dataclasses.dataclass
class Restored:
    """A checkpoint's model variables with what is needed to evaluate them."""

    config: ml_collections.ConfigDict
    resolved: Resolved
    mesh: jax.sharding.Mesh
    model: models.MultiModalModel
    variables: Any
    step: int

    def evaluation(
        self, names: Sequence[str] | None = None, *, prepared: bool = False
    ) -> Evaluation:
        """An :class:`Evaluation` of ``names`` (default: ``config.evaluators``);
        ``prepared``: the dataset is built already (see :class:`Evaluation`)."""
        return Evaluation(self.config, self.resolved, self.mesh, self.model, names, prepared)


def restore(config: ml_collections.ConfigDict, workdir: str, step: int | None = None) -> Restored:
    """The model variables of ``step`` (latest good if None) of the run in ``workdir``,
    restored without the optimizer state.

    Raises:
      FileNotFoundError: no checkpoint in ``workdir``.
    """
    runtime.initialize_distributed(config, training=False)
    resolved = validate_config(config)
    mesh = runtime.create_mesh()
    model = runtime.create_model(config, resolved)
    abstract = runtime.abstract_variables(model, resolved.modalities, mesh)
    variables, step = state.restore_variables(workdir, abstract, step)
    return Restored(config, resolved, mesh, model, variables, step)
