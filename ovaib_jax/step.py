"""The train step: the optimizer, the initial train state and the pure, jitted update.

Determinism: the step's PRNG key is ``fold_in(rng, step)``, so a run restarted from a
checkpoint computes the same updates as an uninterrupted one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import chex
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ovaib_jax import configs, models
from ovaib_jax.runtime import DATA_AXIS, example_inputs
from ovaib_jax.state import TrainState, variables

__all__ = [
    "create_optimizer",
    "create_train_state",
    "make_train_step",
    "train_step",
    "weight_decay_mask",
]


def create_optimizer(
    opt: ml_collections.ConfigDict, num_train_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optax transformation and learning-rate schedule of ``config.optimizer``."""
    lr = float(opt.learning_rate)
    warmup = int(opt.warmup_steps)
    if opt.schedule == "constant":
        schedule = optax.constant_schedule(lr)
    elif opt.schedule == "cosine":
        schedule = optax.cosine_decay_schedule(lr, decay_steps=max(num_train_steps, 1))
    elif opt.schedule == "warmup_cosine":
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, lr, warmup_steps=warmup, decay_steps=max(num_train_steps, warmup + 1)
        )
    elif opt.schedule == "warmup_constant" and warmup == 0:  # as warmup_cosine: full rate
        schedule = optax.constant_schedule(lr)
    elif opt.schedule == "warmup_constant":
        schedule = optax.join_schedules(
            [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup]
        )
    else:
        raise ValueError(f"Unknown schedule {opt.schedule!r}; valid: {configs.SCHEDULES}.")
    parts = []
    if opt.grad_clip_norm:
        parts.append(optax.clip_by_global_norm(float(opt.grad_clip_norm)))
    if opt.name == "adam":
        parts.append(optax.adam(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps))
    elif opt.name == "adamw":
        parts.append(
            optax.adamw(
                schedule,
                b1=opt.b1,
                b2=opt.b2,
                eps=opt.eps,
                weight_decay=opt.weight_decay,
                mask=weight_decay_mask(opt.weight_decay_mask),
            )
        )
    elif opt.name == "sgd":
        parts.append(optax.sgd(schedule, momentum=opt.momentum or None))
    else:
        raise ValueError(f"Unknown optimizer {opt.name!r}; valid: {configs.OPTIMIZERS}.")
    return optax.chain(*parts), schedule


def weight_decay_mask(name: str) -> Callable[[Any], Any] | None:
    """optax's ``mask`` for ``config.optimizer.weight_decay_mask``: None (every parameter)
    for "all"; for "matrices", True exactly for parameters of two or more dimensions
    (kernels, embedding tables), so biases, norm scales and scalar parameters (the
    learnable log temperature and log product weight) are not decayed."""
    if name == "all":
        return None
    if name == "matrices":
        return lambda params: jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)
    raise ValueError(f"Unknown weight_decay_mask {name!r}; valid: {configs.WEIGHT_DECAY_MASKS}.")


def create_train_state(
    model: models.MultiModalModel,
    tx: optax.GradientTransformation,
    modalities: Any,
    rng: jax.Array,
    mesh: jax.sharding.Mesh,
) -> TrainState:
    """Initialises parameters, BatchNorm statistics and optimizer state, replicated."""

    def init(rng):
        initial = model.init(rng, example_inputs(modalities), train=False)
        params = initial["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=initial.get("batch_stats", {}),
            opt_state=tx.init(params),
        )

    return jax.jit(init, out_shardings=NamedSharding(mesh, P()))(rng)


def train_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    *,
    model: models.MultiModalModel,
    tx: optax.GradientTransformation,
    objective: Callable[..., tuple[jax.Array, dict[str, jax.Array]]],
    rng: jax.Array,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One update on a global batch: pure, to be jitted (see :func:`make_train_step`).

    Args:
      state: the replicated train state.
      batch: ``{modality: (B, *shape)}`` global arrays sharded over ``"data"``.
      model: the multi-modal model.
      tx: the optax transformation.
      objective: ``objective(z, params, key) -> (loss, aux)``
        (:func:`ovaib_jax.objective.make_objective`).
      rng: the run's base PRNG key; the step uses ``fold_in(rng, state.step)``.

    Returns:
      The new state and ``metrics``: replicated scalars ``loss``, every aux entry of the
      objective, ``grad_norm``, and ``temperature`` / ``product_weight`` when the model
      learns them.
    """
    key = jax.random.fold_in(rng, state.step)

    def loss_fn(params):
        (z, _), updates = model.apply(
            variables(params, state.batch_stats), batch, train=True, mutable=["batch_stats"]
        )
        chex.assert_shape(z, (len(model.encoders), None, model.embedding_dim))  # (M, B, d)
        loss, aux = objective(z, params, key)
        return loss, (aux, updates.get("batch_stats", state.batch_stats))

    (loss, (aux, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, **aux, "grad_norm": optax.tree.norm(grads)}
    if model.learnable_temperature:
        metrics["temperature"] = model.apply(
            {"params": state.params}, method=models.MultiModalModel.temperature
        )
    if model.learnable_product_weight:
        metrics["product_weight"] = model.apply(
            {"params": state.params}, method=models.MultiModalModel.product_weight
        )
    new_state = TrainState(
        step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
    )
    return new_state, metrics


def make_train_step(
    model: models.MultiModalModel,
    tx: optax.GradientTransformation,
    objective: Callable[..., Any],
    rng: jax.Array,
    mesh: jax.sharding.Mesh,
) -> Callable[[TrainState, Mapping[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]:
    """:func:`train_step` jitted: batch sharded over ``"data"``, state replicated, donated."""
    replicated = NamedSharding(mesh, P())
    step = functools.partial(train_step, model=model, tx=tx, objective=objective, rng=rng)
    return jax.jit(
        step,
        in_shardings=(replicated, NamedSharding(mesh, P(DATA_AXIS))),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,),
    )
