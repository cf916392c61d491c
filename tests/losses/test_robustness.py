"""Degenerate inputs give finite gradients and the reference's values (where a value is
known); bad inputs and hyper-parameters give one clear error."""

import functools
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ovaib_jax import losses
from tests.losses import reference as ref
from tests.losses import reference_fusion as ref_fusion

# Each objective's literal reference at the library's defaults.
REFERENCES = {
    "ova_ib": ref.ova_ib,
    "ova_sufficiency": ref.ova_sufficiency,
    "pairwise_clip": ref.pairwise_clip,
    "pairwise_clip_ib": ref.pairwise_clip_ib,
    "anchor_clip": ref.anchor_clip,
    "symile": ref.symile_n_cyclic,  # default negatives "n", no key: cyclic shifts
    "gram": ref.gram,
    "triangle": ref.triangle,
    "confu": ref_fusion.confu,
    "comm": ref_fusion.comm,
    "ova_ib_comm": ref_fusion.ova_ib_comm,
    "ova_ib_heads": ref_fusion.ova_ib_heads,
}
# Every objective but Symile normalises the embeddings: its value does not depend on the
# norms (inside the supported range).
NORMALISING = tuple(n for n in REFERENCES if n != "symile")


def _base(m=3, n=6, d=5, seed=0):
    return jax.random.normal(jax.random.key(seed), (m, n, d))


def _unit(z):
    return z / np.linalg.norm(z, axis=-1, keepdims=True)


@functools.cache
def _degenerate_inputs():
    # Built in NumPy once: eager JAX ops would each compile on first use.
    z = np.asarray(_base())
    norms = 10.0 ** np.random.default_rng(1).uniform(-3, 3, size=(*z.shape[:2], 1))
    inputs = {
        "duplicated_modality": np.stack([z[0], z[1], z[1]]),
        "collinear_modalities": np.stack([z[0], z[1], -3.0 * z[1]]),
        "collinear_samples": np.concatenate([z[:, :1], 2.0 * z[:, :1], z[:, 2:]], axis=1),
        "zero_embeddings": np.stack([z[0], 0.0 * z[1], z[2]]),
        # A few zero rows (an anchor's included) among live ones: a zero vector's volume
        # and area are the literal ones (GRAM and TRIANGLE once took it for a unit vector).
        "zero_rows": z
        * np.array([[1, 0, 1, 1, 1, 1], [1, 1, 1, 1, 0, 1], [1, 1, 1, 0, 1, 1]])[..., None],
        "all_zero": np.zeros_like(z),
        "all_equal": np.broadcast_to(z[0, 0], z.shape).copy(),
        "norm_1e-6": 1e-6 * _unit(z),
        "norm_1e6": 1e6 * _unit(z),
        "norms_1e-3_to_1e3": _unit(z) * norms,
    }
    inputs = {k: v.astype(np.float32) for k, v in inputs.items()}
    inputs["bfloat16"] = z.astype(jnp.bfloat16)
    return inputs


# Inputs whose score matrices hold exact ties (identical or zero-volume candidates): which
# tied candidate wins is decided by rounding (float32 here, float64 in the reference), so
# their accuracies are not compared.
_TIED = (
    "all_equal",
    "duplicated_modality",
    "collinear_modalities",
    "collinear_samples",
    "zero_embeddings",
    "zero_rows",
)


def _is_accuracy(key):
    """An in-batch accuracy entry, also a sub-term's (``comm/accuracy/0->fused``)."""
    return "accuracy" in key.split("/")


def _expected(name, label, z):
    """The reference's (loss, aux) for a degenerate input, or None where the library's
    documented value differs from the literal formula."""
    x = np.asarray(z, np.float64)
    if name in NORMALISING and label.startswith("norm"):
        # Scale invariance: the value of the unit vectors (the reference's eq. 11 uses an
        # absolute ridge lam, so only unit inputs give the library's relative guard).
        x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    loss, aux = REFERENCES[name](x)
    # (At d = 5, ova_ib_heads' product and self-contrast heads have one dimension each:
    # unit vectors are +-1 there, so their scores tie on every input.)
    if label in _TIED or name == "ova_ib_heads":
        aux = {k: v for k, v in aux.items() if not _is_accuracy(k)}
    return loss, aux


# Number of InfoNCE terms each objective sums, for M = 3 (others: 1).
_TERMS = {"pairwise_clip": 3, "pairwise_clip_ib": 3, "anchor_clip": 2}


def _tied_loss(name, n):
    """The loss when every score ties: log(#candidates) per InfoNCE term (CoMM's NT-Xent
    has 2N - 1 candidates)."""
    comm = np.log(2 * n - 1)
    tied = {"comm": comm, "ova_ib_comm": np.log(n) + comm, "ova_ib_heads": 2 * np.log(n) + comm}
    return tied.get(name, _TERMS.get(name, 1) * np.log(n))


