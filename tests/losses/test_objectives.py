"""Every objective against the literal NumPy reference (values and gradients), the
chunked form against the plain one, and the invariants of SPEC sections 1-3."""

import functools
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from ovaib_jax import losses
from tests.losses import reference as ref

TAU = 0.1


def _z(m, n=5, d=7, seed=0):
    return jax.random.normal(jax.random.key(seed), (m, n, d), jnp.float32)


# name -> (kwargs for the library, reference fn of z returning (loss, aux))
CASES = {
    "ova_sufficiency": ({"tau": TAU}, lambda z: ref.ova_sufficiency(z, TAU)),
    "ova_sufficiency_excl": (
        {"tau": TAU, "exclude_positive": True},
        lambda z: ref.ova_sufficiency(z, TAU, exclude_positive=True),
    ),
    "ova_ib": ({"tau": TAU, "beta": 0.7}, lambda z: ref.ova_ib(z, TAU, 0.7)),
    "ova_ib_excl_raw_mu": (
        {"tau": TAU, "beta": 0.3, "exclude_positive": True, "normalize_minimality": False},
        lambda z: ref.ova_ib(z, TAU, 0.3, exclude_positive=True, normalize_minimality=False),
    ),
    "ova_sufficiency_shuffled": (
        {"tau": TAU, "negatives": "shuffled"},
        lambda z: ref.ova_sufficiency(z, TAU, shuffled=True),
    ),
    "pairwise_clip": ({"tau": TAU}, lambda z: ref.pairwise_clip(z, TAU)),
    "pairwise_clip_ib": ({"tau": TAU, "beta": 0.5}, lambda z: ref.pairwise_clip_ib(z, TAU, 0.5)),
    "pairwise_clip_ib_sq": (
        {"tau": TAU, "beta": 0.5, "alignment": "squared"},
        lambda z: ref.pairwise_clip_ib(z, TAU, 0.5, "squared"),
    ),
    "anchor_clip": ({"tau": TAU, "anchor": 1}, lambda z: ref.anchor_clip(z, TAU, 1)),
    "symile": ({"logit_scale": 3.0}, lambda z: ref.symile_n_cyclic(z, 3.0)),
    "symile_n_squared": (
        {"logit_scale": 3.0, "negatives": "n_squared"},
        lambda z: ref.symile_n_squared(z, 3.0),
    ),
    "gram": ({"tau": TAU, "anchor": 1}, lambda z: ref.gram(z, TAU, 1)),
    "gram_no_smoothing": (
        {"tau": TAU, "label_smoothing": 0.0},
        lambda z: ref.gram(z, TAU, 0, 0.0),
    ),
    "triangle": ({"tau": TAU, "anchor": 2}, lambda z: ref.triangle(z, TAU, 2)),
}


def _fn(case):
    for marker in ("_excl", "_no_", "_n_squared", "_sq", "_shuffled"):
        case = case.split(marker)[0]
    name = case
    return losses.get(name)


def _ms(case):
    if case == "triangle":
        return [3]
    if case == "symile_n_squared":
        return [2, 3, 4]  # N^(M-1) candidates: keep the literal reference small
    if case == "ova_sufficiency_shuffled":
        return [3, 4, 5, 6]  # an error at M = 2 (test_shuffled_negatives_need_three_modalities)
    return [2, 3, 4, 5, 6]


VALUE_PARAMS = [(c, m) for c in CASES for m in _ms(c)]


@pytest.mark.parametrize("case,m", VALUE_PARAMS)
def test_value_and_every_aux_entry_match_literal_reference(case, m):
    """The loss and EVERY aux value (per-term losses, MI bounds, accuracies, score
    statistics) against the literal reference; the aux keys must match too."""
    kwargs, reference = CASES[case]
    n = 4 if case == "symile_n_squared" else 5
    z = _z(m, n=n, seed=m)
    fn = _fn(case)
    got = fn(z, **kwargs)  # eager: op-by-op compiles are shared across cases
    want = reference(np.asarray(z))
    chex.assert_trees_all_close(got, want, rtol=2e-5, atol=2e-5)


