"""Exact 3-nets realising Z_2^k in the real projective plane, for k = 1 and k = 2.

Elements of Z_2^k are the ints 0 .. 2^k - 1, the group law is XOR (``^``). A *dual 3-net
realising Z_2^k* is three families of points A_a, B_b, C_c of the real projective plane
(vectors of R^3 up to scale) such that A_a, B_b, C_c are collinear (the 3 x 3 determinant
vanishes) exactly when a ^ b ^ c = 0. As embeddings f(a) = A_a, g(b) = B_b, h(c) = C_c
of the three XOR modalities, these give OVA's projection score exactly 1 on every
consistent triple and less than 1 on every other one (docs/THEORY.md section 3).

Coordinates are exact (ints and Fractions), so the collinearity table is checked exactly.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

Point = tuple[Fraction, Fraction, Fraction]


def det3(u, v, w):
    """Exact determinant of the 3 x 3 matrix with rows u, v, w."""
    return (
        u[0] * (v[1] * w[2] - v[2] * w[1])
        - u[1] * (v[0] * w[2] - v[2] * w[0])
        + u[2] * (v[0] * w[1] - v[1] * w[0])
    )


def collinearity_table(fam_a, fam_b, fam_c) -> np.ndarray:
    """(n, n, n) bool table: True where A_a, B_b, C_c are linearly dependent (exactly)."""
    n = len(fam_a)
    return np.array(
        [
            [[det3(fam_a[a], fam_b[b], fam_c[c]) == 0 for c in range(n)] for b in range(n)]
            for a in range(n)
        ]
    )


def xor_table(k: int) -> np.ndarray:
    """(2^k,)*3 bool table of a ^ b ^ c == 0."""
    n = 2**k
    idx = np.arange(n)
    return (idx[:, None, None] ^ idx[None, :, None] ^ idx[None, None, :]) == 0


def net_k1() -> tuple[list, list, list]:
    """k = 1: the six vertices of the complete quadrilateral x = 0, y = 0, z = 0,
    x + y + z = 0, in its three pairs of opposite vertices; each of the four lines holds
    one vertex of each pair."""
    a = [(0, 0, 1), (1, -1, 0)]
    b = [(0, 1, 0), (1, 0, -1)]
    c = [(0, 1, -1), (1, 0, 0)]
    return a, b, c


# k = 2: on the real cubic E: y^2 = x^3 - 25 x (Weierstrass form, O = (0:1:0) a flex), three
# points are collinear iff they sum to O. E has four real 2-torsion points, a copy of
# Z_2^2, and the point P = (-4, 6). With t: Z_2^2 -> E[2] an isomorphism,
# A_a = t(a) + P, B_b = t(b) - P, C_c = t(c) sum to t(a ^ b ^ c), which is O iff
# a ^ b ^ c = 0; the three cosets P + E[2], -P + E[2], E[2] are distinct because
# 2P = (1681/144, -62279/1728) is not in E[2], so the 12 points are distinct.
_A_COEF = Fraction(-25)
_P = (Fraction(-4), Fraction(6))
_TORSION = [  # t(0), t(1), t(2), t(3) with t(1) + t(2) = t(3)
    None,
    (Fraction(0), Fraction(0)),
    (Fraction(5), Fraction(0)),
    (Fraction(-5), Fraction(0)),
]


def ec_add(p, q):
    """Chord-and-tangent sum on y^2 = x^3 + _A_COEF x (None is the point at infinity)."""
    if p is None:
        return q
    if q is None:
        return p
    (x1, y1), (x2, y2) = p, q
    if x1 == x2 and y1 == -y2:
        return None
    lam = (3 * x1 * x1 + _A_COEF) / (2 * y1) if p == q else (y2 - y1) / (x2 - x1)
    x3 = lam * lam - x1 - x2
    return (x3, lam * (x1 - x3) - y1)


def ec_neg(p):
    return None if p is None else (p[0], -p[1])


def on_curve(p) -> bool:
    return p is None or p[1] ** 2 == p[0] ** 3 + _A_COEF * p[0]


def _homogeneous(p) -> Point:
    return (Fraction(0), Fraction(1), Fraction(0)) if p is None else (p[0], p[1], Fraction(1))


def net_k2() -> tuple[list, list, list]:
    """k = 2: the cubic construction above (exact rational points)."""
    fams = []
    for shift in (_P, ec_neg(_P), None):
        pts = [ec_add(t, shift) for t in _TORSION]
        assert all(on_curve(q) for q in pts)
        fams.append([_homogeneous(q) for q in pts])
    return fams[0], fams[1], fams[2]


def unit_float(fam) -> np.ndarray:
    """(n, 3) float64 unit vectors of a family of exact points."""
    v = np.array([[float(c) for c in pt] for pt in fam])
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def isotropic(*fams: np.ndarray, iters: int = 200) -> list[np.ndarray]:
    """The same point configuration after a projective change of coordinates (a linear
    map of R^3, which keeps every collinearity) that makes the unit vectors isotropic
    (sum of v v^T proportional to I): better conditioned for float32 scoring."""
    v = np.concatenate(fams)
    for _ in range(iters):
        w, u = np.linalg.eigh(v.T @ v / len(v))
        v = v @ (u @ np.diag(w**-0.5) @ u.T).T
        v /= np.linalg.norm(v, axis=1, keepdims=True)
    return np.split(v, np.cumsum([len(f) for f in fams])[:-1])
