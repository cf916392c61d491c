"""The multi-modal model: a dict of modality batches -> embeddings ``z`` of shape (M, N, d).

``MultiModalModel`` holds, per modality m, an encoder ``f_m`` (representations ``(N, r)``
used by the downstream probes) and a projection head ``g_m`` (embeddings ``(N, d)`` fed to
the objective). It also owns what the objectives must not: the learnable temperature
(CLIP style, ``log tau``), the MLP projector of the "OVA + MLP projector" ablation (also
ConFu's fusion heads) and CoMM's masked fusion.

Mixed precision (``config.model.dtype``, ``config.model.objective_dtype``): encoders,
heads and projector compute in ``dtype`` with float32 parameters (so gradients and the
optimizer state are float32) and float32 BatchNorm statistics; everything the model hands
the objective (z, the projector's output, the temperature) is cast to ``objective_dtype``,
float32 by default: the contrastive objectives' logsumexp over N candidates and OVA-IB's
Gram-Schmidt projection lose accuracy in bfloat16 (8 significant bits), while they cost
little next to the encoders. (``ovaib_jax.losses`` computes in float32 whatever it gets; a
bfloat16 ``objective_dtype`` only rounds its inputs.) With both float32 (the default)
every operation is the one of a model without these attributes, bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ovaib_jax.models.heads import MaskedFusion, MLPProjector, ProjectionHead


@jax.custom_vjp
def clip_back_in(x: jax.Array, lo: float, hi: float) -> jax.Array:
    """``clip(x, lo, hi)`` whose gradient at a clipped value is kept when a descent step
    moves x back inside (below lo: a negative gradient; above hi: a positive one) and is 0
    when it would move x further out. With ``jnp.clip`` a learned temperature or weight
    that passed its bound had gradient 0 for good (CLIP clamps its parameter after each
    update instead, so that it can come back). Scalars or arrays; ``lo``, ``hi`` get no
    gradient."""
    return jnp.clip(x, lo, hi)


def _clip_back_in_fwd(x, lo, hi):
    return jnp.clip(x, lo, hi), (x, lo, hi)


def _clip_back_in_bwd(res, g):
    x, lo, hi = res
    keep = ((x >= lo) & (x <= hi)) | ((x < lo) & (g < 0)) | ((x > hi) & (g > 0))
    zero = jax.tree.map(jnp.zeros_like, (lo, hi))
    return (jnp.where(keep, g, 0.0).astype(x.dtype), *zero)


clip_back_in.defvjp(_clip_back_in_fwd, _clip_back_in_bwd)

__all__ = ["PRODUCT_WEIGHT_BOUNDS", "EncoderDef", "MultiModalModel"]

# The learned product weight w = exp(log w) is kept inside these bounds (clip_back_in).
PRODUCT_WEIGHT_BOUNDS = (1e-3, 1e3)
# Squared-norm floor of the embeddings' L2 normalisation, as the objectives' own
# (ovaib_jax.losses l2_normalize): rsqrt's derivative at a lower floor overflows float32,
# and a zero embedding (a zero input row through bias-free-at-init layers) got NaN
# gradients.
_NORM_FLOOR_SQ = 1e-24

# (modality name, encoder registry name, encoder keyword arguments as sorted pairs).
# Tuples (not dicts) so that the linen module stays hashable.
EncoderDef = tuple[str, str, tuple[tuple[str, Any], ...]]


def _as_float(x: jax.Array, dtype: Any = jnp.float32) -> jax.Array:
    """uint8 pixels -> [0, 1]; other integer or float inputs as is; in ``dtype``.

    Pixels are scaled in float32 and then cast, so that bfloat16 inputs are the float32
    ones correctly rounded.
    """
    x = jnp.asarray(x)
    if x.dtype == jnp.uint8:
        x = x.astype(jnp.float32) / 255.0
    return x.astype(dtype)


def _concat(parts: list[jax.Array]) -> jax.Array:
    """The branches' arrays joined along the last axis (one branch: itself, unchanged)."""
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)


