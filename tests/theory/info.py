"""Exact information measures of small discrete distributions, by enumeration (numpy only).

A joint distribution of V variables is an array ``p`` with one axis per variable
(``p[x1, ..., xV]``, non-negative, summing to 1). Every measure is written literally from
its definition, in bits unless a ``base`` is given; the tests check them against values
computed by hand (XOR, copies, independent bits, a binary symmetric channel).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np


def joint(fn: Callable[..., tuple], domains: Sequence[Sequence], weights=None) -> np.ndarray:
    """The distribution of ``fn(*u)`` for ``u`` uniform on the product of ``domains``
    (or weighted by ``weights(*u)``). ``fn`` returns a tuple of small non-negative ints,
    one per output variable; the array is sized by the largest value seen."""
    outs, probs = [], []
    for u in itertools.product(*domains):
        outs.append(tuple(int(v) for v in fn(*u)))
        probs.append(1.0 if weights is None else float(weights(*u)))
    shape = tuple(max(o[i] for o in outs) + 1 for i in range(len(outs[0])))
    p = np.zeros(shape)
    for o, w in zip(outs, probs):
        p[o] += w
    return p / p.sum()


def marginal(p: np.ndarray, keep: Sequence[int]) -> np.ndarray:
    """Marginal over the axes in ``keep`` (in increasing axis order)."""
    drop = tuple(i for i in range(p.ndim) if i not in set(keep))
    return p.sum(axis=drop)


def entropy(p: np.ndarray, keep: Sequence[int] | None = None, base: float = 2.0) -> float:
    """H of the variables ``keep`` (all by default): -sum q log q over q > 0."""
    q = p if keep is None else marginal(p, keep)
    q = q[q > 0]
    return float(-(q * np.log(q)).sum() / np.log(base))


def mutual_information(
    p: np.ndarray, a: Sequence[int], b: Sequence[int], base: float = 2.0
) -> float:
    """I(A; B) = H(A) + H(B) - H(A, B)."""
    return entropy(p, a, base) + entropy(p, b, base) - entropy(p, sorted({*a, *b}), base)


def conditional_mi(
    p: np.ndarray, a: Sequence[int], b: Sequence[int], c: Sequence[int], base: float = 2.0
) -> float:
    """I(A; B | C) = H(A, C) + H(B, C) - H(A, B, C) - H(C)."""
    h = lambda s: entropy(p, sorted(set(s)), base)  # noqa: E731
    return h([*a, *c]) + h([*b, *c]) - h([*a, *b, *c]) - h(c)


def total_correlation(p: np.ndarray, base: float = 2.0) -> float:
    """TC = sum_i H(X_i) - H(X)."""
    return sum(entropy(p, [i], base) for i in range(p.ndim)) - entropy(p, None, base)


def dual_total_correlation(p: np.ndarray, base: float = 2.0) -> float:
    """DTC = H(X) - sum_i H(X_i | X_-i), with H(X_i | X_-i) = H(X) - H(X_-i)."""
    h_all = entropy(p, None, base)
    rest = [[j for j in range(p.ndim) if j != i] for i in range(p.ndim)]
    return h_all - sum(h_all - entropy(p, r, base) for r in rest)


def one_vs_all_sum(p: np.ndarray, base: float = 2.0) -> float:
    """sum_m I(X_m; X_-m), what the OVA sufficiency term maximises (SPEC section 1)."""
    v = p.ndim
    return sum(mutual_information(p, [m], [j for j in range(v) if j != m], base) for m in range(v))


def kl(p: np.ndarray, q: np.ndarray, base: float = 2.0) -> float:
    """KL(p || q) = sum p log(p / q) over p > 0 (inf where q = 0 < p)."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    s = p > 0
    if np.any(q[s] == 0):
        return float("inf")
    return float((p[s] * np.log(p[s] / q[s])).sum() / np.log(base))


def binary_entropy(e: float) -> float:
    """h(e) in bits."""
    return float(-(e * np.log2(e) + (1 - e) * np.log2(1 - e))) if 0 < e < 1 else 0.0


def infonce_bound(
    pxy: np.ndarray, critic: np.ndarray, n: int, q_y: np.ndarray | None = None
) -> float:
    """Exact ``log N - E[L]`` (nats) of InfoNCE with the positive in the denominator.

    The query x and its positive y_1 are drawn from ``pxy`` (|X| x |Y|); the N - 1
    negatives y_2..y_N independently from ``q_y`` (the marginal p(y) by default, i.e.
    other samples of a batch); ``L = -log(exp f(x, y_1) / sum_j exp f(x, y_j))`` with
    ``f = critic`` (|X| x |Y|, finite). The expectation is a sum over all |Y|^(N-1)
    negative tuples, so keep |Y| and N small.
    """
    p_y = pxy.sum(axis=0) if q_y is None else np.asarray(q_y, float)
    nx, ny = pxy.shape
    expected = 0.0
    for negs in itertools.product(range(ny), repeat=n - 1):
        w_neg = float(np.prod([p_y[j] for j in negs]))
        if w_neg == 0:
            continue
        for x in range(nx):
            for y in range(ny):
                if pxy[x, y] == 0:
                    continue
                logits = np.array([critic[x, y], *(critic[x, j] for j in negs)])
                top = logits.max()
                loss = -(logits[0] - top - np.log(np.exp(logits - top).sum()))
                expected += pxy[x, y] * w_neg * loss
    return float(np.log(n) - expected)
