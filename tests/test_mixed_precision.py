"""Mixed precision (``config.model.dtype``): bfloat16 computation of every encoder family
with float32 parameters, optimizer state, BatchNorm statistics and objective; validation
of the dtype names; the bfloat16 loss against the float32 loss on the same parameters.

The process has 8 fake CPU devices (tests/conftest.py): the train steps here run the
objective under shard_map as a real run does.
"""

from __future__ import annotations

import dataclasses
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ovaib_jax import runtime, step
from ovaib_jax.data.spec import Modality
from ovaib_jax.objective import make_objective
from ovaib_jax.validation import validate_config
from tests.train_helpers import synthetic_batch, tiny_config

# Every encoder family, each on a modality of its layout (one tiny model for all).
MODALITIES = (
    Modality("rgb", (8, 8, 3), "uint8", "resnet18"),
    Modality("gray", (8, 8), "uint8", "small_cnn"),
    Modality("force", (12, 3), "float32", "cnn1d"),
    Modality("words", (5, 4), "float32", "lstm"),
    Modality("pose", (6,), "float32", "mlp"),
)
# bfloat16 forward vs float32 forward on the same float32 parameters and batch (tiny
# models at initialisation, 13 initialisations measured): ||z_bf16 - z_f32|| / ||z_f32||
# was 4e-3 to 7e-3 (bfloat16 keeps 8 significant bits: 2**-8 = 3.9e-3), and
# |loss_bf16 - loss_f32| / |loss_f32| at most 2.4e-3 (ova_ib), 4.2e-3 (pairwise_clip),
# 1e-6 (symile: logits near 0 at initialisation) and 1.4e-2 (gram: the volume of M = 5
# vectors in d = 8 is ill-conditioned; 2.3e-3 at d = 32). Tolerances with 2.4x to 4x
# margin; experiments/default.py documents the numbers for the default model.
BF16_Z_RTOL = 2e-2
BF16_LOSS_RTOL = {"ova_ib": 1e-2, "pairwise_clip": 1e-2, "symile": 1e-2, "gram": 5e-2}


def _floating_dtypes(tree) -> set:
    return {
        np.dtype(x.dtype) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)
    }


def _config(dtype: str = "bfloat16", objective: str = "ova_ib"):
    overrides = {"model.dtype": dtype, "model.resnet18.stage_sizes": (1,)}
    return tiny_config(arg=f"objective={objective}", **overrides)


def _resolved(config):
    """The config's resolved pieces with :data:`MODALITIES` for the dataset's."""
    resolved = validate_config(config, device_count=jax.device_count(), process_count=1)
    encoders = tuple(m.encoder for m in MODALITIES)
    return dataclasses.replace(resolved, modalities=MODALITIES, encoders=encoders)


@pytest.mark.parametrize("field", ["dtype", "objective_dtype"])
def test_bad_dtype_name_is_one_clear_error(field):
    config = tiny_config()
    config.model[field] = "float16"
    with pytest.raises(ValueError, match=rf"config\.model\.{field}='float16'.*float32, bfloat16"):
        validate_config(config, device_count=1, process_count=1)
    config.model[field] = "bfloat16"
    validate_config(config, device_count=1, process_count=1)


def test_dtype_belongs_to_the_model_not_to_one_encoder():
    config = tiny_config()
    with config.unlocked():
        config.model.mlp.dtype = "bfloat16"
    with pytest.raises(ValueError, match=r"config\.model\.mlp\.dtype.*config\.model\.dtype"):
        validate_config(config, device_count=1, process_count=1)


@pytest.fixture(scope="module")
def bf16():
    """A bfloat16 run over :data:`MODALITIES` on the 8 devices: its train state, jitted
    step and the initial variables as numpy (the step donates the state)."""
    config = _config()
    resolved = _resolved(config)
    mesh = runtime.create_mesh()
    model = runtime.create_model(config, resolved)
    tx, _ = step.create_optimizer(config.optimizer, config.num_train_steps)
    init_rng, rng = jax.random.split(jax.random.key(config.seed))
    state = step.create_train_state(model, tx, MODALITIES, init_rng, mesh)
    return types.SimpleNamespace(
        config=config,
        mesh=mesh,
        model=model,
        state=state,
        variables=jax.tree.map(np.asarray, state.variables()),
        train_step=step.make_train_step(
            model, tx, make_objective(resolved, model, mesh), rng, mesh
        ),
    )


