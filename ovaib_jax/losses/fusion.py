"""Fusion baselines: ConFu (Koutoupis et al., CVPR 2026) and CoMM (Dufumier et al., ICLR 2025).

Both contrast a *fused* embedding of several modalities, made by a learned network that
the model owns, with other embeddings. The objectives stay pure functions of ``z`` plus
the fusion callable handed in (as OVA's ``projector``): the trainer binds the model's own
module (``ovaib_jax.objective``); without one, a parameter-free stand-in,
:func:`mean_fusion`, is used, so that every objective of the library can be called on
``z`` alone.

Facts taken from the authors' code (estafons/confu ``src/modules/models/confu.py`` and its
README; Duplums/CoMM ``losses/comm_loss.py``, ``pl_modules/comm.py``,
``models/mmfusion.py``, ``configs/model/comm.yaml``) are cited in each docstring; what is
simplified here is marked **Decision**.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from ovaib_jax.losses import _core
from ovaib_jax.losses.ova import ova_ib

# ``projector(rest (M-1, K, d), m) -> (K, d)``: fuses the remaining modalities of held-out m.
Projector = Callable[[jax.Array, int], jax.Array]
# ``fuse(parts (K, N, d), subset) -> (N, D)``: fuses the modalities ``subset`` (K indices,
# in the order of ``parts``); the others are masked (absent).
Fuse = Callable[[jax.Array, tuple[int, ...]], jax.Array]

# Squared norm under which a sum of unit embeddings counts as cancelled (norm 1e-4: float32
# rounding of z + (-z) leaves ~1e-7, while sums of unrelated unit vectors are of order 1).
_CANCELLED_SQ = 1e-8


def mean_fusion(parts: jax.Array, which: object = None) -> jax.Array:
    """The parameter-free fusion: the normalised sum of the unit embeddings, (K, N, d) ->
    (N, d). ``which`` (ConFu's held-out modality, CoMM's subset) is ignored.

    Masking a modality drops it from the sum; for one modality it is the unit embedding.
    Scale invariant, and a zero vector contributes nothing; a sum of norm below 1e-4
    (unit embeddings that cancel, e.g. z and -z, up to rounding) fuses to zero rather than
    to the direction of the rounding error. The default fusion of
    :func:`confu` and :func:`comm` when no learned one is given (an objective of the
    library must be callable on ``z`` alone); it cannot express dependence beyond the
    pairwise one (a sum), which a learned fusion can.
    """
    del which
    total = jnp.sum(_core.l2_normalize(jnp.asarray(parts, jnp.float32)), axis=0)
    sq = jnp.sum(jnp.square(total), axis=-1, keepdims=True)
    cancelled = sq < _CANCELLED_SQ
    return jnp.where(cancelled, 0.0, total * jax.lax.rsqrt(jnp.where(cancelled, 1.0, sq)))


def _label(indices: Sequence[int]) -> str:
    return "+".join(str(i) for i in indices)


def _gather_scores(rows: jax.Array, cands_all: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """``score_block(cols)``: the (n, C) dot products of ``rows`` with candidates ``cols``."""

    def score_block(cols):
        return rows @ _core.block_rows(cands_all, cols).T

    return score_block


def _check_fused(out: jax.Array, n: int, d: int | None, what: str, name: str) -> jax.Array:
    out = jnp.asarray(out, jnp.float32)
    if out.ndim != 2 or out.shape[0] != n or (d is not None and out.shape[1] != d):
        want = f"({n}, {d})" if d is not None else f"({n}, D)"
        raise ValueError(f"{name}: {what} must return shape {want}; got {tuple(out.shape)}.")
    return out


def confu(
    z: jax.Array,
    *,
    tau: jax.Array | float = 0.07,
    fusion_weight: float = 0.5,
    projector: Projector | None = None,
    axis_name: _core.AxisName | None = None,
    chunk_size: int | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """ConFu, contrastive fusion: fused modality tuples contrasted with the remaining
    modality, plus pairwise CLIP.

    ``L = w * mean_m L_fused(m) + (1 - w) * mean_{p<q} L_clip(p, q)`` with
    ``w = fusion_weight`` (the paper's lambda) and, every term a symmetric InfoNCE on
    ``cos / tau`` (the mean of its two cross-entropies, rows and columns of ONE score
    matrix):

    * ``L_fused(m)``: between the fusion ``f_{-m} = projector(z_{-m}, m)`` of sample i's
      other modalities and ``z[m, j]``;
    * ``L_clip(p, q)``: between ``z[p, i]`` and ``z[q, j]``.

    Facts (estafons/confu, ``src/modules/models/confu.py`` and README): three modalities;
    one fusion head per pair, an MLP on the concatenated pair (2 layers, dropout 0.1),
    L2-normalised; unimodal embeddings L2-normalised; ``contrastive_loss`` is CLIP's
    symmetric cross-entropy of ``a @ b.T / T`` with T = 0.07; the fused pair (1, 2) is
    contrasted with modality 3, (1, 3) with 2, (2, 3) with 1; the loss is
    ``(lambda * sum fused + (1 - lambda) * sum pairs) / 6`` with lambda = 0.5 (its
    configs). 2 -> 1 retrieval scores the fused pair against the third modality (cosine).

    Decisions:
      * The fusion is the model's: with the trainer it is the learned MLP projector
        (``ovaib_jax.models.MLPProjector``: one MLP per held-out modality m on the
        concatenated embeddings of the others, so for M = 3 exactly one head per pair).
        It fuses the projected embeddings z (raw, as the model hands them), not the
        encoders' outputs as the repo does, and has no dropout. ``projector=None`` uses
        :func:`mean_fusion` (parameter free).
      * M modalities: the fused tuples are the M sets of M - 1 modalities, each
        contrasted with the one left out ("fused representations from subsets of
        modalities aligned with the remaining modality"); for M = 3 these are the
        paper's pairs. M = 2 is accepted (the "fusion" of one modality).
      * Each group is averaged before weighting: for M = 3 this is twice the repo's value
        (which divides the weighted sum of the 6 terms by 6), a constant factor (Adam is
        invariant to it) that keeps the loss at log N for uninformative scores.
      * tau fixed at the repo's 0.07 by default (pass a traced value to learn it).

    Args:
      z: (M, N, d) embeddings, M >= 2 (N local when sharded); finite, norms below ~1.8e19
        (see ``_core``).
      tau: temperature > 0 (may be traced).
      fusion_weight: w in [0, 1], the weight of the fused terms (a Python number).
      projector: the fusion ``projector(rest, m) -> (K, d)`` of the remaining embeddings
        ``rest`` (M-1, K, d) of held-out modality m; it must act per sample (row).
      axis_name: mesh axis the batch is sharded over, inside ``jax.shard_map``.
      chunk_size: candidates per block (memory O(N_local x chunk_size)).

    Returns:
      ``(loss, aux)``; aux: ``confu`` (= loss), ``confu/fused`` and ``confu/pairs`` (the
      two group means), ``confu/{rest}-{m}`` per fused term (rest e.g. ``1+2``) and
      ``confu/{p}-{q}`` per pair, ``mi_bound/{a}->{b}`` and ``accuracy/{a}->{b}`` per
      direction (``1+2->0``, ``0->1+2``, ``0->1``, ...), ``accuracy`` (mean over every
      direction), ``accuracy/fused``, ``accuracy/pairs``, ``pos_score`` and
      ``neg_score`` (mean raw cosines over the terms).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from ovaib_jax import losses
      >>> z = jnp.eye(8) + 0.1 * jax.random.normal(jax.random.key(0), (3, 8, 8))  # aligned
      >>> loss, aux = losses.confu(z, tau=0.1)
      >>> float(aux["accuracy"]), float(aux["accuracy/1+2->0"])
      (1.0, 1.0)
    """
    name = "confu"
    _core.check_hyperparameter(tau, "tau", name, "positive")
    _core.check_hyperparameter(fusion_weight, "fusion_weight", name, "non_negative")
    if not isinstance(fusion_weight, jax.Array) and float(fusion_weight) > 1:
        raise ValueError(f"{name}: fusion_weight must be in [0, 1], got {fusion_weight!r}.")
    z = _core.check_embeddings(z, name)
    _core.check_chunk_size(chunk_size, name)
    m_count, n, d = z.shape
    n_global = n * _core.axis_size(axis_name)
    log_n = math.log(n_global)
    scale = 1.0 / tau
    fuse = mean_fusion if projector is None else projector
    zn = _core.l2_normalize(z)
    zn_all = _core.all_gather(list(zn), axis_name)  # M arrays (N, d)

    def two_way(rows, cands_all):
        stats = _core.contrast(
            _gather_scores(rows, cands_all),
            n_rows=n,
            n_cols=n_global,
            scale=scale,
            axis_name=axis_name,
            chunk_size=chunk_size,
            symmetric=True,
        )
        return _core.infonce(stats, scale=scale, axis_name=axis_name)

    aux: dict[str, jax.Array] = {}
    groups: dict[str, list] = {"fused": [], "pairs": []}
    for m in range(m_count):
        rest = [k for k in range(m_count) if k != m]
        fused = fuse(jnp.stack([z[k] for k in rest]), m)
        fused = _core.l2_normalize(_check_fused(fused, n, d, "projector(rest, m)", name))
        label = _label(rest)
        groups["fused"].append((f"{label}-{m}", label, str(m), two_way(fused, zn_all[m])))
    for p, q in itertools.combinations(range(m_count), 2):
        groups["pairs"].append((f"{p}-{q}", str(p), str(q), two_way(zn[p], zn_all[q])))

    means, all_accs, pos, neg = {}, [], [], []
    for group, results in groups.items():
        terms, accs = [], []
        for key, a, b, res in results:
            term = 0.5 * (res.loss_rows + res.loss_cols)
            aux[f"{name}/{key}"] = term
            aux[f"mi_bound/{a}->{b}"] = log_n - res.loss_rows
            aux[f"mi_bound/{b}->{a}"] = log_n - res.loss_cols
            aux[f"accuracy/{a}->{b}"] = res.accuracy_rows
            aux[f"accuracy/{b}->{a}"] = res.accuracy_cols
            terms.append(term)
            accs += [res.accuracy_rows, res.accuracy_cols]
            pos.append(res.pos_mean)
            neg.append(res.neg_mean)
        means[group] = _core.mean_of(terms)
        aux[f"{name}/{group}"] = means[group]
        aux[f"accuracy/{group}"] = _core.mean_of(accs)
        all_accs += accs
    loss = fusion_weight * means["fused"] + (1.0 - fusion_weight) * means["pairs"]
    aux.update(
        {
            name: loss,
            "accuracy": _core.mean_of(all_accs),
            "pos_score": _core.mean_of(pos),
            "neg_score": _core.mean_of(neg),
        }
    )
    return loss, aux


def _nt_xent_rows(
    rows: jax.Array,
    other_all: jax.Array,
    same_all: jax.Array,
    *,
    n_global: int,
    scale: jax.Array | float,
    axis_name: _core.AxisName | None,
    chunk_size: int | None,
) -> _core.InfoNCE:
    """SimCLR's NT-Xent for the local anchors ``rows`` (n, D): the positive of row i is
    ``other_all[i]`` (global index), the negatives every other row of ``other_all`` and
    every row of ``same_all`` but row i itself. Accuracy and score statistics are those
    of the cross block (``rows`` vs ``other_all``), as CoMM's ``ssl_acc``."""
    kwargs = dict(
        n_rows=rows.shape[0],
        n_cols=n_global,
        scale=scale,
        axis_name=axis_name,
        chunk_size=chunk_size,
    )
    cross = _core.contrast(_gather_scores(rows, other_all), **kwargs)
    if n_global > 1:
        # The denominators merge: logsumexp over both blocks, the self-pair left out.
        intra = _core.contrast(_gather_scores(rows, same_all), exclude_positive=True, **kwargs)
        merged = cross.rows._replace(lse=jnp.logaddexp(cross.rows.lse, intra.rows.lse))
        cross = cross._replace(rows=merged)
    return _core.infonce(cross, scale=scale, axis_name=axis_name)


def comm(
    z: jax.Array,
    *,
    tau: jax.Array | float = 0.1,
    fuse: Fuse | None = None,
    axis_name: _core.AxisName | None = None,
    chunk_size: int | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """CoMM: one fusion network maps every modality-masked view of a sample into one
    space, and each single-modality view is contrasted with the full multimodal view.

    ``L = (1/M) sum_m L_m``, ``L_m = NT-Xent(u_m, u)`` between ``u_m = fuse(z[m:m+1], (m,))``
    (every modality but m masked) and ``u = fuse(z, (0, ..., M-1))``, both L2-normalised:
    SimCLR's loss over the 2N anchors of the two views, whose denominators hold the other
    view's N embeddings (the positive among them) and the anchor view's other N - 1:
    ``L_m = (L_{m->fused} + L_{fused->m}) / 2``.

    Facts (Duplums/CoMM): ``pl_modules/comm.py`` encodes two augmented views x', x'' of a
    sample through one multimodal encoder under M + 1 masks (each modality alone, then
    all); ``models/mmfusion.py`` removes a masked modality's tokens from the fusion
    transformer's attention (key padding mask) and pools its CLS token; one projection
    head serves every mask; ``losses/comm_loss.py`` L2-normalises, and for each of the
    M + 1 embeddings i averages ``InfoNCE(z'_i, z''_full)`` and ``InfoNCE(z''_i,
    z'_full)``, InfoNCE being SimCLR's NT-Xent (the 2N x 2N matrix
    ``[[s(z1, z2), s(z1, z1)], [s(z2, z2), s(z2, z1)]] / T`` with the self-similarities
    removed, cross-entropy on its diagonal); the loss is the mean over the M + 1 terms;
    temperature T = 0.1 (``configs/model/comm.yaml``); its accuracy is the top-1 of the
    cross block.

    Decisions (simplifications):
      * No input-level augmentations: the masked views are the only views, so the two
        views of the repo are one (its two symmetric halves coincide). Its full-vs-full
        term, whose two views are then identical, would only spread the fused embeddings
        apart (no alignment left in it): it is dropped, so the mean is over the M
        single-modality terms.
      * Masking acts on the embeddings z, not on the encoders' tokens: ``fuse`` is the
        model's fusion (``ovaib_jax.models.heads.MaskedFusion``: an MLP on the zero-filled
        concatenation of the visible embeddings with the mask indicators, for the repo's
        one-layer fusion transformer with CLS pooling and projection head).
        ``fuse=None`` uses :func:`mean_fusion` (parameter free).
      * tau fixed at the repo's 0.1 by default (pass a traced value to learn it).

    Args:
      z: (M, N, d) embeddings, M >= 2 (N local when sharded); finite, norms below ~1.8e19.
      tau: temperature > 0 (may be traced).
      fuse: ``fuse(parts, subset) -> (K, D)``: the fusion of ``parts`` (len(subset), K, d),
        the embeddings of the modalities ``subset`` (a tuple of indices, in that order);
        the same D for every subset; it must act per sample (row).
      axis_name: mesh axis the batch is sharded over, inside ``jax.shard_map``.
      chunk_size: candidates per block.

    Returns:
      ``(loss, aux)``; aux: ``comm`` (= loss), ``comm/m{m}`` (L_m), per direction
      ``mi_bound/{m}->fused`` and ``mi_bound/fused->{m}`` (``log(2N - 1) - L``: a
      diagnostic, the denominator holding 2N - 1 candidates) and ``accuracy/{m}->fused``,
      ``accuracy/fused->{m}`` (top-1 among the other view's N), ``accuracy`` (their mean),
      ``pos_score`` / ``neg_score`` (mean raw cosines of the cross blocks).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from ovaib_jax import losses
      >>> z = jnp.eye(8) + 0.1 * jax.random.normal(jax.random.key(0), (3, 8, 8))  # aligned
      >>> loss, aux = losses.comm(z, tau=0.1)
      >>> float(aux["accuracy"]), sorted(k for k in aux if k.startswith("comm/"))
      (1.0, ['comm/m0', 'comm/m1', 'comm/m2'])
    """
    name = "comm"
    _core.check_hyperparameter(tau, "tau", name, "positive")
    z = _core.check_embeddings(z, name)
    _core.check_chunk_size(chunk_size, name)
    m_count, n, _ = z.shape
    n_global = n * _core.axis_size(axis_name)
    log_k = math.log(2 * n_global - 1)
    scale = 1.0 / tau
    fuse = mean_fusion if fuse is None else fuse
    full = _check_fused(fuse(z, tuple(range(m_count))), n, None, "fuse(z, all)", name)
    width = full.shape[1]
    full = _core.l2_normalize(full)
    full_all = _core.all_gather(full, axis_name)
    kwargs = dict(n_global=n_global, scale=scale, axis_name=axis_name, chunk_size=chunk_size)
    aux: dict[str, jax.Array] = {}
    terms, accs, pos, neg = [], [], [], []
    for m in range(m_count):
        single = fuse(z[m : m + 1], (m,))
        single = _core.l2_normalize(_check_fused(single, n, width, f"fuse(z[{m}], ({m},))", name))
        single_all = _core.all_gather(single, axis_name)
        to_full = _nt_xent_rows(single, full_all, single_all, **kwargs)
        to_single = _nt_xent_rows(full, single_all, full_all, **kwargs)
        term = 0.5 * (to_full.loss_rows + to_single.loss_rows)
        aux[f"{name}/m{m}"] = term
        for res, key in ((to_full, f"{m}->fused"), (to_single, f"fused->{m}")):
            aux[f"mi_bound/{key}"] = log_k - res.loss_rows
            aux[f"accuracy/{key}"] = res.accuracy_rows
            accs.append(res.accuracy_rows)
        terms.append(term)
        pos.append(to_full.pos_mean)
        neg.append(to_full.neg_mean)
    loss = _core.mean_of(terms)
    aux.update(
        {
            name: loss,
            "accuracy": _core.mean_of(accs),
            "pos_score": _core.mean_of(pos),
            "neg_score": _core.mean_of(neg),
        }
    )
    return loss, aux


def fusion_score(
    queries: jax.Array, cands: jax.Array, *, fuse: Fuse, subset: tuple[int, ...], m: int
) -> jax.Array:
    """Retrieval with a learned fusion (CoMM): ``cos(fuse(queries, subset)_i,
    fuse(cands, (m,))_j)``: the query modalities fused together, the candidate modality
    alone (the others masked), compared in the fusion's space, where CoMM aligns them.

    Args:
      queries: (Q, Nq, d) embeddings of the modalities ``subset`` (in that order).
      cands: (Nc, d) embeddings of modality ``m``.
      fuse: the fusion the objective trained with.
      subset: the query modalities' indices; m: the candidates' index.

    Returns:
      (Nq, Nc) scores in [-1, 1].
    """
    queries, cands = jnp.asarray(queries, jnp.float32), jnp.asarray(cands, jnp.float32)
    if queries.ndim != 3 or cands.ndim != 2 or len(subset) != queries.shape[0]:
        raise ValueError(
            f"fusion_score: expected queries (Q, Nq, d) with Q = len(subset) = {len(subset)} "
            f"and candidates (Nc, d); got {tuple(queries.shape)} and {tuple(cands.shape)}."
        )
    q = _core.l2_normalize(jnp.asarray(fuse(queries, tuple(subset)), jnp.float32))
    c = _core.l2_normalize(jnp.asarray(fuse(cands[None], (m,)), jnp.float32))
    return q @ c.T


def ova_ib_comm(
    z: jax.Array,
    *,
    tau: jax.Array | float = 0.01,
    beta: float = 1.0,
    lam: float = 1e-8,
    exclude_positive: bool = False,
    normalize_minimality: bool = True,
    product_weight: float | jax.Array = 0.0,
    negatives: str = "batch",
    key: jax.Array | None = None,
    comm_weight: float = 1.0,
    comm_tau: float = 0.1,
    fuse: Fuse | None = None,
    axis_name: _core.AxisName | None = None,
    chunk_size: int | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """OVA-IB plus CoMM's self-contrast on the same embeddings (an extension, not in
    either paper): ``L = ova_ib(z) + comm_weight * comm(z, tau=comm_tau, fuse=fuse)``.

    Why: a one-vs-all (or pairwise, or Symile-type) objective has no reason to keep what a
    view does not share with the others (docs/THEORY.md section 6), so it keeps the
    unique factors of a view only incidentally; CoMM contrasts each view's fusion with
    the fusion of all views, which contains the view itself, and so rewards them. The sum
    asks for both: the shared and the higher-order (with ``product_weight > 0``)
    dependence through the one-vs-all score, the unique information through the fused
    target. Retrieval and the in-batch accuracy score with OVA's score (the
    hyper-parameters ``lam`` and ``product_weight``).

    Args:
      z: (M, N, d) embeddings, M >= 2 (N local when sharded).
      tau, beta, lam, exclude_positive, normalize_minimality, product_weight, negatives,
        key: :func:`ovaib_jax.losses.ova_ib`'s (no ``projector``).
      comm_weight: weight >= 0 of the CoMM term (0: the value and gradient of ``ova_ib``
        alone; the CoMM term is still computed and logged, and the model still builds the
        fusion, which then gets no gradient).
      comm_tau: the CoMM term's temperature > 0 (CoMM's 0.1); fixed even when the model
        learns the temperature (``model.learnable_temperature`` learns ``tau`` only).
      fuse: the model's masked fusion, as for :func:`comm`.
      axis_name: mesh axis the batch is sharded over, inside ``jax.shard_map``.
      chunk_size: candidates per block (both terms).

    Returns:
      ``(loss, aux)``: every entry of ``ova_ib``'s aux, ``ova_ib`` (its loss), and CoMM's
      aux under ``comm`` (its loss), ``comm/m{m}`` and ``comm/<key>`` for its other keys
      (``comm/accuracy``, ``comm/mi_bound/{m}->fused``, ...).
    """
    _core.check_hyperparameter(comm_weight, "comm_weight", "ova_ib_comm", "non_negative")
    _core.check_hyperparameter(comm_tau, "comm_tau", "ova_ib_comm", "positive")
    common = dict(axis_name=axis_name, chunk_size=chunk_size)
    loss_o, aux = ova_ib(
        z,
        tau=tau,
        beta=beta,
        lam=lam,
        exclude_positive=exclude_positive,
        normalize_minimality=normalize_minimality,
        product_weight=product_weight,
        negatives=negatives,
        key=key,
        **common,
    )
    loss_c, aux_c = comm(z, tau=comm_tau, fuse=fuse, **common)
    aux = dict(aux, ova_ib=loss_o)
    aux.update({k if k.startswith("comm") else f"comm/{k}": v for k, v in aux_c.items()})
    return loss_o + comm_weight * loss_c, aux