@pytest.mark.parametrize("name", losses.names())
def test_degenerate_inputs_give_finite_gradients_and_reference_values(name):
    fn = losses.get(name)
    value_and_grad = jax.jit(jax.value_and_grad(fn, has_aux=True))
    inputs = dict(_degenerate_inputs())
    if name in NORMALISING:
        # The top of the documented range (float32 squares overflow at ~1.8e19); Symile's
        # products of such vectors overflow.
        inputs["norm_1e18"] = 1e18 * inputs["norm_1e6"] / 1e6
    for label, z in inputs.items():
        (loss, aux), grad = value_and_grad(z)
        assert grad.dtype == z.dtype, (name, label)
        assert np.all(np.isfinite(np.asarray(grad, np.float32))), (name, label)
        chex.assert_tree_all_finite((loss, aux))
        if label == "all_equal":
            # Every score ties in exact arithmetic: each InfoNCE term is log N, and the
            # alignment and minimality terms vanish. (Not the accuracies: the positive and
            # the negatives are computed by different XLA operations, whose float32
            # roundings broke the ties one way on one CPU and the other way on another;
            # the rule that a tie counts as an error is test_a_tie_is_an_error below.)
            chex.assert_trees_all_close(
                loss,
                _tied_loss(name, z.shape[1]),
                rtol=1e-5,
                atol=1e-5,
                custom_message=f"{name} on all-equal embeddings",
            )
        want = _expected(name, label, z)
        if want is None:
            continue
        got = (loss, {k: aux[k] for k in want[1]})
        assert set(aux) - set(want[1]) <= {k for k in aux if _is_accuracy(k)}
        chex.assert_trees_all_close(
            got, want, rtol=1e-4, atol=1e-4, custom_message=f"{name} on {label}"
        )


@pytest.mark.parametrize("name", ["ova_ib", "gram"])
def test_duplicated_modality_for_many_modalities(name):
    z = _base(m=6)
    z = z.at[3].set(z[1]).at[4].set(z[1])
    loss, grad = jax.jit(jax.value_and_grad(lambda z: losses.get(name)(z)[0]))(z)
    assert np.all(np.isfinite(np.asarray(grad)))
    chex.assert_trees_all_close(loss, REFERENCES[name](np.asarray(z, np.float64))[0], rtol=1e-4)


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


# (callable, hyper-parameter, valid range as printed) for every validated scalar.
_HPARAMS = [
    (losses.ova_ib, "tau", "> 0"),
    (losses.ova_ib, "beta", ">= 0"),
    (losses.ova_ib, "lam", "> 0"),
    (losses.ova_ib, "product_weight", ">= 0"),
    (losses.ova_sufficiency, "tau", "> 0"),
    (losses.ova_sufficiency, "lam", "> 0"),
    (losses.ova_sufficiency, "product_weight", ">= 0"),
    (losses.pairwise_clip, "tau", "> 0"),
    (losses.pairwise_clip_ib, "tau", "> 0"),
    (losses.pairwise_clip_ib, "beta", ">= 0"),
    (losses.anchor_clip, "tau", "> 0"),
    (losses.symile, "logit_scale", "> 0"),
    (losses.gram, "tau", "> 0"),
    (losses.gram, "label_smoothing", "in [0, 1)"),
    (losses.triangle, "tau", "> 0"),
    (losses.triangle, "label_smoothing", "in [0, 1)"),
    (losses.ova_ib_comm, "comm_weight", ">= 0"),
    (losses.ova_ib_comm, "comm_tau", "> 0"),
    (losses.ova_ib_heads, "product_share", "in [0, 1)"),
    (losses.ova_ib_heads, "comm_share", "in [0, 1)"),
    (losses.ova_ib_heads, "product_weight", ">= 0"),
    (losses.ova_ib_heads, "comm_weight", ">= 0"),
    (losses.ova_ib_heads, "comm_tau", "> 0"),
    (losses.ova_ib_heads, "tau", "> 0"),
    (losses.ova_heads_score, "lam", "> 0"),
    (losses.ova_heads_score, "product_share", "in [0, 1)"),
    (losses.ova_heads_score, "product_weight", ">= 0"),
    (losses.ova_score, "lam", "> 0"),
    (losses.ova_score, "product_weight", ">= 0"),
]
_IDS = [f"{fn.__name__}-{param}" for fn, param, _ in _HPARAMS]
_OUT_OF_RANGE = {
    "> 0": [0, 0.0, -0.5, float("inf"), float("nan"), np.float32(-1.0)],
    ">= 0": [-1e-3, -2, float("inf"), float("nan")],
    "in [0, 1)": [1.0, 1, -0.1, 2.5, float("nan")],
}
_WRONG_TYPE = ["1", True, False, None, np.bool_(True), [0.1]]