class EagerAndJitTest(chex.TestCase):
    """Jitted and eager objectives give the reference's loss and every aux value."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*((c, c) for c in CASES))
    def test_matches_reference(self, case):
        kwargs, reference = CASES[case]
        z = _z(3, n=4)
        fn = self.variant(functools.partial(_fn(case), **kwargs))
        chex.assert_trees_all_close(fn(z), reference(np.asarray(z)), rtol=2e-5, atol=2e-5)


def _finite_difference_grad(f, x, eps=1e-5):
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += eps
        down[idx] -= eps
        g[idx] = (f(up) - f(down)) / (2 * eps)
    return g


@pytest.mark.parametrize("case", list(CASES))
def test_gradient_matches_finite_differences_of_reference(case):
    kwargs, reference = CASES[case]
    z = _z(3, n=4, d=3, seed=11)
    fn = _fn(case)
    grad = jax.jit(jax.grad(lambda z: fn(z, **kwargs)[0]))(z)
    expected = _finite_difference_grad(lambda z: reference(z)[0], z)
    np.testing.assert_allclose(np.asarray(grad), expected, rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("chunk", [3])  # 8 = 3 + 3 + 2: several blocks and a padded one
def test_chunked_equals_plain(case, chunk):
    kwargs, _ = CASES[case]
    m = 3
    z = _z(m, n=8, d=6, seed=3)
    fn = _fn(case)

    def value_and_grad(chunk_size):
        f = lambda z: fn(z, chunk_size=chunk_size, **kwargs)  # noqa: E731
        (loss, aux), grad = jax.jit(jax.value_and_grad(f, has_aux=True))(z)
        return loss, aux, grad

    loss, aux, grad = value_and_grad(None)
    loss_c, aux_c, grad_c = value_and_grad(chunk)
    np.testing.assert_allclose(float(loss_c), float(loss), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(grad_c), np.asarray(grad), rtol=1e-4, atol=1e-6)
    for k in aux:
        np.testing.assert_allclose(float(aux_c[k]), float(aux[k]), rtol=1e-5, atol=1e-6, err_msg=k)


def test_chunked_memory_is_bounded():
    """Compiled temporary memory of the chunked forward+backward stays far below the
    plain form's N x N score matrices, and grows linearly (not quadratically) in N."""

    def temp_bytes(n, chunk):
        z = jax.ShapeDtypeStruct((3, n, 32), jnp.float32)
        f = jax.grad(lambda z: losses.ova_ib(z, chunk_size=chunk)[0])
        return jax.jit(f).lower(z).compile().memory_analysis().temp_size_in_bytes

    plain = temp_bytes(2048, None)
    chunked_1k, chunked_2k = temp_bytes(1024, 128), temp_bytes(2048, 128)
    assert plain > 2048 * 2048 * 4  # the plain form holds at least one N x N matrix
    assert chunked_2k < plain / 4
    assert chunked_2k < 2.6 * chunked_1k  # linear growth: x2 N -> ~x2 memory, not x4


def test_minimality_identity_with_unnormalised_mu():
    """SPEC section 2: with mu = z, (1/M) sum_m ||z_m - mean_-m||^2
    = sum_{i<j} ||z_i - z_j||^2 / (M-1)^2 (averaged over samples)."""
    for m in (2, 3, 5):
        z = _z(m, n=6, d=4, seed=m)
        loss, _ = losses.ova_minimality(z, normalize=False)
        zn = np.asarray(z, np.float64)
        pair_sum = sum(
            np.sum((zn[i] - zn[j]) ** 2, axis=-1) for i, j in itertools.combinations(range(m), 2)
        )
        np.testing.assert_allclose(float(loss), np.mean(pair_sum) / (m - 1) ** 2, rtol=1e-5)


def test_ova_score_for_two_modalities_is_abs_cos():
    z = _z(2, n=6, d=5, seed=4)
    s = losses.ova_score(z[:1], z[1])  # query modality 0, candidates modality 1
    zn = np.asarray(z, np.float64)
    zn /= np.linalg.norm(zn, axis=-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(s), np.abs(zn[0] @ zn[1].T), rtol=1e-5, atol=1e-6)
    # And the M = 2 sufficiency loss is InfoNCE on |cos| / tau in both directions.
    loss, _ = losses.ova_sufficiency(z, tau=TAU)
    c = np.abs(zn[0] @ zn[1].T) / TAU
    expected = 0.5 * (ref._ce_rows(c) + ref._ce_rows(c.T))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def _pair_matmuls(m):
    """Forward N x N matmuls of the two-halves path: with the halves R (modalities
    <= (M-1)/2, queries as rows) and C, each pair of an R and a C modality once (shared by
    the two), and one per basis vector of each modality's own half (M = 8: 16 + 24)."""
    rows = sum(1 for k in range(m) if 2 * k <= m - 1)
    cols = m - rows
    return rows * cols + rows * (rows - 1) + cols * (cols - 1)