def test_bfloat16_train_step_every_encoder(bf16):
    """One real step in bfloat16 (8 devices): finite loss; parameters, optimizer state and
    BatchNorm statistics float32; every Dense / Conv / BatchNorm output and the
    representations bfloat16; z (what the objective receives) float32."""
    state = bf16.state
    batch = runtime.global_batch(synthetic_batch(MODALITIES, bf16.config.batch_size), bf16.mesh)
    assert _floating_dtypes(state.params) == {np.dtype(np.float32)}
    assert _floating_dtypes(state.opt_state) == {np.dtype(np.float32)}
    layers = (nn.Dense, nn.Conv, nn.BatchNorm)
    (z, reps), inter = jax.eval_shape(  # dtypes only: nothing is computed
        lambda v, b: bf16.model.apply(
            v,
            b,
            train=True,
            mutable=["batch_stats", "intermediates"],
            capture_intermediates=lambda mdl, _: isinstance(mdl, layers),
        ),
        state.variables(),
        batch,
    )
    assert z.dtype == jnp.float32
    assert {r.dtype for r in reps.values()} == {np.dtype(jnp.bfloat16)}
    captured = jax.tree.leaves(inter["intermediates"])
    assert len(captured) >= 2 * len(MODALITIES)  # encoder and head layers of every modality
    assert _floating_dtypes(captured) == {np.dtype(jnp.bfloat16)}
    assert inter["batch_stats"]  # ResNet-18's BatchNorm: statistics stay float32
    assert _floating_dtypes(inter["batch_stats"]) == {np.dtype(np.float32)}

    state, metrics = bf16.train_step(state, batch)
    assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["grad_norm"])
    assert metrics["loss"].dtype == jnp.float32
    assert _floating_dtypes(state.params) == {np.dtype(np.float32)}
    assert _floating_dtypes(state.opt_state) == {np.dtype(np.float32)}
    assert _floating_dtypes(state.batch_stats) == {np.dtype(np.float32)}
    moved = jax.tree.map(
        lambda a, b: float(np.max(np.abs(np.asarray(a) - b))),
        state.params,
        bf16.variables["params"],
    )
    # Every module learns: each encoder and head has a parameter that moved.
    assert all(max(jax.tree.leaves(t)) > 0 for t in moved.values())


def test_bfloat16_loss_close_to_float32(bf16):
    """The bfloat16 forward on float32 parameters gives the float32 forward's loss within
    :data:`BF16_LOSS_RTOL` for several objectives (z is float32 in both, as
    ``objective_dtype`` is float32)."""
    batch = synthetic_batch(MODALITIES, 32)
    f32 = _config("float32")
    models = {"float32": runtime.create_model(f32, _resolved(f32)), "bfloat16": bf16.model}
    z = {}
    for dtype, model in models.items():
        forward = jax.jit(lambda v, b, m=model: m.apply(v, b, train=True, mutable=["batch_stats"]))
        z[dtype] = forward(bf16.variables, batch)[0][0]
        assert z[dtype].dtype == jnp.float32
    # The bfloat16 forward did compute in bfloat16: z moved by about its 8-bit mantissa.
    err = float(jnp.linalg.norm(z["bfloat16"] - z["float32"]) / jnp.linalg.norm(z["float32"]))
    assert 1e-4 < err < BF16_Z_RTOL, err
    for name, rtol in BF16_LOSS_RTOL.items():
        obj = validate_config(_config("float32", name), device_count=1, process_count=1)
        kwargs = dict(obj.hparams, **({"key": jax.random.key(1)} if obj.takes_key else {}))
        loss = jax.jit(lambda z_, fn=obj.objective, kw=kwargs: fn(z_, **kw)[0])
        want, got = float(loss(z["float32"])), float(loss(z["bfloat16"]))
        assert abs(got - want) <= rtol * abs(want), (name, got, want)
