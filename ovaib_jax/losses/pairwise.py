"""Pairwise baselines: pairwise CLIP, pairwise CLIP + IB alignment, anchor (ImageBind).

SPEC section 3. Every pair (p, q) contributes a symmetric InfoNCE on ``cos / tau``:
``(L_{p->q} + L_{q->p}) / 2``. Both directions come from ONE block of the pair's Gram
matrix (row softmax and column softmax of the same scores), so each pair costs one
N x N x d matmul, and the embeddings are normalised and gathered once for all pairs.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp

from ovaib_jax.losses import _core


def _symmetric_pair_losses(
    z: jax.Array,
    pairs: list[tuple[int, int]],
    *,
    tau: jax.Array | float,
    axis_name: _core.AxisName | None,
    chunk_size: int | None,
    prefix: str,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Sum over ``pairs`` of symmetric cosine InfoNCE, with per-pair diagnostics."""
    _, n, _ = z.shape
    n_global = n * _core.axis_size(axis_name)
    scale = 1.0 / tau
    zn = _core.l2_normalize(z)
    zn_all = _core.all_gather(list(zn), axis_name)  # M arrays (N, d)
    aux: dict[str, jax.Array] = {}
    total, accs, pos, neg = 0.0, [], [], []
    log_n = math.log(n_global)
    for p, q in pairs:

        def score_block(cols, p=p, q=q):
            return zn[p] @ _core.block_rows(zn_all[q], cols).T

        stats = _core.contrast(
            score_block,
            n_rows=n,
            n_cols=n_global,
            scale=scale,
            axis_name=axis_name,
            chunk_size=chunk_size,
            symmetric=True,
        )
        res = _core.infonce(stats, scale=scale, axis_name=axis_name)
        pair_loss = 0.5 * (res.loss_rows + res.loss_cols)
        total = total + pair_loss
        key = f"{p}-{q}"
        aux[f"{prefix}/{key}"] = pair_loss
        aux[f"mi_bound/{p}->{q}"] = log_n - res.loss_rows
        aux[f"mi_bound/{q}->{p}"] = log_n - res.loss_cols
        aux[f"accuracy/{p}->{q}"] = res.accuracy_rows
        aux[f"accuracy/{q}->{p}"] = res.accuracy_cols
        accs += [res.accuracy_rows, res.accuracy_cols]
        pos.append(res.pos_mean)
        neg.append(res.neg_mean)
    aux.update(
        {
            prefix: total,
            "accuracy": _core.mean_of(accs),
            "pos_score": _core.mean_of(pos),
            "neg_score": _core.mean_of(neg),
        }
    )
    return total, aux