@pytest.mark.parametrize(
    "m, exclude_positive, lam, product_weight, chunk_size",
    [
        (2, False, 1e-8, 0.0, None),
        (2, True, 0.5, 0.0, 6),  # a chunk as wide as the batch is one block too
        (3, False, 1e-8, 0.0, None),
        (3, True, 0.5, 0.7, None),
        (4, False, 0.5, "traced", None),
        (4, True, 1e-8, 0.0, 6),
        (6, True, 0.5, 0.0, None),
        (7, False, 0.5, 0.7, None),  # (the product term: M = 3, 4, 7; odd M: 3, 7)
        (8, True, 1e-8, 0.0, None),
    ],
)
def test_shared_pair_path_equals_general_path(m, exclude_positive, lam, product_weight, chunk_size):
    """Batch negatives, one device, one block, M <= 8 take the two-halves path (the
    projections on the other half's basis from the pair matrices U_r U_c^T, shared by
    their two modalities, half the modalities reduced over columns): value, every aux
    entry and the gradients in z, tau and a traced product weight equal the general
    path's (stacked bases, forced by chunking), which the literal reference checks. Rows
    of very small norm (their unit vectors are shorter than 1, so guard factors differ
    between candidates)."""
    n = 6
    # d >= M - 1: with fewer dimensions than remaining vectors, a residual is rounding
    # noise, which the guard scales by 1 / sqrt(lam), and the two paths' gradients agree
    # only to that noise.
    d = max(5, m)
    shared = jax.random.normal(jax.random.key(3), (1, n, d))
    z = shared + 0.8 * jax.random.normal(jax.random.key(4 + m), (m, n, d))
    z = z.at[1, 2].multiply(1e-13).at[m - 1, 4].multiply(3e-13)  # |u| about 0.3 and 0.8
    traced = product_weight == "traced"

    def run(z, tau, w, chunk_size):
        return losses.ova_ib(
            z, tau=tau, beta=0.4, lam=lam, exclude_positive=exclude_positive,
            product_weight=w if traced else product_weight, chunk_size=chunk_size,
        )  # fmt: skip

    args = (z, jnp.float32(TAU), jnp.float32(0.6))
    fast = jax.jit(
        jax.value_and_grad(functools.partial(run, chunk_size=chunk_size), (0, 1, 2), has_aux=True)
    )
    general = jax.jit(
        jax.value_and_grad(functools.partial(run, chunk_size=2), (0, 1, 2), has_aux=True)
    )
    (loss, aux), grads = fast(*args)
    (want_loss, want_aux), want_grads = general(*args)
    chex.assert_trees_all_close((loss, aux), (want_loss, want_aux), rtol=1e-5, atol=1e-6)
    # (The short rows' gradients are ~1e11, through 1 / |z|: float32 rounding of two
    # summation orders reaches a relative 2e-4 there.)
    chex.assert_trees_all_close(grads, want_grads, rtol=5e-4, atol=1e-6)
    # The case tests something: the modalities differ, and accuracies are not all 0 or 1.
    terms = [float(aux[f"sufficiency/m{k}"]) for k in range(m)]
    assert max(terms) - min(terms) > 1e-3
    assert any(0 < float(aux[f"accuracy/m{k}"]) < 1 for k in range(m))
    # The pair matmuls forward (and one per modality for a product term), where the
    # stacked bases take one per modality and remaining modality.
    dots = [
        e
        for e in jax.make_jaxpr(lambda *a: run(*a, None)[0])(*args).jaxpr.eqns
        if e.primitive.name == "dot_general"
    ]
    with_product = traced or product_weight != 0.0
    assert len(dots) == _pair_matmuls(m) + (m if with_product else 0)


