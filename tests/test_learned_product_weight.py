"""OVA's span + product score with its weight learned in training
(``config.model.learnable_product_weight``): the loss with a traced weight, the
validation, and a run that learns the weight and evaluates with the learned value."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ovaib_jax import losses, objective, runtime, train
from ovaib_jax.validation import validate_config
from tests.train_helpers import synthetic_batch, tiny_config


def _z(m=3, n=16, d=8, seed=0):
    return jax.random.normal(jax.random.key(seed), (m, n, d))


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"chunk_size": 4}, {"negatives": "shuffled"}, {"beta": 0.5, "exclude_positive": True}],
)
def test_traced_weight_gives_the_float_weights_loss_and_gradients(kwargs):
    """A JAX-array weight (as the model gives it) is the same score as the Python float:
    loss, aux and gradient in z agree; the gradient in w is the loss's slope in the float
    weight (central difference)."""
    z, w = _z(), 0.7

    def loss(z, w):
        return losses.ova_ib(z, tau=0.1, product_weight=w, **kwargs)

    want, want_aux = loss(z, w)
    got, got_aux = jax.jit(loss)(z, jnp.float32(w))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    for k in want_aux:
        np.testing.assert_allclose(got_aux[k], want_aux[k], rtol=1e-5, atol=1e-6, err_msg=k)
    gz_float = jax.grad(lambda z: loss(z, w)[0])(z)
    gz, gw = jax.grad(lambda z, w: loss(z, w)[0], argnums=(0, 1))(z, jnp.float32(w))
    np.testing.assert_allclose(gz, gz_float, rtol=1e-5, atol=1e-7)
    eps = 1e-2
    slope = (float(loss(z, w + eps)[0]) - float(loss(z, w - eps)[0])) / (2 * eps)
    assert abs(slope) > 1e-3  # the product term moves the loss at all
    np.testing.assert_allclose(float(gw), slope, rtol=2e-3, atol=1e-5)


def test_traced_zero_weight_is_the_papers_score():
    """A traced w = 0 computes the product term with weight 0: the loss of the paper's
    score (the float 0, which skips the term) to rounding."""
    z = _z(m=4, seed=1)
    want, _ = losses.ova_ib(z, tau=0.1, product_weight=0.0)
    got, _ = losses.ova_ib(z, tau=0.1, product_weight=jnp.float32(0.0))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.raises(ValueError, match="product_weight must be a scalar"):
        losses.ova_ib(z, tau=0.1, product_weight=jnp.ones(2))


def _validate(mutate, objective_name="ova_ib"):
    config = tiny_config(name="parity", arg=f"objective={objective_name},runlocal")
    with config.unlocked():
        config.model.learnable_product_weight = True
        mutate(config)
    return validate_config(config, device_count=1, process_count=1)


def test_validation_names_the_fix():
    with pytest.raises(ValueError, match=r"objective\.product_weight, which must be > 0"):
        _validate(lambda c: None)  # the experiment's product_weight is 0
    with pytest.raises(ValueError, match=r"objective 'symile' has no span \+ product score"):
        _validate(lambda c: None, "symile")
    resolved = _validate(lambda c: setattr(c.objective, "product_weight", 0.5))
    assert resolved.learn_product_weight and resolved.hparams["product_weight"] == 0.5
    # outside the clip bounds the run trained at the bound (w = 1000 for an initial 2000)
    for w in (2000.0, 1e-4):
        with pytest.raises(ValueError, match=r"inside \[0\.001, 1000\]; its initial value"):
            _validate(lambda c, w=w: setattr(c.objective, "product_weight", w))


def test_a_run_learns_the_weight_and_evaluates_with_the_learned_value():
    """The model starts at the configured weight (exactly, logged by the first step),
    the weight gets a gradient and moves, and the evaluators' scorer and loss take the
    learned value from the variables, not the configured one."""
    config = tiny_config(name="parity", arg="objective=ova_ib,runlocal")
    with config.unlocked():
        config.model.learnable_product_weight = True
        config.objective.product_weight = 0.5
        config.optimizer.learning_rate = 0.05
    run = train.build(config, with_data=False)
    state = run.state
    assert float(jnp.exp(state.params["log_product_weight"])) == pytest.approx(0.5, rel=1e-6)
    logged = []
    for s in range(3):
        batch = synthetic_batch(run.resolved.modalities, 16, s)
        state, metrics = run.train_step(state, runtime.global_batch(batch, run.mesh))
        logged.append(float(metrics["product_weight"]))
    assert logged[0] == pytest.approx(0.5, rel=1e-6)  # the parameters before the update
    learned = float(jnp.exp(state.params["log_product_weight"]))
    assert abs(learned - 0.5) > 1e-3 and len(set(logged)) == 3
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    info = objective.run_info(config, run.resolved, run.model, variables)
    assert info.scorer_kwargs["product_weight"] == pytest.approx(learned, rel=1e-6)
    assert info.loss_kwargs["product_weight"] == pytest.approx(learned, rel=1e-6)
    assert isinstance(info.scorer_kwargs["product_weight"], float)


def test_the_weights_gradient_is_the_same_on_eight_devices_as_on_one():
    """The weight enters the sharded objective replicated: its gradient over 8 devices
    (each scoring its rows against all gathered candidates) equals the one-device one."""
    config = tiny_config(name="parity", arg="objective=ova_ib,runlocal")
    with config.unlocked():
        config.model.learnable_product_weight = True
        config.objective.product_weight = 0.5
    resolved = validate_config(config, device_count=8, process_count=1)
    model = runtime.create_model(config, resolved)
    params = {"log_product_weight": jnp.log(jnp.float32(0.5))}
    z = _z(m=3, n=16, d=8, seed=3)
    grads = []
    for devices in (jax.devices()[:1], jax.devices()[:8]):
        fn = objective.make_objective(resolved, model, runtime.create_mesh(devices))
        # jitted: one compile, where eager shard_map ran every op on its own (~80 s)
        grads.append(jax.jit(jax.grad(lambda p, fn=fn: fn(z, p, jax.random.key(0))[0]))(params))
    assert len(jax.devices()) >= 8
    g1, g8 = (float(g["log_product_weight"]) for g in grads)
    assert abs(g1) > 1e-4
    np.testing.assert_allclose(g8, g1, rtol=1e-5)
