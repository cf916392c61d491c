"""Projection heads ``g_m``, the learnable One-vs-All projector of the MLP ablation (also
ConFu's fusion heads) and CoMM's masked fusion.

All compute in their ``dtype`` (float32 by default, bfloat16 with ``config.model.dtype``)
with float32 parameters, as the encoders do; the multi-modal model casts what they hand
the objective to the objective's dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ovaib_jax.models.encoders import PARAM_DTYPE, activation

__all__ = ["MLPProjector", "MaskedFusion", "ProjectionHead"]


class ProjectionHead(nn.Module):
    """``num_layers``-layer MLP from representations ``(N, r)`` to embeddings ``(N, d)``.

    The paper uses 3 layers with hidden width = representation dim = 256 and d = 256:
    Dense(hidden) -> act -> Dense(hidden) -> act -> Dense(out_dim).

    Attributes:
      out_dim: embedding dimension d.
      hidden: width of the hidden layers, or one width per hidden layer (a sequence of
        ``num_layers - 1`` widths).
      num_layers: number of Dense layers (>= 1; 1 is a linear head).
      act: activation name.
      dtype: the compute dtype (parameters are float32).
    """

    out_dim: int
    hidden: int | Sequence[int] = 256
    num_layers: int = 3
    act: str = "relu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        """``h`` (N, r) -> (N, out_dim) in ``dtype``."""
        if isinstance(self.hidden, int):
            widths = [self.hidden] * (self.num_layers - 1)
        else:
            widths = list(self.hidden)
        if self.num_layers < 1 or len(widths) != self.num_layers - 1:
            raise ValueError(
                f"ProjectionHead: num_layers={self.num_layers} needs >= 1 layers and "
                f"num_layers - 1 hidden widths, got hidden={self.hidden!r}."
            )
        for width in widths:
            dense = nn.Dense(width, dtype=self.dtype, param_dtype=PARAM_DTYPE)
            h = activation(self.act)(dense(h))
        return nn.Dense(self.out_dim, dtype=self.dtype, param_dtype=PARAM_DTYPE)(h)


class MLPProjector(nn.Module):
    """The "OVA + MLP projector" ablation (paper Table 4): ``t_m(concat z_-m) -> R^d``.

    One MLP per held-out modality m replaces the projection of ``z_m`` onto the span of
    the remaining embeddings; the objective scores ``cos(z_m, t_m(z_-m))``. ConFu's
    fusion heads are the same module (``ovaib_jax.losses.confu``): for M = 3, t_m is the
    MLP on the concatenated pair of the other two modalities.

    Attributes:
      num_modalities: M (one MLP per held-out modality).
      out_dim: embedding dimension d.
      hidden: hidden widths of each MLP.
      act: activation name.
      dtype: the compute dtype (parameters are float32).
    """

    num_modalities: int
    out_dim: int
    hidden: Sequence[int] = (256,)
    act: str = "relu"
    dtype: Any = jnp.float32

    def setup(self):
        self.mlps = [
            ProjectionHead(
                out_dim=self.out_dim,
                hidden=tuple(self.hidden),
                num_layers=len(self.hidden) + 1,
                act=self.act,
                dtype=self.dtype,
                name=f"held_out_{m}",
            )
            for m in range(self.num_modalities)
        ]

    def __call__(self, rest: jax.Array, m: int | jax.Array) -> jax.Array:
        """Projects the remaining modalities of each sample.

        Args:
          rest: (M-1, N, d) the other modalities' embeddings of N samples, in modality
            order with m removed.
          m: the held-out modality index (a Python int; a traced int selects among the
            outputs of all M projectors, which costs M times as much).

        Returns:
          (N, d) the projection ``t_m(concat_k rest[k])`` in ``dtype``.
        """
        k, n, d = rest.shape
        flat = jnp.transpose(rest, (1, 0, 2)).reshape(n, k * d)
        if isinstance(m, int):
            return self.mlps[m % self.num_modalities](flat)
        outs = jnp.stack([mlp(flat) for mlp in self.mlps])  # (M, N, d)
        return jnp.take(outs, m, axis=0)


class MaskedFusion(nn.Module):
    """CoMM's fusion (``ovaib_jax.losses.comm``): ONE network maps the embeddings of any
    non-empty subset of the M modalities, the others masked, to ``(N, out_dim)``.

    The input is the concatenation of the M embedding slots, a masked modality's slot
    filled with zeros, followed by the M mask indicators (1: visible), so that a masked
    modality contributes nothing but its absence; an MLP maps it to ``out_dim``. (CoMM's
    own fusion is a transformer over modality tokens whose masked tokens are left out of
    the attention; this is the embedding-level stand-in, built like the MLP projector.)

    Attributes:
      num_modalities: M.
      out_dim: output dimension (the embedding dimension d).
      hidden: hidden widths of the MLP, one per hidden layer.
      act: activation name.
      dtype: the compute dtype (parameters are float32).
    """

    num_modalities: int
    out_dim: int
    hidden: Sequence[int] = (256,)
    act: str = "relu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, parts: jax.Array, subset: Sequence[int]) -> jax.Array:
        """Fuses the visible modalities.

        Args:
          parts: (K, N, d) embeddings of the modalities ``subset``, in that order.
          subset: K distinct modality indices in [0, M) (static Python ints).

        Returns:
          (N, out_dim) in ``dtype``.
        """
        subset = tuple(int(m) for m in subset)
        k, n, d = parts.shape
        m_count = self.num_modalities
        if len(subset) != k or len(set(subset)) != k or not all(0 <= m < m_count for m in subset):
            raise ValueError(
                f"MaskedFusion: subset {subset} must hold {k} distinct modality indices in "
                f"[0, {m_count}) (one per row of parts of shape {tuple(parts.shape)})."
            )
        parts = parts.astype(self.dtype)
        slots = [jnp.zeros((n, d), self.dtype)] * m_count
        for j, m in enumerate(subset):
            slots[m] = parts[j]
        visible = jnp.asarray([m in subset for m in range(m_count)], self.dtype)
        flat = jnp.concatenate([*slots, jnp.broadcast_to(visible, (n, m_count))], axis=-1)
        return ProjectionHead(
            out_dim=self.out_dim,
            hidden=tuple(self.hidden),
            num_layers=len(self.hidden) + 1,
            act=self.act,
            dtype=self.dtype,
            name="mlp",
        )(flat)
