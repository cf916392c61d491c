"""OVA-IB with separate heads (an extension, not in the paper): the embedding's
dimensions are split into a span head, a product head and a self-contrast head, each
trained by its own term, so that the three kinds of dependence stop competing for the
same dimensions.

docs/RESULTS.md sections 7 and 8 measured the one-embedding sums: the span + product
score, and that plus CoMM's self-contrast, land between the families on every axis
(the product term costs the span's shape and retrieval, the self-contrast costs both).
Measured in turn (section 8), the heads do not remove that conflict: without the
self-contrast head they tie span + product on one embedding, so the terms compete in
the shared encoder, not in the embedding's dimensions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ovaib_jax.losses import _core
from ovaib_jax.losses.fusion import Fuse, comm
from ovaib_jax.losses.ova import ova_ib, ova_sufficiency, product_projector
from ovaib_jax.losses.scores import ova_score, projector_score


def head_sizes(d: int, product_share: float, comm_share: float) -> tuple[int, int, int]:
    """``(span, product, comm)`` widths of the heads of a d-dimensional embedding, in that
    order along the last axis: a share s > 0 gets ``max(1, round(s * d))`` dimensions, a
    share 0 none, and the span head the rest (at least one).

    Raises:
      ValueError: the shares leave the span head no dimension.
    """
    sizes = [max(1, round(s * d)) if s > 0 else 0 for s in (product_share, comm_share)]
    span = d - sum(sizes)
    if span < 1:
        raise ValueError(
            f"ova_ib_heads: product_share = {product_share} and comm_share = {comm_share} "
            f"leave no dimension of d = {d} to the span head ({sizes[0]} + {sizes[1]} "
            f"dimensions taken); lower the shares or raise model.embedding_dim."
        )
    return span, sizes[0], sizes[1]


def _check_shares(product_share: float, comm_share: float, fn_name: str) -> None:
    _core.check_hyperparameter(product_share, "product_share", fn_name, "unit_interval")
    _core.check_hyperparameter(comm_share, "comm_share", fn_name, "unit_interval")


def ova_ib_heads(
    z: jax.Array,
    *,
    tau: jax.Array | float = 0.01,
    beta: float = 1.0,
    lam: float = 1e-8,
    exclude_positive: bool = False,
    normalize_minimality: bool = True,
    negatives: str = "batch",
    key: jax.Array | None = None,
    product_share: float = 0.25,
    product_weight: float = 1.0,
    comm_share: float = 0.25,
    comm_weight: float = 1.0,
    comm_tau: float = 0.1,
    fuse: Fuse | None = None,
    axis_name: _core.AxisName | None = None,
    chunk_size: int | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """OVA-IB on separate heads of one embedding (an extension, not in either paper):

    ``L = ova_ib(z_span) + product_weight * L_prod(z_prod) + comm_weight * comm(z_comm)``

    where the last axis of z is split, in order, into ``z_span``, ``z_prod`` and
    ``z_comm`` (widths from :func:`head_sizes`):

    * **span head**: OVA-IB with the paper's projection score (and its minimality term,
      weight ``beta``): the linearly shared content, and retrieval.
    * **product head**: OVA's one-vs-all InfoNCE with the sign-aware product score
      ``cos(z_m, prod_{j != m} z_j)`` (``ova_sufficiency(projector=product_projector)``):
      the multiplicative (parity, XOR) dependence a span cannot express.
    * **self-contrast head**: CoMM's self-contrast (:func:`~ovaib_jax.losses.comm`,
      temperature ``comm_tau``): each view's fusion against the fusion of all views,
      which rewards what a view does not share (docs/THEORY.md section 6). It is handed
      the whole width with every other head's dimensions set to zero, so that the
      model's fusion (built on d-wide embeddings) applies and no gradient reaches the
      other heads.

    Each head is contrasted on its own, so no term pulls on another's dimensions.
    Retrieval (:func:`ova_heads_score`) adds the two one-vs-all scores,
    ``||P z_span|| + product_weight * cos(z_prod, prod)``: as logits at one temperature,
    the sum is the product of the two heads' likelihood ratios. The self-contrast head
    does not score (its alignment lives in the fusion's space).

    Args:
      z: (M, N, d) embeddings, M >= 2 (N local when sharded).
      tau, beta, lam, exclude_positive, normalize_minimality, negatives, key:
        :func:`~ovaib_jax.losses.ova_ib`'s for the span head; ``tau``,
        ``exclude_positive``, ``negatives`` and ``key`` also for the product head.
      product_share, comm_share: the shares of d in [0, 1) of the product and the
        self-contrast heads (0: no such head, and its term is absent).
      product_weight: weight >= 0 of the product head's term, and of its score in
        retrieval.
      comm_weight: weight >= 0 of the self-contrast term.
      comm_tau: the self-contrast's temperature > 0 (CoMM's 0.1); fixed even when the
        model learns ``tau``.
      fuse: the model's masked fusion (:func:`~ovaib_jax.losses.comm`'s); None: the
        parameter-free mean fusion.
      axis_name: mesh axis the batch is sharded over, inside ``jax.shard_map``.
      chunk_size: candidates per block (every term).

    Returns:
      ``(loss, aux)``: the span head's OVA-IB aux as it is (``accuracy``, ``mi_bound/m*``,
      ``sufficiency``, ``minimality``, ...; the in-batch accuracy is the span head's),
      ``ova_ib`` (its loss), the product head's aux under ``product`` (its loss) and
      ``product/<key>``, and CoMM's under ``comm`` and ``comm/<key>``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from ovaib_jax import losses
      >>> shared = jax.random.normal(jax.random.key(0), (8, 8))  # 8 samples, d = 8
      >>> z = shared + 0.01 * jax.random.normal(jax.random.key(1), (3, 8, 8))  # 3 views
      >>> loss, aux = losses.ova_ib_heads(z, tau=0.1, beta=0.0)
      >>> losses.head_sizes(8, 0.25, 0.25), float(aux["accuracy"])  # span, product, comm
      ((4, 2, 2), 1.0)
    """
    name = "ova_ib_heads"
    _core.check_hyperparameter(tau, "tau", name, "positive")
    _core.check_hyperparameter(beta, "beta", name, "non_negative")
    _core.check_hyperparameter(lam, "lam", name, "positive")
    _check_shares(product_share, comm_share, name)
    _core.check_hyperparameter(product_weight, "product_weight", name, "non_negative")
    _core.check_hyperparameter(comm_weight, "comm_weight", name, "non_negative")
    _core.check_hyperparameter(comm_tau, "comm_tau", name, "positive")
    z = _core.check_embeddings(z, name)
    span, prod, width = head_sizes(z.shape[-1], product_share, comm_share)
    common = dict(axis_name=axis_name, chunk_size=chunk_size)
    contrast = dict(tau=tau, exclude_positive=exclude_positive, negatives=negatives, key=key)
    loss, aux = ova_ib(
        z[..., :span],
        beta=beta,
        lam=lam,
        normalize_minimality=normalize_minimality,
        **contrast,
        **common,
    )
    aux = dict(aux, ova_ib=loss)
    if prod:
        loss_p, aux_p = ova_sufficiency(
            z[..., span : span + prod], projector=product_projector, **contrast, **common
        )
        aux.update({"product": loss_p, **{f"product/{k}": v for k, v in aux_p.items()}})
        loss = loss + product_weight * loss_p
    if width:
        own = jnp.arange(z.shape[-1]) >= span + prod
        loss_c, aux_c = comm(jnp.where(own, z, 0.0), tau=comm_tau, fuse=fuse, **common)
        aux.update({k if k.startswith("comm") else f"comm/{k}": v for k, v in aux_c.items()})
        loss = loss + comm_weight * loss_c
    return loss, aux


def ova_heads_score(
    queries: jax.Array,
    cands: jax.Array,
    *,
    lam: float = 1e-8,
    product_share: float = 0.25,
    product_weight: float = 1.0,
    comm_share: float = 0.25,
) -> jax.Array:
    """The retrieval score of :func:`ova_ib_heads`: the span head's projection score plus
    ``product_weight`` times the product head's ``cos(c_j, prod_q queries[q, i])``.

    Args:
      queries: (Q, Nq, d). cands: (Nc, d).
      lam, product_share, product_weight, comm_share: as the objective was trained.

    Returns:
      (Nq, Nc) scores in [-w, 1 + w].
    """
    fn_name = "ova_heads_score"
    _core.check_hyperparameter(lam, "lam", fn_name, "positive")
    _check_shares(product_share, comm_share, fn_name)
    _core.check_hyperparameter(product_weight, "product_weight", fn_name, "non_negative")
    queries, cands = jnp.asarray(queries, jnp.float32), jnp.asarray(cands, jnp.float32)
    if queries.ndim != 3 or cands.ndim != 2 or queries.shape[2] != cands.shape[1]:
        raise ValueError(
            f"{fn_name}: expected queries of shape (Q, Nq, d) and candidates of shape "
            f"(Nc, d) with the same d; got {tuple(queries.shape)} and {tuple(cands.shape)}."
        )
    span, prod, _ = head_sizes(cands.shape[-1], product_share, comm_share)
    score = ova_score(queries[..., :span], cands[:, :span], lam=lam)
    if prod and product_weight:
        heads = (queries[..., span : span + prod], cands[:, span : span + prod])
        score = score + product_weight * projector_score(*heads, projector=product_projector, m=0)
    return score
