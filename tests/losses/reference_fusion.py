"""Slow, literal NumPy (float64) versions of the fusion objectives (ConFu, CoMM), written
from their docstrings and the authors' code, independent of the library's blocked forms
(``_core.contrast``). Only for tests.

ConFu: every term is a full N x N matrix of cosines with its row and column
cross-entropies (``contrastive_loss`` of estafons/confu). CoMM: every term builds the
2N x 2N NT-Xent matrix ``[[s(a, b), s(a, a)], [s(b, b), s(b, a)]] / tau`` with the
self-similarities set to -inf and takes the cross-entropy of each of its 2N rows against
the diagonal (``CoMMLoss.infonce`` of Duplums/CoMM, one view).

Fusions (the callables the objectives take) are given as NumPy functions here; the tests
hand the library their JAX twins. Accuracies count a row as correct when its positive is
STRICTLY above every other candidate of the cross block (the library's convention).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from tests.losses import reference


def unit(x: np.ndarray) -> np.ndarray:
    """Each vector (last axis) over its norm; a zero vector stays zero."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(norm > 0, x / np.where(norm > 0, norm, 1.0), 0.0)


def mean_fusion(parts: np.ndarray, which=None) -> np.ndarray:
    """The normalised sum of the unit embeddings of ``parts`` (K, N, d); zero where that
    sum has norm below 1e-4 (cancelled up to rounding)."""
    del which
    total = np.sum(unit(parts), axis=0)
    norm = np.linalg.norm(total, axis=-1, keepdims=True)
    return np.where(norm < 1e-4, 0.0, unit(total))


def _lse(row: np.ndarray) -> float:
    m = np.max(row[np.isfinite(row)])
    return float(m + np.log(np.sum(np.exp(row - m))))


def _ce(row: np.ndarray, i: int) -> float:
    return _lse(row) - float(row[i])


def _top1(scores: np.ndarray) -> float:
    """Fraction of rows whose diagonal entry is strictly above the rest of the row."""
    n = scores.shape[0]
    if n == 1:
        return 1.0
    return float(np.mean([scores[i, i] > np.max(np.delete(scores[i], i)) for i in range(n)]))


def _stats(scores: np.ndarray) -> tuple[float, float]:
    """Mean positive (diagonal) and mean negative (off-diagonal) raw score."""
    n = scores.shape[0]
    off = scores[~np.eye(n, dtype=bool)]
    return float(np.mean(np.diag(scores))), float(np.mean(off)) if off.size else 0.0


def _two_way(a: np.ndarray, b: np.ndarray, tau: float) -> dict[str, float]:
    """CLIP's symmetric InfoNCE between rows a_i and columns b_j on cos / tau."""
    s = unit(a) @ unit(b).T
    n = s.shape[0]
    rows = float(np.mean([_ce(s[i] / tau, i) for i in range(n)]))
    cols = float(np.mean([_ce(s[:, j] / tau, j) for j in range(n)]))
    pos, neg = _stats(s)
    return {"rows": rows, "cols": cols, "acc_rows": _top1(s), "acc_cols": _top1(s.T),
            "pos": pos, "neg": neg}  # fmt: skip


def confu(z, tau=0.07, fusion_weight=0.5, projector=None):
    """ConFu: ``w mean_m L_fused(m) + (1 - w) mean_{p<q} L_clip(p, q)``."""
    z = np.asarray(z, np.float64)
    m_count, n, _ = z.shape
    fuse = mean_fusion if projector is None else projector
    log_n = math.log(n)
    aux: dict[str, float] = {}
    groups = {"fused": [], "pairs": []}
    for m in range(m_count):
        rest = [k for k in range(m_count) if k != m]
        label = "+".join(map(str, rest))
        fused = fuse(np.stack([z[k] for k in rest]), m)
        groups["fused"].append((f"{label}-{m}", label, str(m), _two_way(fused, z[m], tau)))
    for p, q in itertools.combinations(range(m_count), 2):
        groups["pairs"].append((f"{p}-{q}", str(p), str(q), _two_way(z[p], z[q], tau)))
    means, all_accs, pos, neg = {}, [], [], []
    for group, results in groups.items():
        terms, accs = [], []
        for key, a, b, r in results:
            term = 0.5 * (r["rows"] + r["cols"])
            aux[f"confu/{key}"] = term
            aux[f"mi_bound/{a}->{b}"] = log_n - r["rows"]
            aux[f"mi_bound/{b}->{a}"] = log_n - r["cols"]
            aux[f"accuracy/{a}->{b}"] = r["acc_rows"]
            aux[f"accuracy/{b}->{a}"] = r["acc_cols"]
            terms.append(term)
            accs += [r["acc_rows"], r["acc_cols"]]
            pos.append(r["pos"])
            neg.append(r["neg"])
        means[group] = float(np.mean(terms))
        aux[f"confu/{group}"] = means[group]
        aux[f"accuracy/{group}"] = float(np.mean(accs))
        all_accs += accs
    loss = fusion_weight * means["fused"] + (1 - fusion_weight) * means["pairs"]
    aux.update(confu=loss, accuracy=float(np.mean(all_accs)), pos_score=float(np.mean(pos)),
               neg_score=float(np.mean(neg)))  # fmt: skip
    return loss, aux


