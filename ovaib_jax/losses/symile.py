"""Symile (Saporta et al., NeurIPS 2024): contrastive lower bound on total correlation.

SPEC section 3. For each anchor modality m the logits are
``logit_scale * MIP(z_m[i], tuple j)`` with the multilinear inner product
``MIP(a, b, c, ...) = sum_k a_k b_k c_k ...``; the positive tuple (all modalities of
sample i) sits on the diagonal; the loss is the cross-entropy averaged over anchors.
Facts checked against the reference PyTorch package (``symile/loss.py``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ovaib_jax.losses import _core

NEGATIVE_MODES = ("n", "n_squared")


def _non_anchor_product_n(
    z_all: jax.Array, m: int, perms: list[jax.Array], cols: jax.Array
) -> jax.Array:
    """(C, d) products of the non-anchor rows for candidate columns ``cols`` ("n" mode).

    Candidate j multiplies row ``perm_k[j]`` of every non-anchor modality k.
    """
    others = [k for k in range(z_all.shape[0]) if k != m]
    h = jnp.ones((cols.shape[0], z_all.shape[2]), z_all.dtype)
    for k, perm in zip(others, perms):
        h = h * jnp.take(z_all[k], jnp.take(perm, cols), axis=0)
    return h


def _non_anchor_product_n_squared(z_all: jax.Array, m: int, cols: jax.Array) -> jax.Array:
    """(C, d) products for columns of the N^(M-1) cyclic-shift enumeration.

    Column ``c = t * N + j``: the first non-anchor modality contributes row j, the
    others rows ``(j - s_k) mod N`` where the shifts ``(s_2, ..., s_{M-1})`` are the
    base-N digits of t (most significant first). For M = 3 this is the reference
    package's order (block s pairs ``y[j]`` with ``z[(j - s) mod N]``); block t = 0 holds
    the positives.
    """
    n = z_all.shape[1]
    others = [k for k in range(z_all.shape[0]) if k != m]
    j = cols % n
    t = cols // n
    h = jnp.take(z_all[others[0]], j, axis=0)
    for pos, k in enumerate(others[1:]):
        digit = len(others) - 2 - pos
        shift = (t // n**digit) % n
        h = h * jnp.take(z_all[k], (j - shift) % n, axis=0)
    return h


def symile(
    z: jax.Array,
    *,
    logit_scale: jax.Array | float = 1.0,
    negatives: str = "n",
    key: jax.Array | None = None,
    axis_name: _core.AxisName | None = None,
    chunk_size: int | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Symile loss, averaged over every modality as anchor.

    Negative sampling (SPEC section 3):
      * ``"n"`` (default): the rows of EACH non-anchor modality are permuted independently
        (fresh permutations per anchor), so negative tuples come from the product of the
        marginals: this is what lets Symile see higher-order dependence. Row i's positive
        tuple replaces entry (i, i). With ``key=None`` the permutations are deterministic
        distinct cyclic shifts (non-anchor number k, counted from 1, is shifted by k;
        distinct when N >= M).
      * ``"n_squared"``: all N^(M-1) tuples by cyclic shifts (deterministic, no key);
        memory O(N x N^(M-1)) unless ``chunk_size`` is set. Unlike the reference package's
        general-M path, gradients flow through the non-anchor modalities and the positive
        column is the true positive tuple for every M.

    No normalisation inside the loss (as in the reference): the model owns the
    normalisation and the learnable ``logit_scale``. In float32 the MIP of M vectors of
    norm r overflows once r^M (times ``logit_scale``) passes ~3.4e38, e.g. r = 1e6 for
    M >= 7, and the loss becomes NaN; normalise such embeddings.

    Args:
      z: (M, N, d) embeddings, M >= 2; finite, with every multilinear product (times
        ``logit_scale``) below float32 max ~3.4e38 (see above).
      logit_scale: multiplies the MIPs; finite and > 0 (may be traced).
      negatives: "n" or "n_squared".
      key: PRNG key for the "n" permutations; the same key must be passed on every device.
      axis_name: mesh axis of the batch, inside ``jax.shard_map``: the permutations act on
        the global batch, so values equal the unsharded ones for the same key.
      chunk_size: candidate columns per block.

    Returns:
      ``(loss, aux)``; aux: ``symile`` (= loss), ``symile/m{m}`` per anchor,
      ``mi_bound/m{m}`` (log(#candidates) - L_m), ``accuracy`` and ``accuracy/m{m}``,
      ``pos_score``, ``neg_score``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from ovaib_jax import losses
      >>> z = jnp.eye(8) + 0.1 * jax.random.normal(jax.random.key(0), (3, 8, 8))  # aligned
      >>> loss, aux = losses.symile(z, logit_scale=10.0, key=jax.random.key(0))
      >>> bool(aux["accuracy"] > 0.9)  # negatives are random draws
      True
    """
    name = "symile"
    _core.check_hyperparameter(logit_scale, "logit_scale", name, "positive")
    if negatives not in NEGATIVE_MODES:
        raise ValueError(f"{name}: negatives must be one of {NEGATIVE_MODES}, got {negatives!r}.")
    z = _core.check_embeddings(z, name)
    _core.check_chunk_size(chunk_size, name)
    m_count, n, _ = z.shape
    n_global = n * _core.axis_size(axis_name)
    z_all = _core.all_gather(jnp.moveaxis(z, 0, 1), axis_name)  # (N, M, d)
    z_all = jnp.moveaxis(z_all, 1, 0)  # (M, N, d)
    n_cols = n_global if negatives == "n" else n_global ** (m_count - 1)
    keys = None if key is None or negatives != "n" else jax.random.split(key, m_count)
    results = []
    for m in range(m_count):
        anchor = z[m]
        positive = None
        if negatives == "n":
            if keys is None:
                perms = [(jnp.arange(n_global) + k) % n_global for k in range(1, m_count)]
            else:
                perms = [
                    jax.random.permutation(k_, n_global)
                    for k_ in jax.random.split(keys[m], m_count - 1)
                ]
            positive = jnp.sum(jnp.prod(z, axis=0), axis=-1)  # (n,) MIP of the true tuples

            def score_block(cols, anchor=anchor, m=m, perms=perms):
                return anchor @ _non_anchor_product_n(z_all, m, perms, cols).T

        else:

            def score_block(cols, anchor=anchor, m=m):
                return anchor @ _non_anchor_product_n_squared(z_all, m, cols).T

        stats = _core.contrast(
            score_block,
            n_rows=n,
            n_cols=n_cols,
            scale=logit_scale,
            axis_name=axis_name,
            chunk_size=chunk_size,
            positive=positive,
        )
        results.append(_core.infonce(stats, scale=logit_scale, axis_name=axis_name))
    return _core.mean_of_terms(results, "symile", math.log(n_cols))
