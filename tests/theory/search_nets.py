"""Numeric search for embeddings of the XOR task that OVA's projection score separates
(evidence for docs/THEORY.md section 3, not a proof; not part of the test suite).

Modalities a, b, c in Z_2^k with c = a ^ b; embeddings f(a), g(b), h(c) (unit vectors).

* ``--mode exact`` (d = 3, the real projective plane): f(a), g(b) free, h(c) the point
  nearest to the n lines through f(a) and g(a ^ c); minimise their non-concurrency. Reports
  r = max |det(f(a), g(b), h(c))| over consistent triples / min |det| over the others;
  r = 0 is a 3-net realising Z_2^k (score exactly 1 on consistent triples, < 1 elsewhere).
* ``--mode margin`` (any d): maximise (through a hinge on score pairs) the worst separation
  min over the three modalities m of (min_consistent s_m - max_inconsistent s_m), where
  s_m is the projection score of modality m onto the span of the two others. A positive
  value means every ranking (training and retrieval directions) puts every consistent
  triple first, with scores that need not reach 1.

    python -m tests.theory.search_nets --mode exact --k 1 2 3 --restarts 20
    python -m tests.theory.search_nets --mode margin --k 1 2 3 --d 3 --restarts 20
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)


def _xor_mask(k: int) -> np.ndarray:
    i = np.arange(2**k)
    return (i[:, None, None] ^ i[None, :, None] ^ i[None, None, :]) == 0


def _unit(v):
    return v / jnp.linalg.norm(v, axis=-1, keepdims=True)


def dets(v):
    """(n, n, n) determinants det(f(a), g(b), h(c)) of unit vectors, v: (3, n, 3)."""
    f, g, h = _unit(v[0]), _unit(v[1]), _unit(v[2])
    cross = jnp.cross(g[:, None, :], h[None, :, :])
    return jnp.einsum("ad,bcd->abc", f, cross)


def sq_scores(v):
    """(3, n, n, n) squared projection scores s_m^2[a, b, c] (modality m onto the span
    of the other two), by s^2 = 1 - det G(z, u, w) / det G(u, w) on unit vectors."""
    f, g, h = _unit(v[0]), _unit(v[1]), _unit(v[2])
    fg = (f @ g.T)[:, :, None]
    fh = (f @ h.T)[:, None, :]
    gh = (g @ h.T)[None, :, :]
    g3 = 1 + 2 * fg * fh * gh - fg**2 - fh**2 - gh**2
    out = []
    for uw in (gh, fh, fg):  # project f onto span(g, h), g onto span(f, h), h onto span(f, g)
        out.append(1 - g3 / jnp.maximum(1 - uw**2, 1e-12))
    return jnp.stack(out)


def _soft(x, mask, p, lowest):
    """Soft min (lowest) or max of x over mask: a log-mean-exp at sharpness p."""
    sign = -1.0 if lowest else 1.0
    logits = jnp.where(mask, sign * p * x, -jnp.inf)
    return sign * (jax.scipy.special.logsumexp(logits) - jnp.log(mask.sum())) / p


def exact_ratio(v, mask):
    d2 = np.asarray(dets(v)) ** 2
    return float(np.sqrt(d2[mask].max() / max(d2[~mask].min(), 1e-300)))


def _concurrent_net(v, k):
    """Free points f(a), g(b) (v: (2n, 3)); h(c) is the point nearest to all n lines
    through f(a) and g(a ^ c) (least eigenvector of sum of line outer products), and
    ``gap[c]`` = lambda_min / lambda_mid measures how far those lines are from concurrent."""
    n = 2**k
    f, g = _unit(v[:n]), _unit(v[n:])
    idx = np.arange(n)
    hs, gaps = [], []
    for c in range(n):
        lines = _unit(jnp.cross(f, g[idx ^ c]))
        w, u = jnp.linalg.eigh(lines.T @ lines)
        hs.append(u[:, 0])
        gaps.append(w[0] / w[1])
    return jnp.stack([f, g, jnp.stack(hs)]), jnp.stack(gaps)


def run_exact(k: int, restarts: int, steps: int, seed: int) -> tuple[float, float]:
    """Minimise the non-concurrency of the lines through f(a), g(a ^ c) for every c,
    with a weak barrier keeping the inconsistent triples independent."""
    mask = jnp.asarray(_xor_mask(k))
    n = 2**k

    def loss(v):
        fgh, gaps = _concurrent_net(v, k)
        d2 = dets(fgh) ** 2
        off = _soft(jnp.log(d2 + 1e-300), ~mask, 4.0, lowest=True)
        return jnp.log(jnp.mean(gaps) + 1e-300) - 1e-3 * off

    def metric(v):
        return exact_ratio(_concurrent_net(v, k)[0], np.asarray(mask))

    return _optimise(loss, metric, (2 * n, 3), restarts, steps, seed, minimise_metric=True)


def hard_margin(v, mask) -> float:
    """min over the three modalities of (min consistent s_m - max inconsistent s_m)."""
    s = np.sqrt(np.clip(np.asarray(sq_scores(v)), 0, 1))
    return float(min(s[i][mask].min() - s[i][~mask].max() for i in range(3)))


def run_margin(k: int, d: int, restarts: int, steps: int, seed: int) -> tuple[float, float]:
    """Hinge on every (consistent, inconsistent) pair of scores of each modality:
    mean softplus(beta (delta - s_pos + s_neg)) / beta, delta = 0.05, beta = 50."""
    mask = np.asarray(_xor_mask(k))
    n = 2**k
    delta, beta = 0.05, 50.0

    def loss(v):
        s = jnp.sqrt(jnp.clip(sq_scores(v), 1e-12, 1.0))
        total = 0.0
        for i in range(3):
            pos, neg = s[i][mask], s[i][~mask]
            total += jnp.mean(jax.nn.softplus(beta * (delta - pos[:, None] + neg[None, :])))
        return total / beta

    return _optimise(
        loss,
        lambda v: hard_margin(v, mask),
        (3, n, d),
        restarts,
        steps,
        seed,
        minimise_metric=False,
    )


def _optimise(loss, metric, shape, restarts, steps, seed, minimise_metric):
    """L-BFGS (scipy) on jax gradients from ``restarts`` random starts; the best metric."""
    from scipy.optimize import minimize

    vg = jax.jit(jax.value_and_grad(lambda x: loss(x.reshape(shape))))

    def fun(x):
        val, g = vg(jnp.asarray(x))
        return float(val), np.asarray(g, dtype=np.float64)

    best = None
    t0 = time.time()
    rng = np.random.default_rng(seed)
    for _ in range(restarts):
        x0 = rng.standard_normal(int(np.prod(shape)))
        res = minimize(fun, x0, jac=True, method="L-BFGS-B", options={"maxiter": steps})
        val = metric(jnp.asarray(res.x.reshape(shape)))
        if best is None or (val < best if minimise_metric else val > best):
            best = val
    return best, time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=("exact", "margin"), default="exact")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--restarts", type=int, default=20)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    for k in args.k:
        if args.mode == "exact":
            best, wall = run_exact(k, args.restarts, args.steps, args.seed)
            print(
                f"k={k} exact (d=3): best ratio max|det consistent| / min|det other| = "
                f"{best:.3e} ({args.restarts} restarts, {wall:.0f} s)"
            )
        else:
            best, wall = run_margin(k, args.d, args.restarts, args.steps, args.seed)
            print(
                f"k={k} margin (d={args.d}): best min_consistent s - max_other s = "
                f"{best:+.4f} ({args.restarts} restarts, {wall:.0f} s)"
            )


if __name__ == "__main__":
    main()