def pairwise_clip(
    z: jax.Array,
    *,
    tau: jax.Array | float = 0.01,
    axis_name: _core.AxisName | None = None,
    chunk_size: int | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Pairwise CLIP: sum over all pairs p < q of symmetric InfoNCE on ``cos / tau``.

    Decision (SPEC, paper eq. 3): pairs are *summed* (not averaged), each pair's loss is
    the mean of its two directions. tau defaults to the paper's 0.01 for every method, so
    that only the objective changes between methods.

    Args:
      z: (M, N, d) embeddings; finite, norms below ~1.8e19 (float32 squares overflow there
        and the loss silently becomes log N per term; see ``_core``).
      tau: temperature > 0 (may be traced: a learnable temperature lives in the model).
      axis_name: mesh axis of the batch, inside ``jax.shard_map``.
      chunk_size: candidates per block (memory O(N_local x chunk_size)).

    Returns:
      ``(loss, aux)``; aux: ``clip`` (= loss), ``clip/{p}-{q}`` per pair,
      ``mi_bound/{p}->{q}`` and ``accuracy/{p}->{q}`` per direction, ``accuracy``,
      ``pos_score``, ``neg_score``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from ovaib_jax import losses
      >>> z = jnp.eye(8) + 0.1 * jax.random.normal(jax.random.key(0), (3, 8, 8))  # aligned
      >>> loss, aux = losses.pairwise_clip(z, tau=0.1)
      >>> float(aux["accuracy"]), len([k for k in aux if k.startswith("clip/")])  # 3 pairs
      (1.0, 3)
    """
    _core.check_hyperparameter(tau, "tau", "pairwise_clip", "positive")
    z = _core.check_embeddings(z, "pairwise_clip")
    _core.check_chunk_size(chunk_size, "pairwise_clip")
    pairs = list(itertools.combinations(range(z.shape[0]), 2))
    return _symmetric_pair_losses(
        z, pairs, tau=tau, axis_name=axis_name, chunk_size=chunk_size, prefix="clip"
    )


def pairwise_clip_ib(
    z: jax.Array,
    *,
    tau: jax.Array | float = 0.01,
    beta: float = 1.0,
    alignment: str = "cosine",
    axis_name: _core.AxisName | None = None,
    chunk_size: int | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Pairwise CLIP + IB alignment (Almudevar et al., ICML 2025, extended to M modalities).

    ``L = pairwise_clip + beta * sum_{p<q} mean_n a(z[p, n], z[q, n])`` with the alignment
    ``a = 1 - cos`` (``alignment="cosine"``, default) or the squared distance of the
    normalised pair ``|z^_p - z^_q|^2 = 2 - 2 cos`` (``alignment="squared"``). ``tau > 0``
    and ``beta >= 0`` (both finite, may be traced); ``z`` as in :func:`pairwise_clip`.

    Returns:
      ``(loss, aux)``: the aux of :func:`pairwise_clip` plus ``alignment`` (the summed
      alignment term, before beta) and ``alignment/{p}-{q}``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from ovaib_jax import losses
      >>> z = jnp.eye(8) + 0.1 * jax.random.normal(jax.random.key(0), (3, 8, 8))  # aligned
      >>> loss, aux = losses.pairwise_clip_ib(z, tau=0.1, beta=1.0)
      >>> float(aux["accuracy"])
      1.0
    """
    name = "pairwise_clip_ib"
    _core.check_hyperparameter(tau, "tau", name, "positive")
    _core.check_hyperparameter(beta, "beta", name, "non_negative")
    if alignment not in ("cosine", "squared"):
        raise ValueError(f"{name}: alignment must be 'cosine' or 'squared', got {alignment!r}.")
    z = _core.check_embeddings(z, name)
    _core.check_chunk_size(chunk_size, name)
    m_count, n, _ = z.shape
    n_global = n * _core.axis_size(axis_name)
    pairs = list(itertools.combinations(range(m_count), 2))
    clip_loss, aux = _symmetric_pair_losses(
        z, pairs, tau=tau, axis_name=axis_name, chunk_size=chunk_size, prefix="clip"
    )
    zn = _core.l2_normalize(z)
    factor = 1.0 if alignment == "cosine" else 2.0
    align_total = 0.0
    for p, q in pairs:
        cos = jnp.sum(zn[p] * zn[q], axis=-1)
        term = factor * _core.global_mean(1.0 - cos, n_global, axis_name)
        aux[f"alignment/{p}-{q}"] = term
        align_total = align_total + term
    aux["alignment"] = align_total
    return clip_loss + beta * align_total, aux


def anchor_clip(
    z: jax.Array,
    *,
    tau: jax.Array | float = 0.01,
    anchor: int = 0,
    axis_name: _core.AxisName | None = None,
    chunk_size: int | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Anchor (ImageBind-style) CLIP: sum over m != anchor of symmetric InfoNCE(z_a, z_m).

    ``tau > 0`` (finite, may be traced); ``z`` as in :func:`pairwise_clip`.

    Returns:
      ``(loss, aux)`` as :func:`pairwise_clip`, keys ``clip/{a}-{m}`` etc.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from ovaib_jax import losses
      >>> z = jnp.eye(8) + 0.1 * jax.random.normal(jax.random.key(0), (3, 8, 8))  # aligned
      >>> loss, aux = losses.anchor_clip(z, tau=0.1, anchor=0)
      >>> float(aux["accuracy"])
      1.0
    """
    _core.check_hyperparameter(tau, "tau", "anchor_clip", "positive")
    z = _core.check_embeddings(z, "anchor_clip")
    _core.check_chunk_size(chunk_size, "anchor_clip")
    a = _core.check_modality_index(anchor, z.shape[0], "anchor", "anchor_clip")
    pairs = [(a, m) for m in range(z.shape[0]) if m != a]
    return _symmetric_pair_losses(
        z, pairs, tau=tau, axis_name=axis_name, chunk_size=chunk_size, prefix="clip"
    )