def test_shared_pair_path_on_a_mesh_axis_of_size_one():
    """Single-device training runs the objective inside ``jax.shard_map`` over a mesh axis
    of size 1, which also takes the shared-pair path: value and the gradients in z and a
    traced lam equal the unsharded general path's (stacked bases, forced by chunking), and
    the sharded jaxpr has the pair path's matmul count."""
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    m = 3
    z = _z(m, n=6, d=5, seed=7)

    def loss(z, lam, **kw):
        return losses.ova_ib(z, tau=TAU, beta=0.4, lam=lam, **kw)[0]

    sharded = jax.shard_map(
        functools.partial(loss, axis_name="data"),
        mesh=mesh,
        in_specs=(jax.sharding.PartitionSpec(None, "data"), jax.sharding.PartitionSpec()),
        out_specs=jax.sharding.PartitionSpec(),
    )
    args = (z, jnp.float32(0.3))
    got = jax.jit(jax.value_and_grad(sharded, (0, 1)))(*args)
    want = jax.jit(jax.value_and_grad(functools.partial(loss, chunk_size=2), (0, 1)))(*args)
    chex.assert_trees_all_close(got, want, rtol=1e-4, atol=1e-6)
    assert abs(float(want[1][1])) > 1e-6  # lam's gradient is not trivially zero
    jaxpr = jax.make_jaxpr(sharded)(*args)
    inner = next(e for e in jaxpr.jaxpr.eqns if e.primitive.name == "shard_map")
    n_dots = sum(e.primitive.name == "dot_general" for e in inner.params["jaxpr"].eqns)
    assert n_dots == _pair_matmuls(m)


def test_nine_modalities_take_the_stacked_bases():
    """Above M = 8 the stacked bases are kept (untimed there, and quicker to compile):
    one matmul per modality against all its candidates' stacked basis vectors."""
    z = _z(9, n=4, d=6)
    jaxpr = jax.make_jaxpr(lambda z: losses.ova_sufficiency(z, tau=TAU)[0])(z).jaxpr
    assert sum(e.primitive.name == "dot_general" for e in jaxpr.eqns) == 9


@pytest.mark.parametrize("lam", [0.5, 3.0])
def test_lam_is_passed_on_two_modality_closed_form(lam):
    """M = 2: the remaining span is the single vector z_k. Normalised, its Gram-Schmidt
    residual is r = 1, and ``span_basis`` weights the squared projection of the unit query
    on it by r / (r + lam) (the ridge shrinkage, docstrings of ``span_basis`` and
    ``ova_sufficiency``), so the guarded score is |cos(z_1, z_2)| / sqrt(1 + lam). (The
    SPEC's cos(z, zbar) would not see lam at M = 2: the library's lam is a guard on the
    normalised vectors, documented as exact only for lam -> 0.) A large lam makes a
    dropped or defaulted lam visible in the losses and in the scorer."""
    z = _z(2, n=5, d=4, seed=21)
    zn = np.asarray(z, np.float64)
    zn /= np.linalg.norm(zn, axis=-1, keepdims=True)
    s = np.abs(zn[0] @ zn[1].T) / np.sqrt(1.0 + lam)  # s[i, j]: z[0, i] against z[1, j]
    suff = 0.5 * (ref._ce_rows(s / TAU) + ref._ce_rows(s.T / TAU))  # m = 0 rows, m = 1 cols
    minimality = np.mean(np.sum((zn[0] - zn[1]) ** 2, axis=-1))  # same for m = 0 and 1
    got = jax.jit(  # lam stays a Python float: validated, then used as a constant
        lambda z: (
            losses.ova_sufficiency(z, tau=TAU, lam=lam)[0],
            losses.ova_ib(z, tau=TAU, beta=0.7, lam=lam)[0],
            losses.ova_score(z[:1], z[1], lam=lam),
            losses.ova_score(z[1:], z[0], lam=lam),
        )
    )(z)
    want = (suff, suff + 0.7 * minimality, s, s.T)
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)


def test_lam_is_passed_on_three_modalities():
    """M = 3 with a large lam, against the literal guarded score (Gram-Schmidt in modality
    order, ``reference.ova_score_guarded``): every aux value of ova_sufficiency and ova_ib,
    and the scorer with two query modalities."""
    lam = 0.5
    z = _z(3, n=4, d=5, seed=22)
    zn = np.asarray(z, np.float64)
    got = jax.jit(
        lambda z: (
            losses.ova_sufficiency(z, tau=TAU, lam=lam),
            losses.ova_ib(z, tau=TAU, beta=0.7, lam=lam),
            losses.ova_score(z[:2], z[2], lam=lam),
        )
    )(z)
    want = (
        ref.ova_sufficiency(zn, TAU, lam, guarded=True),
        ref.ova_ib(zn, TAU, 0.7, lam, guarded=True),
        np.array([[ref.ova_score_guarded(c, zn[:2, i], lam) for c in zn[2]] for i in range(4)]),
    )
    chex.assert_trees_all_close(got, want, rtol=2e-5, atol=2e-5)


