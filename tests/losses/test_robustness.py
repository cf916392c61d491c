"""Degenerate inputs give finite losses and gradients; bad inputs give one clear error."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ovaib_jax import losses


def _base(m=3, n=6, d=5, seed=0):
    return jax.random.normal(jax.random.key(seed), (m, n, d))


def _degenerate_inputs():
    z = _base()
    return {
        "duplicated_modality": z.at[2].set(z[1]),
        "collinear_modalities": z.at[2].set(-3.0 * z[1]),
        "collinear_samples": z.at[:, 1].set(2.0 * z[:, 0]),
        "zero_embeddings": z.at[1].set(0.0),
        "all_zero": jnp.zeros_like(z),
        "norm_1e-6": 1e-6 * z / jnp.linalg.norm(z, axis=-1, keepdims=True),
        "norm_1e6": 1e6 * z / jnp.linalg.norm(z, axis=-1, keepdims=True),
        "bfloat16": z.astype(jnp.bfloat16),
    }


@pytest.mark.parametrize("name", losses.names())
def test_degenerate_inputs_give_finite_loss_and_grad(name):
    fn = losses.get(name)
    value_and_grad = jax.jit(jax.value_and_grad(lambda z: fn(z)[0]))
    for label, z in _degenerate_inputs().items():
        loss, grad = value_and_grad(z)
        assert np.isfinite(float(loss)), (name, label)
        assert grad.dtype == z.dtype, (name, label)
        assert np.all(np.isfinite(np.asarray(grad, np.float32))), (name, label)


@pytest.mark.parametrize("name", ["ova_ib", "gram"])
def test_duplicated_modality_for_many_modalities(name):
    z = _base(m=6)
    z = z.at[3].set(z[1]).at[4].set(z[1])
    loss, grad = jax.value_and_grad(lambda z: losses.get(name)(z)[0])(z)
    assert np.isfinite(float(loss)) and np.all(np.isfinite(np.asarray(grad)))


def test_duplicated_remaining_modality_is_scored_like_its_span():
    """A duplicated remaining modality adds nothing to the span: the OVA score of modality
    0 against (z1, z1) equals its score against z1 alone, i.e. |cos| (SPEC section 1)."""
    z = _base()
    q = z[0:1]
    s_dup = losses.ova_score(jnp.stack([z[1], z[1]]), z[0])
    s_one = losses.ova_score(z[1:2], z[0])
    np.testing.assert_allclose(np.asarray(s_dup), np.asarray(s_one), atol=1e-3)
    del q


@pytest.mark.parametrize("name", losses.names())
def test_wrong_rank_names_received_and_expected_shape(name):
    with pytest.raises(ValueError, match=r"\(M, N, d\).*\(64, 8\)"):
        losses.get(name)(jnp.zeros((64, 8)))


@pytest.mark.parametrize("name", losses.names())
def test_single_modality_is_rejected(name):
    with pytest.raises(ValueError, match=r"M = 1|M = 3"):
        losses.get(name)(jnp.zeros((1, 4, 8)))


def test_triangle_needs_three_modalities():
    with pytest.raises(ValueError, match=r"exactly M = 3.*\(4, 5, 6\)"):
        losses.triangle(jnp.ones((4, 5, 6)))


def test_other_bad_arguments():
    z = _base()
    with pytest.raises(ValueError, match=r"Unknown objective 'ova'.*ova_ib"):
        losses.get("ova")
    with pytest.raises(ValueError, match="negatives"):
        losses.symile(z, negatives="m")
    with pytest.raises(ValueError, match="anchor=5"):
        losses.gram(z, anchor=5)
    with pytest.raises(ValueError, match="chunk_size"):
        losses.ova_ib(z, chunk_size=0)
    with pytest.raises(ValueError, match="alignment"):
        losses.pairwise_clip_ib(z, alignment="l1")
    with pytest.raises(ValueError, match="integer"):
        losses.ova_ib(jnp.ones((3, 4, 5), jnp.int32))
    with pytest.raises(ValueError, match="projector"):
        losses.ova_sufficiency(z, projector=lambda rest, m: rest[0, :, :2])
    with pytest.raises(ValueError, match=r"N >= 2"):
        losses.ova_sufficiency(z[:, :1], exclude_positive=True)


def test_scorer_shape_errors():
    with pytest.raises(ValueError, match=r"\(Q, Nq, d\).*\(5, 4\)"):
        losses.ova_score(jnp.ones((5, 4)), jnp.ones((3, 4)))
    with pytest.raises(ValueError, match=r"same d"):
        losses.clip_score(jnp.ones((2, 5, 4)), jnp.ones((3, 6)))
    with pytest.raises(ValueError, match=r"Q = 2"):
        losses.triangle_score(jnp.ones((3, 5, 4)), jnp.ones((3, 4)))
