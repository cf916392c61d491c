"""The run's objective bound to its model: the only module that knows how a config's
objective meets the model's own parameters (the learnable temperature, as ``tau`` or
Symile's ``logit_scale``; OVA's learnable product weight; the MLP projector), the PRNG
key and the mesh.

* :func:`make_objective`: the training objective under ``jax.shard_map``.
* :func:`run_info`: what evaluators need to call the objective and its scorer as the run
  trained with them, for given variables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import ml_collections
from jax.sharding import PartitionSpec as P

from ovaib_jax import evaluators, host, losses, models
from ovaib_jax.runtime import DATA_AXIS
from ovaib_jax.validation import Resolved

__all__ = ["OWN_PARAMS", "loss_kwargs", "make_objective", "projector", "run_info"]

# The model's parameters that the objective reads (the rest never enters the shard_map).
OWN_PARAMS = ("log_temperature", "log_product_weight", "projector", "fusion")


def _kwargs(resolved: Resolved, model: models.MultiModalModel, params: Any) -> dict[str, Any]:
    """The objective's keyword arguments with the model's own parameters ``params``
    (a tree with at most :data:`OWN_PARAMS`): hyper-parameters, temperature, product
    weight, projector (OVA's MLP ablation, ConFu's fusion heads), fusion (CoMM's, as
    ``fuse``)."""
    kwargs = dict(resolved.hparams)
    if resolved.temperature_param is not None:
        tau = model.apply({"params": params}, method=models.MultiModalModel.temperature)
        kwargs.update(losses.temperature_kwargs(resolved.objective_name, tau))
    if resolved.learn_product_weight:
        kwargs["product_weight"] = model.apply(
            {"params": params}, method=models.MultiModalModel.product_weight
        )
    if resolved.projector:
        kwargs["projector"] = lambda rest, m: model.apply(
            {"params": params}, rest, m, method=models.MultiModalModel.project
        )
    if resolved.fusion:
        if not model.fusion or "fusion" not in params:
            raise ValueError(
                f"objective {resolved.objective_name!r} takes the model's fusion, but the "
                "model was built without it (runtime.create_model must pass "
                "fusion=resolved.fusion to models.create_model)."
            )
        kwargs["fuse"] = lambda parts, subset: model.apply(
            {"params": params}, parts, subset, method=models.MultiModalModel.fuse
        )
    return kwargs


def make_objective(
    resolved: Resolved,
    model: models.MultiModalModel,
    mesh: jax.sharding.Mesh,
    chunk_size: int = 0,
) -> Callable[[jax.Array, Any, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]:
    """The objective of the run under ``jax.shard_map`` over the ``"data"`` axis.

    Returns:
      ``objective(z, params, key) -> (loss, aux)``: z of shape (M, N, d) sharded over N;
      params the model parameters (only :data:`OWN_PARAMS` are read); key the step's
      PRNG key (random negatives). loss and aux are replicated scalars, equal to the
      unsharded objective's.
    """
    fn = resolved.objective
    takes_key = resolved.takes_key

    def inner(z, own_params, key):
        kwargs = _kwargs(resolved, model, own_params)
        if takes_key:
            kwargs["key"] = key
        return fn(z, axis_name=DATA_AXIS, chunk_size=chunk_size or None, **kwargs)

    specs = (P(None, DATA_AXIS), P(), P())
    sharded = jax.shard_map(inner, mesh=mesh, in_specs=specs, out_specs=P())

    def objective(z, params, key):
        own = {k: params[k] for k in OWN_PARAMS if k in params}
        return sharded(z, own, key)

    return objective


def projector(resolved: Resolved, model: models.MultiModalModel, variables: Any) -> Callable | None:
    """The OVA projector the run trains with, ``projector(rest, m) -> (N, d)``: the
    parameter-free one of the hyper-parameters (``projector="product"``), the model's MLP
    projector bound to ``variables`` (``"mlp"``), else None."""
    fixed = resolved.hparams.get("projector")
    if fixed is not None:
        return fixed
    if resolved.projector:
        return _kwargs(resolved, model, variables["params"])["projector"]
    return None


def loss_kwargs(
    config: ml_collections.ConfigDict,
    resolved: Resolved,
    model: models.MultiModalModel,
    variables: Any,
) -> dict[str, Any]:
    """The keyword arguments the run's objective trains with, as ``variables`` give them:
    hyper-parameters, the learned temperature and product weight (Python floats), the
    projector, and the run's ``chunk_size`` when it blocks the objective."""
    kwargs = _kwargs(resolved, model, variables["params"])
    param = resolved.temperature_param
    if param is not None:
        kwargs[param] = float(host.to_host(kwargs[param]))
    if resolved.learn_product_weight:
        kwargs["product_weight"] = float(host.to_host(kwargs["product_weight"]))
    if config.objective.chunk_size:
        kwargs["chunk_size"] = int(config.objective.chunk_size)
    return kwargs


def run_info(
    config: ml_collections.ConfigDict,
    resolved: Resolved,
    model: models.MultiModalModel,
    variables: Any,
) -> evaluators.RunInfo:
    """The :class:`ovaib_jax.evaluators.RunInfo` of the run with ``variables``."""
    shared = losses.SCORER_HPARAMS.get(resolved.objective_name, ())
    kwargs = loss_kwargs(config, resolved, model, variables)
    return evaluators.RunInfo(
        objective=resolved.objective_name,
        seed=int(config.seed),
        loss_kwargs=kwargs,
        # the scorer's hyper-parameters as the run trained with them (a learned weight's
        # value in ``variables``, not its initial one)
        scorer_kwargs={k: kwargs[k] for k in resolved.hparams if k in shared},
        projector=projector(resolved, model, variables),
        fuse=(
            _kwargs(resolved, model, variables["params"]).get("fuse")
            if resolved.objective_name in losses.FUSION_SCORED
            else None
        ),
        batch_size=int(config.eval_batch_size or config.batch_size),
        num_batches=int(config.eval_num_batches),
    )
