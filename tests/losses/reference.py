"""Slow, literal NumPy (float64) versions of every objective, written pair by pair from
SPEC.md, independent of the library's efficient forms. Only for tests.

Every objective returns ``(loss, aux)`` with the same aux keys as the library, each
value computed literally from its documented definition (the objectives' docstrings,
``_core.infonce`` and ``_core.mean_of_terms``):

* ``{term}``: a per-modality / per-pair / per-direction loss, as the docstring names it;
* ``mi_bound/{...}``: ``log(#candidates) - L`` of that direction's row cross-entropy;
* ``accuracy/{...}``: in-batch top-1, a row is correct when its positive scores STRICTLY
  above every negative (ties are errors, ``_core.infonce``); ``accuracy`` their mean;
* ``pos_score`` / ``neg_score``: the mean raw score (before the temperature) of the
  positives / of all negatives (every candidate but the positive, pooled over rows),
  averaged over the terms (modalities, pairs) of the objective.

A zero vector normalises to zero, as in the library (SPEC: zero vectors give finite
values): its cosine with anything is 0.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def _lse(x: np.ndarray) -> float:
    m = np.max(x)
    return float(m + np.log(np.sum(np.exp(x - m))))


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x)
    return x / norm if norm > 0 else np.zeros_like(x)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(_unit(a) @ _unit(b))


def _ce_row(row: np.ndarray, i: int, exclude_positive: bool = False, smoothing: float = 0.0):
    """Cross-entropy of one row of logits against its positive at index i; with label
    smoothing eps the target is (1 - eps) on the positive + eps uniform on every entry."""
    denom = np.delete(row, i) if exclude_positive else row
    target = (1 - smoothing) * row[i] + smoothing * np.mean(row)
    return _lse(denom) - target


def _ce_rows(logits: np.ndarray, exclude_positive: bool = False, smoothing: float = 0.0):
    """Mean over rows i of the cross-entropy with positive at column i."""
    n = logits.shape[0]
    return float(np.mean([_ce_row(logits[i], i, exclude_positive, smoothing) for i in range(n)]))


def _contrast(
    scores: np.ndarray,
    scale: float,
    *,
    exclude_positive: bool = False,
    smoothing: float = 0.0,
    pos_index=None,
) -> dict[str, float]:
    """Literal statistics of the raw score matrix ``scores`` (rows = queries).

    The positive of row i is column ``pos_index(i)`` (default i). Returns ``loss`` (mean
    row cross-entropy of ``scale * scores``), ``accuracy`` (fraction of rows whose
    positive is strictly above every other column), ``pos`` (mean positive raw score)
    and ``neg`` (mean raw score over all (row, non-positive column) entries).
    """
    n = scores.shape[0]
    losses, correct, pos, negs = [], [], [], []
    for i in range(n):
        p = i if pos_index is None else pos_index(i)
        row = scores[i]
        others = np.delete(row, p)
        losses.append(_ce_row(scale * row, p, exclude_positive, smoothing))
        correct.append(float(row[p] > np.max(others)) if others.size else 1.0)
        pos.append(row[p])
        negs.extend(others)
    return {
        "loss": float(np.mean(losses)),
        "accuracy": float(np.mean(correct)),
        "pos": float(np.mean(pos)),
        "neg": float(np.mean(negs)) if negs else 0.0,
    }


def _per_modality_aux(stats: list[dict], prefix: str, log_n: float):
    """``(loss, aux)`` of an objective that averages one contrast per modality m
    (OVA sufficiency, Symile): the documented keys of ``_core.mean_of_terms``."""
    aux = {}
    for m, st in enumerate(stats):
        aux[f"{prefix}/m{m}"] = st["loss"]
        aux[f"mi_bound/m{m}"] = log_n - st["loss"]
        aux[f"accuracy/m{m}"] = st["accuracy"]
    loss = float(np.mean([st["loss"] for st in stats]))
    aux[prefix] = loss
    aux["accuracy"] = float(np.mean([st["accuracy"] for st in stats]))
    aux["pos_score"] = float(np.mean([st["pos"] for st in stats]))
    aux["neg_score"] = float(np.mean([st["neg"] for st in stats]))
    return loss, aux


# --------------------------------------------------------------------------- OVA-IB


def ova_score_pair(
    zq: np.ndarray, rest: np.ndarray, lam: float, product_weight: float = 0.0
) -> float:
    """Paper eq. 11: cos(z, A (A^T A + lam I)^-1 A^T z) with A = rest^T (d x (M-1));
    with ``product_weight`` w, plus w cos(z, prod of the rows of ``rest``).

    Only for a tiny lam (the paper's 1e-8): the library uses lam as a rank guard along
    the Gram-Schmidt directions of the normalised vectors, see :func:`ova_score_guarded`.
    """
    a = rest.T
    zbar = a @ np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ zq)
    return _cos(zq, zbar) + product_weight * _cos(zq, np.prod(rest, axis=0))


def ova_score_guarded(zq: np.ndarray, rest: np.ndarray, lam: float) -> float:
    """The library's score for any lam, literally from ``_basis.span_basis``'s docstring:
    the remaining vectors a_k are normalised, then (modified Gram-Schmidt, modality
    order) ``v_k = a_k - sum_{j<k} (q_j . v) q_j``, ``r_k = |v_k|^2``,
    ``q_k = v_k / sqrt(r_k + lam)``; the score is ``|Q z^|`` for the unit query z^.

    For lam << r_k this is the projection with direction k weighted by r_k / (r_k + lam);
    for a large lam the shrunk q_j also orthogonalise the later vectors only partly (the
    docstring's formula, which the code follows), so it is no weighted projection."""
    u = _unit(zq)
    qs = []
    for a in rest:
        v = _unit(a)
        for q in qs:
            v = v - (q @ v) * q
        qs.append(v / math.sqrt(float(v @ v) + lam))
    return math.sqrt(sum(float(q @ u) ** 2 for q in qs))


def span_order(m: int, m_count: int) -> list[int]:
    """Positions, among the M-1 remaining modalities in modality order, in the order the
    objective orthogonalises them for modality m (``ova.span_order``): with the first half
    H = {k : 2k <= M-1}, a modality of H takes the modalities outside H first, then H; a
    modality outside H takes H first, then the others."""
    first_half = [k for k in range(m_count) if 2 * k <= m_count - 1]
    second_half = [k for k in range(m_count) if k not in first_half]
    if m in first_half:
        order = second_half + [k for k in first_half if k != m]
    else:
        order = first_half + [k for k in second_half if k != m]
    natural = [k for k in range(m_count) if k != m]
    return [natural.index(k) for k in order]


def ova_sufficiency(
    z,
    tau=0.01,
    lam=1e-8,
    exclude_positive=False,
    projector=None,
    shuffled=False,
    product_weight=0.0,
    guarded=False,
):
    """``product_weight``: see :func:`ova_score_pair`. ``shuffled``: candidate j != i is
    the tuple (rest_k[(j + k) mod N] for k = 1..M-1) (deterministic product-of-marginals
    negatives), the diagonal the true tuple. ``guarded``: score with
    :func:`ova_score_guarded` (exact for any lam), the remaining vectors taken in
    :func:`span_order`, instead of the ridge of eq. 11."""
    z = np.asarray(z, np.float64)
    m_count, n, _ = z.shape
    stats = []
    for m in range(m_count):
        rest = np.delete(z, m, axis=0)  # (M-1, N, d)
        s = np.zeros((n, n))
        for i in range(n):
            for j in range(n):
                if shuffled and i != j:
                    tup = np.stack([rest[k, (j + k + 1) % n] for k in range(m_count - 1)])
                else:
                    tup = rest[:, j]
                if projector is not None:
                    s[i, j] = _cos(z[m, i], projector(tup[:, None], m)[0])
                elif guarded:
                    s[i, j] = ova_score_guarded(z[m, i], tup[span_order(m, m_count)], lam)
                else:
                    s[i, j] = ova_score_pair(z[m, i], tup, lam, product_weight)
        stats.append(_contrast(s, 1.0 / tau, exclude_positive=exclude_positive))
    return _per_modality_aux(stats, "sufficiency", math.log(n))


def ova_minimality(z, normalize=True):
    z = np.asarray(z, np.float64)
    m_count, n, _ = z.shape
    mu = np.array([[_unit(v) for v in zm] for zm in z]) if normalize else z
    aux = {}
    for m in range(m_count):
        acc = 0.0
        for i in range(n):
            others = np.mean([mu[k, i] for k in range(m_count) if k != m], axis=0)
            acc += float(np.sum((mu[m, i] - others) ** 2))
        aux[f"minimality/m{m}"] = acc / n
    loss = float(np.mean(list(aux.values())))
    aux["minimality"] = loss
    return loss, aux


def ova_ib(
    z, tau=0.01, beta=1.0, lam=1e-8, exclude_positive=False, normalize_minimality=True, **kwargs
):
    """``L_S + beta L_M``; aux: every entry of both terms' aux."""
    loss_s, aux = ova_sufficiency(z, tau, lam, exclude_positive, **kwargs)
    loss_m, aux_m = ova_minimality(z, normalize_minimality)
    return loss_s + beta * loss_m, {**aux, **aux_m}


# --------------------------------------------------------------------------- pairwise


def _pairs_aux(z, pairs, tau):
    """Sum over ``pairs`` (p, q) of the symmetric cosine InfoNCE, per the docstring of
    ``pairwise_clip``: ``clip/{p}-{q}`` the mean of both directions, direction p->q the
    rows (queries z_p, candidates z_q), q->p the columns."""
    n = z.shape[1]
    aux, accs, pos, neg, total = {}, [], [], [], 0.0
    for p, q in pairs:
        s = np.array([[_cos(z[p, i], z[q, j]) for j in range(n)] for i in range(n)])
        rows, cols = _contrast(s, 1.0 / tau), _contrast(s.T, 1.0 / tau)
        pair_loss = 0.5 * (rows["loss"] + cols["loss"])
        total += pair_loss
        aux[f"clip/{p}-{q}"] = pair_loss
        aux[f"mi_bound/{p}->{q}"] = math.log(n) - rows["loss"]
        aux[f"mi_bound/{q}->{p}"] = math.log(n) - cols["loss"]
        aux[f"accuracy/{p}->{q}"] = rows["accuracy"]
        aux[f"accuracy/{q}->{p}"] = cols["accuracy"]
        accs += [rows["accuracy"], cols["accuracy"]]
        # The positives of rows and columns are the same diagonal, the negatives the same
        # off-diagonal entries: one mean each per pair.
        pos.append(rows["pos"])
        neg.append(rows["neg"])
    aux.update(
        clip=total,
        accuracy=float(np.mean(accs)),
        pos_score=float(np.mean(pos)),
        neg_score=float(np.mean(neg)),
    )
    return total, aux


def pairwise_clip(z, tau=0.01):
    z = np.asarray(z, np.float64)
    return _pairs_aux(z, list(itertools.combinations(range(len(z)), 2)), tau)


def pairwise_clip_ib(z, tau=0.01, beta=1.0, alignment="cosine"):
    z = np.asarray(z, np.float64)
    clip, aux = pairwise_clip(z, tau)
    align = 0.0
    for p, q in itertools.combinations(range(len(z)), 2):
        cos = np.array([_cos(z[p, i], z[q, i]) for i in range(z.shape[1])])
        term = float(np.mean(1 - cos)) * (1.0 if alignment == "cosine" else 2.0)
        aux[f"alignment/{p}-{q}"] = term
        align += term
    aux["alignment"] = align
    return clip + beta * align, aux


def anchor_clip(z, tau=0.01, anchor=0):
    z = np.asarray(z, np.float64)
    return _pairs_aux(z, [(anchor, m) for m in range(len(z)) if m != anchor], tau)


# --------------------------------------------------------------------------- Symile


def symile_n_cyclic(z, logit_scale=1.0):
    """Symile "n" negatives with the deterministic permutations: non-anchor number k
    (from 1) uses row (j + k) mod N for candidate column j; positives on the diagonal."""
    z = np.asarray(z, np.float64)
    m_count, n, _ = z.shape
    stats = []
    for m in range(m_count):
        others = [k for k in range(m_count) if k != m]
        mip = np.zeros((n, n))
        for i in range(n):
            for j in range(n):
                if i == j:
                    vec = np.prod(z[:, i], axis=0)
                else:
                    vec = z[m, i].copy()
                    for num, k in enumerate(others, start=1):
                        vec = vec * z[k, (j + num) % n]
                mip[i, j] = np.sum(vec)
        stats.append(_contrast(mip, logit_scale))
    return _per_modality_aux(stats, "symile", math.log(n))


def symile_n_squared(z, logit_scale=1.0):
    """Every anchor row against all N^(M-1) tuples of the other modalities (order-free):
    the positive is the tuple (i, ..., i), the N^(M-1) - 1 others are negatives, and the
    bound is log(N^(M-1)) - L_m (the log of the number of candidates)."""
    z = np.asarray(z, np.float64)
    m_count, n, _ = z.shape
    tuples = list(itertools.product(range(n), repeat=m_count - 1))
    stats = []
    for m in range(m_count):
        others = [k for k in range(m_count) if k != m]
        mip = np.zeros((n, len(tuples)))
        for i in range(n):
            for c, idx in enumerate(tuples):
                vec = z[m, i].copy()
                for k, r in zip(others, idx):
                    vec = vec * z[k, r]
                mip[i, c] = np.sum(vec)
        positive = [tuples.index((i,) * (m_count - 1)) for i in range(n)]
        stats.append(_contrast(mip, logit_scale, pos_index=positive.__getitem__))
    return _per_modality_aux(stats, "symile", math.log(len(tuples)))


# --------------------------------------------------------------------------- GRAM, TRIANGLE


def gram_volume(vectors) -> float:
    v = np.stack([_unit(x) for x in vectors])
    return float(np.sqrt(abs(np.linalg.det(v @ v.T))))


def triangle_area(l, v, a) -> float:
    l, v, a = _unit(l), _unit(v), _unit(a)
    u, w = l - v, l - a
    return float((np.dot(u, u) * np.dot(w, w) - np.dot(u, w) ** 2) / 2)


def _two_way_aux(scores, tau, label_smoothing, prefix):
    """GRAM / TRIANGLE (docstring of ``volume.gram``): the row (anchor -> rest) and column
    (rest -> anchor) cross-entropies with label smoothing, averaged; scores are the raw
    ones (minus the volume or area)."""
    n = scores.shape[0]
    rows = _contrast(scores, 1.0 / tau, smoothing=label_smoothing)
    cols = _contrast(scores.T, 1.0 / tau, smoothing=label_smoothing)
    loss = 0.5 * (rows["loss"] + cols["loss"])
    aux = {
        prefix: loss,
        f"{prefix}/anchor_to_rest": rows["loss"],
        f"{prefix}/rest_to_anchor": cols["loss"],
        "mi_bound/anchor_to_rest": math.log(n) - rows["loss"],
        "mi_bound/rest_to_anchor": math.log(n) - cols["loss"],
        "accuracy/anchor_to_rest": rows["accuracy"],
        "accuracy/rest_to_anchor": cols["accuracy"],
        "accuracy": 0.5 * (rows["accuracy"] + cols["accuracy"]),
        "pos_score": rows["pos"],
        "neg_score": rows["neg"],
    }
    return loss, aux


def gram(z, tau=0.01, anchor=0, label_smoothing=0.1):
    z = np.asarray(z, np.float64)
    n = z.shape[1]
    rest = [k for k in range(len(z)) if k != anchor]
    scores = np.array(
        [
            [-gram_volume([z[anchor, i]] + [z[k, j] for k in rest]) for j in range(n)]
            for i in range(n)
        ]
    )
    return _two_way_aux(scores, tau, label_smoothing, "gram")


def triangle(z, tau=0.01, anchor=0, label_smoothing=0.1):
    z = np.asarray(z, np.float64)
    n = z.shape[1]
    v_mod, a_mod = [k for k in range(3) if k != anchor]
    scores = np.array(
        [
            [-triangle_area(z[anchor, i], z[v_mod, j], z[a_mod, j]) for j in range(n)]
            for i in range(n)
        ]
    )
    return _two_way_aux(scores, tau, label_smoothing, "triangle")