def test_ova_score_is_invariant_to_scale_and_sign_of_remaining_embeddings():
    z = _z(4, n=6, d=8, seed=5)
    scaled = z.at[1].multiply(-3.0).at[2].multiply(1e-3)
    a, _ = losses.ova_sufficiency(z, tau=TAU)
    b, _ = losses.ova_sufficiency(scaled, tau=TAU)
    np.testing.assert_allclose(float(a), float(b), rtol=1e-5)


def test_projector_ablation_matches_reference():
    w = jax.random.normal(jax.random.key(9), (2 * 7, 7))

    def projector(rest, m):  # a fixed "MLP": tanh(concat(rest) W + m)
        flat = jnp.concatenate(list(rest), axis=-1)
        return jnp.tanh(flat @ w + m)

    def np_projector(rest, m):
        flat = np.concatenate(list(rest), axis=-1)
        return np.tanh(flat @ np.asarray(w, np.float64) + m)

    z = _z(3, n=5, d=7, seed=6)
    got = losses.ova_sufficiency(z, tau=TAU, projector=projector)
    expected = ref.ova_sufficiency(np.asarray(z), TAU, projector=np_projector)
    chex.assert_trees_all_close(got, expected, rtol=1e-5, atol=1e-5)


def test_product_projector_matches_reference_and_sees_signs():
    z = _z(4, n=6, d=8, seed=11)
    loss, aux = losses.ova_sufficiency(z, tau=TAU, projector=losses.product_projector)
    expected = ref.ova_sufficiency(
        np.asarray(z), TAU, projector=lambda rest, m: np.prod(rest, axis=0)
    )
    chex.assert_trees_all_close((loss, aux), expected, rtol=1e-5, atol=1e-5)
    # Flipping one modality's sign leaves the span (the projection score) unchanged but
    # flips every product that contains it: the product projector's loss moves.
    flipped = z.at[1].multiply(-1.0)
    moved, _ = losses.ova_sufficiency(flipped, tau=TAU, projector=losses.product_projector)
    assert abs(float(moved) - float(loss)) > 1e-3
    q, c = z[:3], z[3]
    want = np.prod(np.asarray(q, np.float64), axis=0)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    cands = np.asarray(c, np.float64) / np.linalg.norm(np.asarray(c), axis=1, keepdims=True)
    got = losses.projector_score(q, c, projector=losses.product_projector, m=3)
    np.testing.assert_allclose(np.asarray(got), want @ cands.T, rtol=1e-5, atol=1e-6)
    # The score is a cosine, so it cannot depend on the norms: at norms 1e-6 and 1e6 (a
    # product of three such vectors is 1e-18 or 1e18) the loss is the unit vectors'.
    unit = z / jnp.linalg.norm(z, axis=-1, keepdims=True)
    for scale in (1e-6, 1e6):
        scaled, _ = losses.ova_sufficiency(
            scale * unit, tau=TAU, projector=losses.product_projector
        )
        np.testing.assert_allclose(float(scaled), float(loss), rtol=1e-5, err_msg=str(scale))


@pytest.mark.parametrize("negatives", ["batch", "shuffled"])
@pytest.mark.parametrize("chunk", [None, 4])
def test_span_plus_product_score_matches_reference(negatives, chunk):
    z = _z(4, n=6, d=8, seed=12)
    kw = {"tau": TAU, "product_weight": 0.7, "negatives": negatives, "chunk_size": chunk}
    loss, aux = losses.ova_sufficiency(z, **kw)
    expected = ref.ova_sufficiency(
        np.asarray(z), TAU, product_weight=0.7, shuffled=negatives == "shuffled"
    )
    chex.assert_trees_all_close((loss, aux), expected, rtol=1e-5, atol=1e-5)
    # The product term sees the sign of a remaining embedding; the paper's score does not.
    flipped = z.at[1].multiply(-1.0)
    moved, _ = losses.ova_sufficiency(flipped, **kw)
    assert abs(float(moved) - float(loss)) > 1e-3
    base, _ = losses.ova_sufficiency(z, tau=TAU, negatives=negatives, chunk_size=chunk)
    same, _ = losses.ova_sufficiency(flipped, tau=TAU, negatives=negatives, chunk_size=chunk)
    np.testing.assert_allclose(float(base), float(same), rtol=1e-5)
    # ova_ib passes it on; the scorer scores retrieval the same way.
    ib, _ = losses.ova_ib(
        z, tau=TAU, beta=0.0, product_weight=0.7, negatives=negatives, chunk_size=chunk
    )
    np.testing.assert_allclose(float(ib), float(loss), rtol=1e-6)
    got = np.asarray(losses.ova_score(z[:3], z[3], product_weight=0.7))
    zn = np.asarray(z, np.float64)
    want = [[ref.ova_score_pair(c, zn[:3, i], 1e-8, 0.7) for c in zn[3]] for i in range(6)]
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