def _call(fn, **kwargs):
    if fn in (losses.ova_score, losses.ova_heads_score):
        return fn(jnp.ones((2, 3, 4)), jnp.ones((5, 4)), **kwargs)
    return fn(jnp.ones((3, 4, 5)), **kwargs)


@pytest.mark.parametrize("fn,param,valid", _HPARAMS, ids=_IDS)
def test_out_of_range_hyperparameter_names_parameter_value_and_range(fn, param, valid):
    for value in _OUT_OF_RANGE[valid]:
        want = rf"^{fn.__name__}: {param} must be a finite number {re.escape(valid)}, got "
        with pytest.raises(ValueError, match=want + re.escape(repr(value))):
            _call(fn, **{param: value})


@pytest.mark.parametrize("fn,param,valid", _HPARAMS, ids=_IDS)
def test_wrong_type_hyperparameter_is_a_clear_type_error(fn, param, valid):
    for value in _WRONG_TYPE:
        want = rf"^{fn.__name__}: {param} must be a real number {re.escape(valid)} .*got "
        with pytest.raises(TypeError, match=want + re.escape(repr(value))):
            _call(fn, **{param: value})


def test_valid_boundary_and_numpy_hyperparameters_are_accepted():
    z = _base()
    x = np.asarray(z, np.float64)
    got = jax.jit(  # the hyper-parameters are Python / NumPy constants, checked on tracing
        lambda z: (
            losses.ova_ib(z, tau=1, beta=0, lam=np.float64(0.5), product_weight=0)[0],
            losses.gram(z, tau=np.float32(0.5), label_smoothing=0)[0],
            losses.symile(z, logit_scale=np.int64(2))[0],
        )
    )(z)
    want = (
        ref.ova_sufficiency(x, 1.0, 0.5, guarded=True)[0],
        ref.gram(x, 0.5, 0, 0.0)[0],
        ref.symile_n_cyclic(x, 2.0)[0],
    )
    chex.assert_trees_all_close(got, want, rtol=1e-5)


def test_traced_hyperparameters_pass_through_jit_unchecked():
    """Arrays and tracers are not validated (that would need a host sync): inside jit a
    negative temperature is computed as given, like the reference with that value."""
    z = _base()
    x = np.asarray(z, np.float64)

    @jax.jit
    def f(z, tau, beta, lam, scale):
        return (
            losses.ova_ib(z, tau=tau, beta=beta, lam=lam)[0],
            losses.pairwise_clip_ib(z, tau=-tau, beta=beta)[0],
            losses.symile(z, logit_scale=scale)[0],
            losses.ova_score(z[:2], z[2], lam=lam),
        )

    got = f(z, 0.5, 0.7, 0.5, 2.0)
    want = (
        ref.ova_ib(x, 0.5, 0.7, 0.5, guarded=True)[0],
        ref.pairwise_clip_ib(x, -0.5, 0.7)[0],
        ref.symile_n_cyclic(x, 2.0)[0],
        np.array([[ref.ova_score_guarded(c, x[:2, i], 0.5) for c in x[2]] for i in range(6)]),
    )
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)
    # A concrete JAX array is not checked either (no device-to-host transfer).
    loss, _ = losses.pairwise_clip(z, tau=jnp.float32(-0.5))
    chex.assert_trees_all_close(loss, ref.pairwise_clip(x, -0.5)[0], rtol=1e-5)


def test_a_tie_is_an_error():
    """In-batch top-1 counts a row (and a column) as correct only when its positive is
    strictly above every negative: exactly tied scores (built so, not left to rounding)
    give 0, whole or in column blocks, with the diagonal or a separate positive."""
    from ovaib_jax.losses import _core

    n = 4
    tied = lambda cols: jnp.zeros((n, cols.shape[0]), jnp.float32)  # noqa: E731
    for positive in (None, jnp.zeros((n,), jnp.float32)):
        for chunk in (None, 2):
            stats = _core.contrast(
                tied, n_rows=n, n_cols=n, scale=1.0, positive=positive, symmetric=True,
                chunk_size=chunk,
            )  # fmt: skip
            r = _core.infonce(stats, scale=1.0)
            assert float(r.accuracy_rows) == float(r.accuracy_cols) == 0.0, (positive, chunk)
            assert float(r.loss_rows) == pytest.approx(np.log(n), abs=1e-6)
    # One row's positive just above the rest of its row: that row counts.
    above = lambda cols: jnp.zeros((n, cols.shape[0])).at[0, 0].set(1e-6)  # noqa: E731
    r = _core.infonce(_core.contrast(above, n_rows=n, n_cols=n, scale=1.0), scale=1.0)
    assert float(r.accuracy_rows) == pytest.approx(1 / n)