class MultiModalModel(nn.Module):
    """Encoders + projection heads for M modalities, stacked into ``z`` (M, N, d).

    Attributes:
      encoders: one :data:`EncoderDef` per modality, in the order of ``z``'s first axis.
      representation_dim: r, the output dimension of every encoder.
      embedding_dim: d, the output dimension of every projection head.
      head_layers: Dense layers per projection head (3 in the paper).
      head_hidden: hidden width of the heads (0: same as ``representation_dim``).
      normalize_embeddings: L2-normalise ``z`` (off by default: the other objectives
        normalise or are scale invariant themselves, and Symile learns its scale).
      learnable_temperature: create the ``log_temperature`` parameter.
      init_temperature: its initial value tau_0 (``log_temperature = log tau_0``).
      min_temperature, max_temperature: tau is clipped to this range (CLIP clips its
        logit scale at 100, i.e. tau >= 0.01), by :func:`clip_back_in`: a tau past a
        bound keeps the gradient that would bring it back.
      learnable_product_weight: create the ``log_product_weight`` parameter: the weight
        w of OVA's span + product score learned in training (``product_weight`` method).
      init_product_weight: its initial value w_0 > 0 (``log_product_weight = log w_0``).
      projector: create the MLP projector of the ablation (``project`` method); ConFu's
        fusion heads.
      projector_hidden: hidden widths of each projector MLP, and of the fusion's MLP.
      fusion: create CoMM's masked fusion (``fuse`` method; parameters ``fusion``).
      dtype: compute dtype of the encoders, heads and projector (inputs are cast to it;
        parameters stay float32): ``jnp.float32`` or ``jnp.bfloat16``.
      branch_dims: separate encoder branches (empty: one encoder and head per modality).
        With K widths ``(d_1, ..., d_K)`` summing to ``embedding_dim``, modality m has K
        encoders and heads (parameters ``encoder_{m}_b{k}``, ``head_{m}_b{k}``): branch k
        embeds into ``z[..., D_k:D_k + d_k]`` (``D_k = d_1 + ... + d_{k-1}``) from its own
        encoder only, and the representation the probes read is the K encoders' outputs
        concatenated, ``(N, K * r)``. Meant for objectives with one term per slice of z
        (``ova_ib_heads``: its heads on separate encoders instead of one shared one).
      objective_dtype: dtype of what enters the objective: z (cast before the optional
        L2 normalisation), the projector's output and the temperature. Keep float32
        (the default) with a bfloat16 ``dtype``: the bfloat16 forward then moves z by a
        relative ~5e-3 and the loss by at most ~2e-3 on the default model (numbers in
        ``experiments/default.py``; tolerances in tests/test_mixed_precision.py).
    """

    encoders: tuple[EncoderDef, ...]
    representation_dim: int = 256
    embedding_dim: int = 256
    head_layers: int = 3
    head_hidden: int = 0
    normalize_embeddings: bool = False
    learnable_temperature: bool = False
    init_temperature: float = 0.07
    min_temperature: float = 1e-3
    max_temperature: float = 10.0
    learnable_product_weight: bool = False
    init_product_weight: float = 1.0
    projector: bool = False
    projector_hidden: tuple[int, ...] = (256,)
    fusion: bool = False
    dtype: Any = jnp.float32
    objective_dtype: Any = jnp.float32
    branch_dims: tuple[int, ...] = ()

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(e[0] for e in self.encoders)

    def setup(self):
        from ovaib_jax.models import get_encoder  # the registry imports this module

        if self.branch_dims and (
            min(self.branch_dims) < 1 or sum(self.branch_dims) != self.embedding_dim
        ):
            raise ValueError(
                f"MultiModalModel: branch_dims {tuple(self.branch_dims)} must be positive "
                f"widths summing to embedding_dim = {self.embedding_dim}."
            )
        # (suffix of the parameter names, embedding width) of each branch; one unnamed
        # branch without branch_dims, so a one-branch model keeps its parameter names.
        branches = [(f"_b{k}", w) for k, w in enumerate(self.branch_dims)] or [
            ("", self.embedding_dim)
        ]
        self.encoder_modules = {
            name: [
                get_encoder(enc)(
                    out_dim=self.representation_dim,
                    **dict(kwargs),
                    dtype=self.dtype,
                    name=f"encoder_{name}{suffix}",
                )
                for suffix, _ in branches
            ]
            for name, enc, kwargs in self.encoders
        }
        self.heads = {
            name: [
                ProjectionHead(
                    out_dim=width,
                    hidden=self.head_hidden or self.representation_dim,
                    num_layers=self.head_layers,
                    dtype=self.dtype,
                    name=f"head_{name}{suffix}",
                )
                for suffix, width in branches
            ]
            for name, _, _ in self.encoders
        }
        if self.learnable_temperature:
            self.log_temperature = self.param(
                "log_temperature",
                nn.initializers.constant(np.log(self.init_temperature)),
                (),
                jnp.float32,
            )
        if self.learnable_product_weight:
            self.log_product_weight = self.param(
                "log_product_weight",
                nn.initializers.constant(np.log(self.init_product_weight)),
                (),
                jnp.float32,
            )
        if self.projector:
            self.mlp_projector = MLPProjector(
                num_modalities=len(self.encoders),
                out_dim=self.embedding_dim,
                hidden=tuple(self.projector_hidden),
                dtype=self.dtype,
                name="projector",
            )
        if self.fusion:
            self.masked_fusion = MaskedFusion(
                num_modalities=len(self.encoders),
                out_dim=self.embedding_dim,
                hidden=tuple(self.projector_hidden),
                dtype=self.dtype,
                name="fusion",
            )

    def _branch_reps(self, inputs: Mapping[str, jax.Array], train: bool) -> dict[str, list]:
        """``{modality: [(N, r) per branch]}``: every encoder's output, in ``dtype``."""
        missing = [n for n in self.modality_names if n not in inputs]
        if missing:
            raise KeyError(
                f"MultiModalModel: batch lacks modalities {missing}; it has {sorted(inputs)}."
            )
        # Every modality of a batch holds the same N examples.
        chex.assert_equal_shape_prefix([inputs[n] for n in self.modality_names], prefix_len=1)
        out = {}
        for name in self.modality_names:
            x = _as_float(inputs[name], self.dtype)
            out[name] = [encoder(x, train=train) for encoder in self.encoder_modules[name]]
        return out

    def represent(self, inputs: Mapping[str, jax.Array], train: bool = False) -> dict[str, Any]:
        """Encoder outputs only: ``{modality: (N, r)}`` in ``dtype`` (``(N, K * r)``, the
        branches' concatenated, with ``branch_dims``), for the downstream probes (which
        read them as float32)."""
        return {n: _concat(r) for n, r in self._branch_reps(inputs, train).items()}

    def __call__(
        self, inputs: Mapping[str, jax.Array], train: bool = False
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Embeds every modality.

        Args:
          inputs: ``{modality: (N, *shape)}``; extra keys (targets) are ignored.
          train: BatchNorm uses batch statistics (and updates ``batch_stats``) when True.

        Returns:
          ``(z, reps)``: z of shape (M, N, d) in ``objective_dtype`` (float32 unless
          set otherwise) in the order of ``encoders``, and reps ``{modality: (N, r)}``
          (``(N, K * r)`` with K ``branch_dims``) in ``dtype``.
        """
        branch_reps = self._branch_reps(inputs, train)
        z = jnp.stack(
            [
                _concat([head(r) for head, r in zip(self.heads[n], branch_reps[n], strict=True)])
                for n in self.modality_names
            ]
        )
        reps = {n: _concat(r) for n, r in branch_reps.items()}
        z = z.astype(self.objective_dtype)
        if self.normalize_embeddings:
            z = z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z * z, -1, keepdims=True), _NORM_FLOOR_SQ))
        if self.is_initializing():
            # Create every parameter at init, also those only used by other methods.
            if self.learnable_temperature:
                self.temperature()
            if self.learnable_product_weight:
                self.product_weight()
            if self.projector:
                for m in range(z.shape[0]):
                    self.project(jnp.delete(z, m, axis=0), m)
            if self.fusion:
                self.fuse(z, tuple(range(z.shape[0])))
        return z, reps

    def temperature(self) -> jax.Array:
        """The learnable temperature tau = exp(log_temperature), clipped; a scalar in
        ``objective_dtype`` (the parameter itself is float32 whatever the dtypes: Adam's
        small steps on log tau would round away in bfloat16)."""
        if not self.learnable_temperature:
            raise ValueError("temperature(): the model was built with learnable_temperature=False.")
        tau = jnp.exp(self.log_temperature)
        tau = clip_back_in(tau, self.min_temperature, self.max_temperature)
        return tau.astype(self.objective_dtype)

    def product_weight(self) -> jax.Array:
        """The learned weight w = exp(log_product_weight) of OVA's span + product score,
        clipped to :data:`PRODUCT_WEIGHT_BOUNDS`; a float32 scalar (so w >= 0 whatever
        Adam does)."""
        if not self.learnable_product_weight:
            raise ValueError(
                "product_weight(): the model was built with learnable_product_weight=False."
            )
        return clip_back_in(jnp.exp(self.log_product_weight), *PRODUCT_WEIGHT_BOUNDS)

    def project(self, rest: jax.Array, m: int | jax.Array) -> jax.Array:
        """The MLP projector t_m: (M-1, N, d) remaining embeddings -> (N, d).

        It computes in ``dtype``; its output enters the objective, so it is returned in
        ``objective_dtype``.
        """
        if not self.projector:
            raise ValueError("project(): the model was built with projector=False.")
        return self.mlp_projector(rest, m).astype(self.objective_dtype)

    def fuse(self, parts: jax.Array, subset: tuple[int, ...]) -> jax.Array:
        """CoMM's masked fusion: the embeddings ``parts`` (K, N, d) of the modalities
        ``subset`` (K static indices, in that order; the others masked) -> (N, d).

        It computes in ``dtype``; its output enters the objective, so it is returned in
        ``objective_dtype``.
        """
        if not self.fusion:
            raise ValueError("fuse(): the model was built with fusion=False.")
        return self.masked_fusion(parts, tuple(subset)).astype(self.objective_dtype)