def nt_xent(a: np.ndarray, b: np.ndarray, tau: float) -> tuple[float, float]:
    """CoMM's InfoNCE of one view pair: the mean cross-entropy of the first N rows (anchors
    a) and of the last N rows (anchors b) of the 2N x 2N matrix, separately."""
    a, b = unit(a), unit(b)
    n = a.shape[0]
    self_mask = np.where(np.eye(n, dtype=bool), -np.inf, 0.0)
    sim_ab = a @ b.T / tau
    big = np.block([[sim_ab, a @ a.T / tau + self_mask], [b @ b.T / tau + self_mask, sim_ab.T]])
    # Row i < N: positive b_i at column i; row N + i: positive a_i at column N + i.
    ce = [_ce(big[i], i) for i in range(2 * n)]
    return float(np.mean(ce[:n])), float(np.mean(ce[n:]))


def comm(z, tau=0.1, fuse=None):
    """CoMM (one view, no full-vs-full term): ``mean_m NT-Xent(fuse({m}), fuse(all))``."""
    z = np.asarray(z, np.float64)
    m_count, n, _ = z.shape
    fuse = mean_fusion if fuse is None else fuse
    full = unit(fuse(z, tuple(range(m_count))))
    log_k = math.log(2 * n - 1)
    aux: dict[str, float] = {}
    terms, accs, pos, neg = [], [], [], []
    for m in range(m_count):
        single = unit(fuse(z[m : m + 1], (m,)))
        to_full, to_single = nt_xent(single, full, tau)
        term = 0.5 * (to_full + to_single)
        aux[f"comm/m{m}"] = term
        cross = single @ full.T
        for loss_dir, scores, key in ((to_full, cross, f"{m}->fused"),
                                      (to_single, cross.T, f"fused->{m}")):  # fmt: skip
            aux[f"mi_bound/{key}"] = log_k - loss_dir
            aux[f"accuracy/{key}"] = _top1(scores)
            accs.append(_top1(scores))
        terms.append(term)
        p, q = _stats(cross)
        pos.append(p)
        neg.append(q)
    loss = float(np.mean(terms))
    aux.update(comm=loss, accuracy=float(np.mean(accs)), pos_score=float(np.mean(pos)),
               neg_score=float(np.mean(neg)))  # fmt: skip
    return loss, aux


def fusion_score(queries, cands, fuse, subset, m):
    """cos(fuse(queries, subset)_i, fuse(cands, (m,))_j) for every (i, j), one by one."""
    q = fuse(np.asarray(queries, np.float64), tuple(subset))
    c = fuse(np.asarray(cands, np.float64)[None], (m,))
    return np.array([[float(unit(qi) @ unit(cj)) for cj in c] for qi in q])


def ova_ib_comm(z, tau=0.01, beta=1.0, product_weight=0.0, comm_weight=1.0, comm_tau=0.1,
                fuse=None):  # fmt: skip
    """``ova_ib + comm_weight * comm`` from the two literal references; aux: OVA-IB's,
    ``ova_ib``, and CoMM's under ``comm`` / ``comm/...``."""
    loss_o, aux = reference.ova_ib(z, tau=tau, beta=beta, product_weight=product_weight)
    loss_c, aux_c = comm(z, tau=comm_tau, fuse=fuse)
    aux = dict(aux, ova_ib=loss_o)
    aux.update({k if k.startswith("comm") else f"comm/{k}": v for k, v in aux_c.items()})
    return loss_o + comm_weight * loss_c, aux


def ova_ib_heads(z, tau=0.01, beta=1.0, product_share=0.25, product_weight=1.0,
                 comm_share=0.25, comm_weight=1.0, comm_tau=0.1, fuse=None):  # fmt: skip
    """OVA-IB on separate heads from the literal references: the last axis split into
    [span | product | comm] (a share s > 0: max(1, round(s d)) dimensions, the span head
    the rest); ``ova_ib`` on the span head, the one-vs-all InfoNCE of
    cos(z_m, prod of the others) on the product head, CoMM on the comm head's dimensions
    with every other dimension zero. aux: the span head's, ``ova_ib``, ``product`` and
    ``product/...``, ``comm`` and ``comm/...``."""
    z = np.asarray(z, np.float64)
    d = z.shape[-1]
    p, c = (max(1, round(s * d)) if s > 0 else 0 for s in (product_share, comm_share))
    span = d - p - c
    loss, aux = reference.ova_ib(z[..., :span], tau=tau, beta=beta)
    aux = dict(aux, ova_ib=loss)
    if p:
        loss_p, aux_p = reference.ova_sufficiency(
            z[..., span : span + p], tau=tau, projector=lambda tup, m: np.prod(tup, axis=0)
        )
        aux.update({"product": loss_p, **{f"product/{k}": v for k, v in aux_p.items()}})
        loss += product_weight * loss_p
    if c:
        masked = np.zeros_like(z)
        masked[..., span + p :] = z[..., span + p :]
        loss_c, aux_c = comm(masked, tau=comm_tau, fuse=fuse)
        aux.update({k if k.startswith("comm") else f"comm/{k}": v for k, v in aux_c.items()})
        loss += comm_weight * loss_c
    return loss, aux
