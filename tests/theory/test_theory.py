"""Numeric checks of the claims in docs/THEORY.md, on small discrete distributions.

Every information measure is computed by exact enumeration (``tests/theory/info.py``)
and every check compares with a value computed by hand or with an exact identity, so each
test fails if the claim (or the code it exercises) is wrong. Section numbers refer to
docs/THEORY.md.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from ovaib_jax.losses import ova_minimality, ova_score, ova_sufficiency
from tests.theory import info, nets

LOG2 = math.log(2.0)
H_01 = 0.4689955935892812  # binary entropy h(0.1) in bits, by hand: -0.1 log2 0.1 - 0.9 log2 0.9


def xor3(k: int = 1) -> np.ndarray:
    """p(a, b, c) for a, b uniform on Z_2^k and c = a ^ b."""
    n = 2**k
    return info.joint(lambda a, b: (a, b, a ^ b), [range(n), range(n)])


def copies(m: int) -> np.ndarray:
    """p(x_1, ..., x_m) for m copies of one uniform bit."""
    return info.joint(lambda x: (x,) * m, [range(2)])


def parity(m: int) -> np.ndarray:
    """m - 1 uniform bits and their parity."""
    return info.joint(lambda *x: (*x, sum(x) % 2), [range(2)] * (m - 1))


def random_joint(shape, seed) -> np.ndarray:
    p = np.random.default_rng(seed).dirichlet(np.ones(int(np.prod(shape)))).reshape(shape)
    return p


# --------------------------------------------------------------------------------------
# 0. The measures themselves, against values computed by hand.


def test_measures_on_xor_match_hand_values():
    p = xor3()
    assert info.entropy(p) == pytest.approx(2.0)
    assert info.mutual_information(p, [0], [1]) == pytest.approx(0.0, abs=1e-12)
    assert info.mutual_information(p, [0], [2]) == pytest.approx(0.0, abs=1e-12)
    assert info.conditional_mi(p, [0], [1], [2]) == pytest.approx(1.0)
    assert info.mutual_information(p, [2], [0, 1]) == pytest.approx(1.0)
    assert info.total_correlation(p) == pytest.approx(1.0)
    assert info.dual_total_correlation(p) == pytest.approx(2.0)
    assert info.one_vs_all_sum(p) == pytest.approx(3.0)


def test_measures_on_copies_and_independent_bits():
    p = copies(3)
    assert info.total_correlation(p) == pytest.approx(2.0)
    assert info.dual_total_correlation(p) == pytest.approx(1.0)
    assert info.mutual_information(p, [0], [1]) == pytest.approx(1.0)
    assert info.conditional_mi(p, [0], [1], [2]) == pytest.approx(0.0, abs=1e-12)
    ind = info.joint(lambda a, b, c: (a, b, c), [range(2)] * 3)
    for measure in (info.total_correlation, info.dual_total_correlation, info.one_vs_all_sum):
        assert measure(ind) == pytest.approx(0.0, abs=1e-12)


def test_binary_symmetric_channel_mi():
    # x uniform, z = x flipped with probability 0.1: I(x; z) = 1 - h(0.1).
    p = info.joint(lambda x, e: (x, x ^ e), [range(2), range(2)], lambda x, e: 0.1 if e else 0.9)
    assert info.mutual_information(p, [0], [1]) == pytest.approx(1.0 - H_01, abs=1e-12)
    assert info.binary_entropy(0.1) == pytest.approx(H_01, abs=1e-15)


# --------------------------------------------------------------------------------------
# 1. Theorem 3.4 (minimality): E KL(p(z|x_m) || r(z|x_-m)) bounds I(z_m; x_m | x_-m),
#    not I(z_m; x_m).


def _minimality_terms(p: np.ndarray, enc: list[np.ndarray], m: int):
    """For a joint p(x_1..x_M) and encoders enc[i][x_i, z] (row-stochastic), returns
    (rhs, cmi, excess, mi): rhs = E_x KL(p(z|x_m) || r(z|x_-m)) with r the normalised
    product of the other encoders (Theorem 3.4's right-hand side), cmi = I(z_m; x_m | x_-m),
    excess = E_{x_-m} KL(p(z_m|x_-m) || r(.|x_-m)), mi = I(z_m; x_m); all in bits."""
    big_m, nz = p.ndim, enc[m].shape[1]
    others = [i for i in range(big_m) if i != m]
    rhs = 0.0
    for x in np.ndindex(p.shape):
        if p[x] == 0:
            continue
        r = np.prod([enc[i][x[i]] for i in others], axis=0)
        rhs += p[x] * info.kl(enc[m][x[m]], r / r.sum())
    # joint of (x_1..x_M, z_m)
    shape = [p.shape[i] if i == m else 1 for i in range(big_m)] + [nz]
    pz = p[..., None] * enc[m].reshape(shape)
    zax = big_m
    cmi = info.conditional_mi(pz, [m], [zax], others)
    mi = info.mutual_information(pz, [m], [zax])
    excess = 0.0
    p_rest = info.marginal(p, others)
    pz_rest = info.marginal(pz, [*others, zax])
    for xr in np.ndindex(p_rest.shape):
        if p_rest[xr] == 0:
            continue
        full = [0] * big_m
        for j, i in enumerate(others):
            full[i] = xr[j]
        r = np.prod([enc[i][full[i]] for i in others], axis=0)
        excess += p_rest[xr] * info.kl(pz_rest[xr] / p_rest[xr], r / r.sum())
    return rhs, cmi, excess, mi


def _bsc(eps: float) -> np.ndarray:
    return np.array([[1 - eps, eps], [eps, 1 - eps]])


@pytest.mark.parametrize("big_m", [2, 3])
def test_theorem_3_4_fails_for_identical_copies(big_m):
    # x_1 = ... = x_M one uniform bit, every encoder the same binary symmetric channel.
    enc = [_bsc(0.1)] * big_m
    rhs, cmi, _, mi = _minimality_terms(copies(big_m), enc, 0)
    assert mi == pytest.approx(1.0 - H_01, abs=1e-12)  # I(z_1; x_1) = 0.531 bits
    assert cmi == pytest.approx(0.0, abs=1e-12)  # nothing in x_1 beyond x_-1
    if big_m == 2:
        assert rhs == pytest.approx(0.0, abs=1e-12)  # the KL term is exactly 0
    else:
        # r = normalised p(z|x)^2 = (0.81, 0.01) / 0.82: KL by hand, 0.1827 bits
        r = np.array([0.81, 0.01]) / 0.82
        by_hand = 0.9 * math.log2(0.9 / r[0]) + 0.1 * math.log2(0.1 / r[1])
        assert rhs == pytest.approx(by_hand, abs=1e-12)
    assert rhs < mi  # the theorem as stated fails


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shape", [(2, 3), (3, 2, 2), (2, 2, 2, 2)])
def test_theorem_3_4_corrected_identity(shape, seed):
    # E KL(p(z|x_m) || r(z|x_-m)) = I(z_m; x_m | x_-m) + E KL(p(z_m|x_-m) || r(.|x_-m))
    # for any joint, any encoders and any reference r that depends on x_-m only.
    rng = np.random.default_rng(seed)
    p = random_joint(shape, seed)
    enc = [rng.dirichlet(np.ones(3), size=s) for s in shape]
    for m in range(len(shape)):
        rhs, cmi, excess, _ = _minimality_terms(p, enc, m)
        assert rhs == pytest.approx(cmi + excess, abs=1e-10)
        assert rhs >= cmi - 1e-12 and excess >= -1e-12


@pytest.mark.parametrize("seed", range(3))
def test_theorem_3_4_holds_when_x_m_independent_of_the_rest(seed):
    # If x_m is independent of x_-m, I(z_m; x_m | x_-m) = I(z_m; x_m): the bound as stated.
    rng = np.random.default_rng(seed)
    p = np.einsum("i,jk->ijk", rng.dirichlet(np.ones(3)), random_joint((2, 2), seed + 10))
    enc = [rng.dirichlet(np.ones(3), size=s) for s in p.shape]
    rhs, cmi, _, mi = _minimality_terms(p, enc, 0)
    assert cmi == pytest.approx(mi, abs=1e-12)
    assert rhs >= mi - 1e-12


@pytest.mark.parametrize("big_m", [2, 3, 5])
def test_gaussian_form_of_the_minimality_kl(big_m):
    # KL(N(mu_m, s^2) || normalised prod_{i != m} N(mu_i, s^2)) in 1-D, by quadrature, equals
    # (M-1)/(2 s^2) (mu_m - mean_{-m} mu)^2 + (M - 2 - ln(M-1)) / 2 (nats): SPEC section 2's
    # L_M^m up to a factor, plus a constant that is > 0 for M >= 3.
    s = 0.7
    mu = np.random.default_rng(big_m).normal(size=big_m)
    grid = np.linspace(-15, 15, 60001)
    dz = grid[1] - grid[0]

    def log_normal(mean):
        return -0.5 * ((grid - mean) / s) ** 2 - math.log(s * math.sqrt(2 * math.pi))

    log_p = log_normal(mu[0])
    log_r = sum(log_normal(x) for x in mu[1:])
    log_r -= np.log(np.exp(log_r - log_r.max()).sum() * dz) + log_r.max()
    kl = float((np.exp(log_p) * (log_p - log_r)).sum() * dz)
    mean_rest = mu[1:].mean()
    formula = (big_m - 1) / (2 * s**2) * (mu[0] - mean_rest) ** 2 + (
        big_m - 2 - math.log(big_m - 1)
    ) / 2
    assert kl == pytest.approx(formula, abs=1e-7)


# --------------------------------------------------------------------------------------
# 2. Theorem 3.3 (the DTC sandwich) and what it says about TC.


@pytest.mark.parametrize(
    "p", [random_joint((2, 3, 2), 0), random_joint((2, 2, 2, 2), 1), random_joint((3, 2, 2), 2)]
)
def test_sandwich_holds_for_dtc_and_for_tc(p):
    big_m = p.ndim
    s = info.one_vs_all_sum(p)
    tc, dtc = info.total_correlation(p), info.dual_total_correlation(p)
    assert s == pytest.approx(tc + dtc, abs=1e-12)
    for x in (tc, dtc):
        assert s / big_m - 1e-12 <= x <= (big_m - 1) / big_m * s + 1e-12


@pytest.mark.parametrize("big_m", [3, 4])
def test_sandwich_is_tight_at_both_ends_parity_and_copies(big_m):
    # parity: TC = 1, DTC = M - 1; copies: TC = M - 1, DTC = 1; S = M bits for both.
    par, cop = parity(big_m), copies(big_m)
    assert info.total_correlation(par) == pytest.approx(1.0)
    assert info.dual_total_correlation(par) == pytest.approx(big_m - 1)
    assert info.total_correlation(cop) == pytest.approx(big_m - 1)
    assert info.dual_total_correlation(cop) == pytest.approx(1.0)
    assert info.one_vs_all_sum(par) == pytest.approx(big_m)
    assert info.one_vs_all_sum(cop) == pytest.approx(big_m)


def test_k_bit_xor_has_tc_k_and_dtc_2k():
    p = xor3(k=2)
    assert info.total_correlation(p) == pytest.approx(2.0)
    assert info.dual_total_correlation(p) == pytest.approx(4.0)
    assert info.one_vs_all_sum(p) == pytest.approx(6.0)
    for i, j in [(0, 1), (0, 2), (1, 2)]:  # every pair independent: pairwise objectives see 0
        assert info.mutual_information(p, [i], [j]) == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------------------
# 3. The sufficiency bound: what log N - L_m bounds.


def _xor_query_c() -> np.ndarray:
    """p(x, y) with x = c and y = (a, b) as one variable of 4 values (index 2a + b)."""
    p = np.zeros((2, 4))
    for a in range(2):
        for b in range(2):
            p[a ^ b, 2 * a + b] = 0.25
    return p


def _copies_query_1() -> np.ndarray:
    """p(x, y) with x = x_1 and y = (x_2, x_3) for three copies of one bit."""
    p = np.zeros((2, 4))
    p[0, 0] = p[1, 3] = 0.5
    return p


def _optimal_critic(pxy: np.ndarray, q_y: np.ndarray) -> np.ndarray:
    denom = pxy.sum(1, keepdims=True) * q_y[None]
    ratio = np.divide(pxy, denom, out=np.ones_like(pxy), where=pxy > 0)
    return np.where(pxy > 0, np.log(ratio), -1e3)


def test_infonce_with_batch_negatives_hand_value_and_bound():
    # Optimal critic on XOR (query c), N = 3: each negative is consistent with c w.p. 1/2,
    # so E L = E log(1 + Binomial(2, 1/2)) = (1/2) log 2 + (1/4) log 3 (the SPEC floor).
    pxy = _xor_query_c()
    bound = info.infonce_bound(pxy, _optimal_critic(pxy, pxy.sum(0)), 3)
    assert bound == pytest.approx(0.75 * math.log(3) - 0.5 * LOG2, abs=1e-12)
    assert bound <= LOG2  # I(c; (a, b)) = 1 bit
    rng = np.random.default_rng(0)
    for pxy in (_xor_query_c(), _copies_query_1(), random_joint((2, 4), 3)):
        mi = info.mutual_information(pxy, [0], [1], base=math.e)
        for n in (2, 3, 4):
            for _ in range(5):
                critic = rng.normal(scale=3.0, size=pxy.shape)
                assert info.infonce_bound(pxy, critic, n) <= mi + 1e-12
            assert info.infonce_bound(pxy, _optimal_critic(pxy, pxy.sum(0)), n) <= mi + 1e-12


def test_shuffled_negatives_bound_tc_not_the_one_vs_all_mi():
    # Copies of one bit, query x_1, N = 3, negatives from p(x_2) p(x_3) (each consistent
    # w.p. 1/4): log 3 - E log(1 + Binomial(2, 1/4)) = 0.7700 nats > I(x_1; x_2, x_3) = log 2,
    # and <= TC = 2 log 2.
    pxy = _copies_query_1()
    q = np.full(4, 0.25)
    bound = info.infonce_bound(pxy, _optimal_critic(pxy, q), 3, q_y=q)
    by_hand = math.log(3) - (6 / 16) * LOG2 - (1 / 16) * math.log(3)
    assert bound == pytest.approx(by_hand, abs=1e-12)
    assert bound > LOG2  # exceeds I(x_1; (x_2, x_3)): not a bound on it
    assert bound <= 2 * LOG2
    rng = np.random.default_rng(1)
    p3 = random_joint((2, 2, 2), 5)
    tc = info.total_correlation(p3, base=math.e)
    pxy3 = p3.reshape(2, 4)
    q3 = np.outer(info.marginal(p3, [1]), info.marginal(p3, [2])).reshape(4)
    for n in (2, 3, 4):
        for _ in range(5):
            critic = rng.normal(scale=3.0, size=(2, 4))
            assert info.infonce_bound(pxy3, critic, n, q_y=q3) <= tc + 1e-12
        assert info.infonce_bound(pxy3, _optimal_critic(pxy3, q3), n, q_y=q3) <= tc + 1e-12


def test_excluded_positive_reports_more_than_the_information():
    # Constant embeddings: z_m independent of z_-m (I = 0), every score equal. The
    # library's reported log N - L_m is 0 with the positive in the denominator and
    # log(N / (N - 1)) > 0 with exclude_positive=True (the paper's literal form).
    n = 8
    z = jnp.ones((2, n, 4))
    _, aux = ova_sufficiency(z, tau=0.1)
    _, aux_ex = ova_sufficiency(z, tau=0.1, exclude_positive=True)
    assert float(aux["mi_bound/m0"]) == pytest.approx(0.0, abs=1e-5)
    assert float(aux_ex["mi_bound/m0"]) == pytest.approx(math.log(n / (n - 1)), abs=1e-5)


# --------------------------------------------------------------------------------------
# 4. Synergy and the minimality term.


def _xor_table_embeddings(mu_c: np.ndarray, k: int):
    """All (a, b) pairs of Z_2^k: indices and mu_c(a ^ b)."""
    n = 2**k
    a, b = np.divmod(np.arange(n * n), n)
    return a, b, mu_c[a ^ b]


@pytest.mark.parametrize("k", [1, 2])
def test_minimality_floor_on_xor_is_the_variance_of_the_embedding(k):
    # On XOR, min over mu_a, mu_b of E || mu_c(a ^ b) - (mu_a(a) + mu_b(b)) / 2 ||^2 is
    # Var(mu_c) = E || mu_c - E mu_c ||^2: every non-constant character of c is orthogonal
    # to the additive functions of (a, b). Least squares over the additive design.
    rng = np.random.default_rng(k)
    n, d = 2**k, 3
    mu_c = rng.normal(size=(n, d))
    a, b, target = _xor_table_embeddings(mu_c, k)
    design = np.concatenate([np.eye(n)[a], np.eye(n)[b]], axis=1)  # (mu_a + mu_b) / 2
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    resid = float(((design @ coef - target) ** 2).sum(1).mean())
    var = float(((mu_c - mu_c.mean(0)) ** 2).sum(1).mean())
    assert resid == pytest.approx(var, rel=1e-10)
    # for redundant copies the same term is 0 with non-constant embeddings
    copies_loss = ova_minimality(jnp.stack([jnp.asarray(mu_c)] * 3), normalize=False)[0]
    assert float(copies_loss) == pytest.approx(0.0, abs=1e-5)
    assert var > 0.1


@pytest.mark.parametrize("big_m", [3, 4])
def test_library_minimality_is_bounded_below_on_parity(big_m):
    # Parity of M - 1 bits: L_M^m >= Var(mu_m) for every modality m and any encoders, with
    # the library's (L2-normalised) minimality term.
    rng = np.random.default_rng(big_m)
    p = parity(big_m)
    xs = np.array(list(np.ndindex(p.shape)))[p.reshape(-1) > 0]  # the 2^(M-1) samples
    for _ in range(5):
        tables = [rng.normal(size=(2, 4)) for _ in range(big_m)]
        z = np.stack([tables[m][xs[:, m]] for m in range(big_m)])
        _, aux = ova_minimality(jnp.asarray(z, jnp.float32))
        mu = z / np.linalg.norm(z, axis=-1, keepdims=True)
        for m in range(big_m):
            var = float(((mu[m] - mu[m].mean(0)) ** 2).sum(1).mean())
            assert float(aux[f"minimality/m{m}"]) >= var - 1e-5


def test_product_of_experts_reference_cannot_follow_xor():
    # For XOR, the signed sum over (a, b) in {0,1}^2 of log r(z|a, b), r = normalised
    # p(z|a) p(z|b), is the same for every z; for r to equal p(z|c = a ^ b) the signed sum
    # 2 log(p(z|0) / p(z|1)) would have to be constant in z, i.e. z_c independent of c.
    rng = np.random.default_rng(0)
    pa, pb, pc = (rng.dirichlet(np.ones(4), size=2) for _ in range(3))
    sign = np.array([[1, -1], [-1, 1]])
    log_r = np.zeros(4)
    signed_target = np.zeros(4)
    for a in range(2):
        for b in range(2):
            r = pa[a] * pb[b]
            log_r += sign[a, b] * np.log(r / r.sum())
            signed_target += sign[a, b] * np.log(pc[a ^ b])
    assert np.ptp(log_r) < 1e-12
    assert np.ptp(signed_target) > 0.1


# --------------------------------------------------------------------------------------
# 5. The projection score and representability (RESULTS section 1).


@pytest.mark.parametrize("q", [1, 2, 3])
def test_squared_score_is_one_minus_gram_ratio(q):
    # s^2 = ||P z||^2 / ||z||^2 = 1 - det G(z, A) / (det G(A) ||z||^2), against the library.
    rng = np.random.default_rng(q)
    d, nq, nc = 6, 5, 7
    queries = rng.normal(size=(q, nq, d))
    cands = rng.normal(size=(nc, d)) * rng.uniform(0.5, 3.0, size=(nc, 1))
    got = np.asarray(ova_score(jnp.asarray(queries), jnp.asarray(cands), lam=1e-10))
    want = np.zeros((nq, nc))
    for i in range(nq):
        a = queries[:, i, :].T  # (d, q)
        g_a = np.linalg.det(a.T @ a)
        for j in range(nc):
            za = np.concatenate([cands[j][:, None], a], axis=1)
            want[i, j] = 1 - np.linalg.det(za.T @ za) / (g_a * cands[j] @ cands[j])
    np.testing.assert_allclose(got**2, want, atol=2e-5)
    if q == 1:  # M = 2: |cos|
        cos = (queries[0] @ cands.T) / np.outer(
            np.linalg.norm(queries[0], axis=1), np.linalg.norm(cands, axis=1)
        )
        np.testing.assert_allclose(got, np.abs(cos), atol=1e-5)


def _scores_all_directions(f, g, h) -> np.ndarray:
    """(3, n, n, n) library scores s_m[a, b, c]: modality m's embedding projected onto the
    span of the two others' (f(a), g(b), h(c) of the XOR triple (a, b, c))."""
    n = len(f)
    fams = [np.asarray(x, np.float32) for x in (f, g, h)]
    out = np.zeros((3, n, n, n))
    for m in range(3):
        i, j = [t for t in range(3) if t != m]
        ii, jj = np.divmod(np.arange(n * n), n)
        queries = np.stack([fams[i][ii], fams[j][jj]])
        s = np.asarray(ova_score(jnp.asarray(queries), jnp.asarray(fams[m]))).reshape(n, n, n)
        # s[x_i, x_j, x_m] -> [a, b, c]
        out[m] = np.moveaxis(s, 2, m)
    return out


@pytest.mark.parametrize("k", [1, 2])
def test_one_shared_encoder_never_separates_xor(k):
    # f = g = h: for query h(c), the inconsistent candidate (a', c) (a' != 0) scores exactly
    # 1 since h(c) is in span(h(a'), h(c)); no shared embedding ranks the positives first.
    h = np.random.default_rng(k).normal(size=(2**k, 5))
    s = _scores_all_directions(h, h, h)[2]
    xor = nets.xor_table(k)
    for c in range(2**k):
        best_wrong = s[:, :, c][~xor[:, :, c]].max()
        assert best_wrong == pytest.approx(1.0, abs=1e-5)
        assert best_wrong >= s[:, :, c][xor[:, :, c]].max() - 1e-5


def test_k1_net_is_exact_and_scores_one_exactly_on_xor_triples():
    fa, fb, fc = nets.net_k1()
    xor = nets.xor_table(1)
    assert (nets.collinearity_table(fa, fb, fc) == xor).all()
    s = _scores_all_directions(*(nets.unit_float(x) for x in (fa, fb, fc)))
    for m in range(3):
        np.testing.assert_allclose(s[m][xor], 1.0, atol=1e-5)
        assert s[m][~xor].max() == pytest.approx(math.sqrt(2 / 3), abs=1e-5)  # by hand


def test_k2_net_on_a_cubic_is_exact():
    fa, fb, fc = nets.net_k2()
    xor = nets.xor_table(2)
    assert (nets.collinearity_table(fa, fb, fc) == xor).all()  # exact rational arithmetic
    assert len({p for fam in (fa, fb, fc) for p in fam}) == 12
    s = _scores_all_directions(*nets.isotropic(*(nets.unit_float(x) for x in (fa, fb, fc))))
    for m in range(3):
        np.testing.assert_allclose(s[m][xor], 1.0, atol=1e-5)
        assert s[m][~xor].max() < 0.999


def test_subgroup_restriction_gives_a_sub_net():
    # Restricting a Z_2^2 net to a subgroup H = {0, h} gives a net realising H (so a
    # Z_2^k net for k >= 3 would contain a Z_2^3 one).
    fa, fb, fc = nets.net_k2()
    for h in (1, 2, 3):
        sub = [0, h]
        table = nets.collinearity_table(*([fam[i] for i in sub] for fam in (fa, fb, fc)))
        assert (table == nets.xor_table(1)).all()


def test_character_embeddings_make_the_product_score_exact_on_xor():
    # chi_S(x) = prod_{i in S} x_i (x in {-1, 1}^k): MIP(a, b, c) = 2^k on XOR triples and 0
    # elsewhere (Symile's score; the cosine of the product projector is 1 and 0).
    k = 2
    bits = np.array([[1 - 2 * ((x >> i) & 1) for i in range(k)] for x in range(2**k)])
    subsets = [[i for i in range(k) if (s >> i) & 1] for s in range(2**k)]
    chi = np.array([[np.prod(x[s]) for s in subsets] for x in bits])
    mip = np.einsum("ad,bd,cd->abc", chi, chi, chi)
    np.testing.assert_array_equal(mip, np.where(nets.xor_table(k), 2**k, 0))


# ---- section 6: unique information ------------------------------------------------


def test_one_vs_all_target_ignores_unique_information():
    """Trifeature in miniature: shape s in 0..2 shared, a private bit u_m per view,
    colour bits c_0, c_1 uniform and c_2 = c_0 xor c_1; view m is x_m = (s, u_m, c_m).
    z_0 = x_0 keeps u_0, z_0' = (s, c_0) drops it. Variables: x_0, x_1, x_2, z_0', and the
    task label t = (u_0 + c_1) mod 2."""

    def sample(s, u0, u1, u2, c0, c1):
        c2 = c0 ^ c1
        view = lambda u, c: 4 * s + 2 * u + c  # noqa: E731
        return view(u0, c0), view(u1, c1), view(u2, c2), 2 * s + c0, (u0 + c1) % 2

    p = info.joint(sample, [range(3)] + [range(2)] * 5)
    x0, rest, z0_drop, task = [0], [1, 2], [3], [4]
    target = math.log2(3) + 1  # the shape and the colour bit c_0 = c_1 xor c_2
    # one-vs-all target: the same with or without u_0; so are the pairwise ones and TC
    assert info.mutual_information(p, x0, rest) == pytest.approx(target, abs=1e-12)
    assert info.mutual_information(p, z0_drop, rest) == pytest.approx(target, abs=1e-12)
    for j in (1, 2):  # the shape only: each colour bit is independent of any other one
        assert info.mutual_information(p, x0, [j]) == pytest.approx(math.log2(3), abs=1e-12)
        assert info.mutual_information(p, z0_drop, [j]) == pytest.approx(math.log2(3), abs=1e-12)
    tc_keep = info.total_correlation(info.marginal(p, [0, 1, 2]))
    tc_drop = info.total_correlation(info.marginal(p, [1, 2, 3]))
    assert tc_keep == pytest.approx(tc_drop, abs=1e-12)
    assert tc_keep == pytest.approx(2 * math.log2(3) + 1, abs=1e-12)  # shape twice + XOR
    # a self-contrast target H(z_0) rewards u_0 by exactly its one bit
    assert info.entropy(p, x0) == pytest.approx(math.log2(3) + 2, abs=1e-12)
    assert info.entropy(p, z0_drop) == pytest.approx(math.log2(3) + 1, abs=1e-12)
    # the minimality target I(z_0; x_0 | x_-0): 1 bit when u_0 is kept, 0 when dropped
    assert info.conditional_mi(p, x0, x0, rest) == pytest.approx(1.0, abs=1e-12)
    assert info.conditional_mi(p, z0_drop, x0, rest) == pytest.approx(0.0, abs=1e-12)
    # the task label: 1 bit from (x_0, x_1, x_2), nothing once z_0 drops u_0
    assert info.mutual_information(p, task, [0, 1, 2]) == pytest.approx(1.0, abs=1e-12)
    assert info.mutual_information(p, task, [3, 1, 2]) == pytest.approx(0.0, abs=1e-12)