def test_span_plus_product_score_bad_arguments():
    z = _z(3, n=4, d=5, seed=1)
    with pytest.raises(ValueError, match="product_weight must be a finite number >= 0"):
        losses.ova_sufficiency(z, product_weight=-1.0)
    with pytest.raises(ValueError, match="cannot be combined with a projector"):
        losses.ova_sufficiency(z, product_weight=1.0, projector=losses.product_projector)


def test_symile_key_changes_negatives_but_not_positives():
    z = _z(3, n=16, d=4, seed=7)
    l1, a1 = losses.symile(z, key=jax.random.key(1))
    l2, a2 = losses.symile(z, key=jax.random.key(2))
    l1b, _ = losses.symile(z, key=jax.random.key(1))
    assert float(l1) == float(l1b)
    assert float(l1) != float(l2)
    np.testing.assert_allclose(float(a1["pos_score"]), float(a2["pos_score"]), rtol=1e-6)


def test_well_separated_aligned_samples_are_retrieved_by_every_objective():
    """Sample i of modality k is e_i + 0.3 e_{8+k}: the modalities of a sample are close
    but not identical (identical ones make GRAM's volume degenerate for every candidate),
    and different samples are orthogonal: every objective retrieves in-batch."""
    n, m = 8, 3
    z = jnp.stack([jnp.eye(n, 16) + 0.3 * jnp.eye(1, 16, n + k) for k in range(m)])
    for name in losses.names():
        _, aux = losses.get(name)(z)
        assert float(aux["accuracy"]) == 1.0, name
        assert float(aux["pos_score"]) > float(aux["neg_score"]), name


def test_vmap_over_independent_problems():
    zs = jax.random.normal(jax.random.key(8), (2, 3, 4, 5))
    fn = lambda z: losses.ova_ib(z, tau=TAU)[0]  # noqa: E731
    batched = jax.jit(jax.vmap(fn))(zs)
    looped = [float(jax.jit(fn)(z)) for z in zs]
    np.testing.assert_allclose(np.asarray(batched), looped, rtol=1e-5)


@pytest.mark.parametrize(
    "name,param,value,reference",
    [
        ("ova_ib", "tau", 0.1, lambda z, t: ref.ova_ib(z, t)[0]),
        ("pairwise_clip_ib", "tau", 0.2, lambda z, t: ref.pairwise_clip_ib(z, t)[0]),
        ("symile", "logit_scale", 2.0, lambda z, s: ref.symile_n_cyclic(z, s)[0]),
        ("gram", "tau", 0.1, lambda z, t: ref.gram(z, t)[0]),
    ],
)
def test_learnable_temperature_gradient_matches_finite_differences(name, param, value, reference):
    """The gradient of the loss with respect to a traced temperature (a learnable one
    lives in the model) against central differences of the literal reference."""
    z = _z(3, n=6)
    grad = jax.jit(jax.grad(lambda t: losses.get(name)(z, **{param: t})[0]))(value)
    x, eps = np.asarray(z, np.float64), 1e-6 * value
    expected = (reference(x, value + eps) - reference(x, value - eps)) / (2 * eps)
    chex.assert_trees_all_close(grad, expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("fn", [losses.ova_sufficiency, losses.ova_ib])
def test_shuffled_negatives_need_three_modalities(fn):
    """At M = 2 the one remaining modality's shuffled rows are the batch's own vectors: the
    positive would stand among its own negatives. One error naming the fix."""
    z = _z(2, n=5)
    with pytest.raises(ValueError, match=r"needs M >= 3 modalities.*Use negatives='batch'"):
        fn(z, tau=TAU, negatives="shuffled")
    fn(_z(3, n=5), tau=TAU, negatives="shuffled")  # M = 3 runs
