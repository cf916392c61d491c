"""Slow, literal NumPy (float64) versions of every objective, written pair by pair from
SPEC.md, independent of the library's efficient forms. Only for tests."""

from __future__ import annotations

import itertools

import numpy as np


def _lse(x: np.ndarray) -> float:
    m = np.max(x)
    return float(m + np.log(np.sum(np.exp(x - m))))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _ce_rows(logits: np.ndarray, exclude_positive: bool = False, smoothing: float = 0.0):
    """Mean over rows i of the cross-entropy with positive at column i."""
    n = logits.shape[0]
    losses = []
    for i in range(n):
        row = logits[i]
        denom = np.delete(row, i) if exclude_positive else row
        lse = _lse(denom)
        target = (1 - smoothing) * row[i] + smoothing * np.mean(row)
        losses.append(lse - target)
    return float(np.mean(losses))


def ova_score_pair(
    zq: np.ndarray, rest: np.ndarray, lam: float, product_weight: float = 0.0
) -> float:
    """Paper eq. 11: cos(z, A (A^T A + lam I)^-1 A^T z) with A = rest^T (d x (M-1));
    with ``product_weight`` w, plus w cos(z, prod of the rows of ``rest``)."""
    a = rest.T
    zbar = a @ np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ zq)
    return _cos(zq, zbar) + product_weight * _cos(zq, np.prod(rest, axis=0))


def ova_sufficiency(
    z,
    tau=0.01,
    lam=1e-8,
    exclude_positive=False,
    projector=None,
    shuffled=False,
    product_weight=0.0,
):
    """``product_weight``: see :func:`ova_score_pair`. ``shuffled``: candidate j != i is
    the tuple (rest_k[(j + k) mod N] for k = 1..M-1) (deterministic product-of-marginals
    negatives), the diagonal the true tuple."""
    z = np.asarray(z, np.float64)
    m_count, n, _ = z.shape
    terms = []
    for m in range(m_count):
        rest = np.delete(z, m, axis=0)  # (M-1, N, d)
        s = np.zeros((n, n))
        for i in range(n):
            for j in range(n):
                if shuffled and i != j:
                    tup = np.stack([rest[k, (j + k + 1) % n] for k in range(m_count - 1)])
                else:
                    tup = rest[:, j]
                if projector is None:
                    s[i, j] = ova_score_pair(z[m, i], tup, lam, product_weight)
                else:
                    s[i, j] = _cos(z[m, i], projector(tup[:, None], m)[0])
        terms.append(_ce_rows(s / tau, exclude_positive))
    return float(np.mean(terms)), terms


def ova_minimality(z, normalize=True):
    z = np.asarray(z, np.float64)
    m_count, n, _ = z.shape
    mu = z / np.linalg.norm(z, axis=-1, keepdims=True) if normalize else z
    terms = []
    for m in range(m_count):
        acc = 0.0
        for i in range(n):
            others = np.mean([mu[k, i] for k in range(m_count) if k != m], axis=0)
            acc += float(np.sum((mu[m, i] - others) ** 2))
        terms.append(acc / n)
    return float(np.mean(terms)), terms


def _pair_clip(zp, zq, tau):
    n = zp.shape[0]
    s = np.array([[_cos(zp[i], zq[j]) for j in range(n)] for i in range(n)])
    return 0.5 * (_ce_rows(s / tau) + _ce_rows(s.T / tau))


def pairwise_clip(z, tau=0.01):
    z = np.asarray(z, np.float64)
    return sum(_pair_clip(z[p], z[q], tau) for p, q in itertools.combinations(range(len(z)), 2))


def pairwise_clip_ib(z, tau=0.01, beta=1.0, alignment="cosine"):
    z = np.asarray(z, np.float64)
    align = 0.0
    for p, q in itertools.combinations(range(len(z)), 2):
        cos = np.array([_cos(z[p, i], z[q, i]) for i in range(z.shape[1])])
        align += np.mean(1 - cos) * (1.0 if alignment == "cosine" else 2.0)
    return pairwise_clip(z, tau) + beta * align


def anchor_clip(z, tau=0.01, anchor=0):
    z = np.asarray(z, np.float64)
    return sum(_pair_clip(z[anchor], z[m], tau) for m in range(len(z)) if m != anchor)


def symile_n_cyclic(z, logit_scale=1.0):
    """Symile "n" negatives with the deterministic permutations: non-anchor number k
    (from 1) uses row (j + k) mod N for candidate column j; positives on the diagonal."""
    z = np.asarray(z, np.float64)
    m_count, n, _ = z.shape
    terms = []
    for m in range(m_count):
        others = [k for k in range(m_count) if k != m]
        logits = np.zeros((n, n))
        for i in range(n):
            for j in range(n):
                if i == j:
                    vec = np.prod(z[:, i], axis=0)
                else:
                    vec = z[m, i].copy()
                    for num, k in enumerate(others, start=1):
                        vec = vec * z[k, (j + num) % n]
                logits[i, j] = logit_scale * np.sum(vec)
        terms.append(_ce_rows(logits))
    return float(np.mean(terms))


def symile_n_squared(z, logit_scale=1.0):
    """Every anchor row against all N^(M-1) tuples of the other modalities (order-free)."""
    z = np.asarray(z, np.float64)
    m_count, n, _ = z.shape
    terms = []
    for m in range(m_count):
        others = [k for k in range(m_count) if k != m]
        losses = []
        for i in range(n):
            logits = []
            for idx in itertools.product(range(n), repeat=len(others)):
                vec = z[m, i].copy()
                for k, r in zip(others, idx):
                    vec = vec * z[k, r]
                logits.append(logit_scale * np.sum(vec))
            pos = logit_scale * np.sum(np.prod(z[:, i], axis=0))
            losses.append(_lse(np.array(logits)) - pos)
        terms.append(np.mean(losses))
    return float(np.mean(terms))


def _unit(x):
    return x / np.linalg.norm(x)


def gram_volume(vectors) -> float:
    v = np.stack([_unit(x) for x in vectors])
    return float(np.sqrt(abs(np.linalg.det(v @ v.T))))


def gram(z, tau=0.01, anchor=0, label_smoothing=0.1):
    z = np.asarray(z, np.float64)
    n = z.shape[1]
    rest = [k for k in range(len(z)) if k != anchor]
    logits = np.array(
        [
            [-gram_volume([z[anchor, i]] + [z[k, j] for k in rest]) / tau for j in range(n)]
            for i in range(n)
        ]
    )
    return 0.5 * (
        _ce_rows(logits, smoothing=label_smoothing) + _ce_rows(logits.T, smoothing=label_smoothing)
    )


def triangle_area(l, v, a) -> float:
    l, v, a = _unit(l), _unit(v), _unit(a)
    u, w = l - v, l - a
    return float((np.dot(u, u) * np.dot(w, w) - np.dot(u, w) ** 2) / 2)


def triangle(z, tau=0.01, anchor=0, label_smoothing=0.1):
    z = np.asarray(z, np.float64)
    n = z.shape[1]
    v_mod, a_mod = [k for k in range(3) if k != anchor]
    logits = np.array(
        [
            [-triangle_area(z[anchor, i], z[v_mod, j], z[a_mod, j]) / tau for j in range(n)]
            for i in range(n)
        ]
    )
    return 0.5 * (
        _ce_rows(logits, smoothing=label_smoothing) + _ce_rows(logits.T, smoothing=label_smoothing)
    )
