"""``ovaib_latent``: known latent factors (shared, pairwise, synergistic, private), M modalities."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from ovaib_jax.data.base import SpecBuilder
from ovaib_jax.data.parity import bits_to_int
from ovaib_jax.data.spec import DatasetSpec, Modality, Target

_SPLIT_IDS = {"train": 0, "test": 1}
TWO_PI = 2.0 * np.pi


@dataclasses.dataclass(eq=False)
class LatentConfig(tfds.core.BuilderConfig):
    """Parameters of ``ovaib_latent``.

    Attributes:
      M: number of modalities (>= 2).
      dim: dimension of each observed modality.
      shared_dim: dimension of the factor shared by all modalities (>= 1).
      pair_dim: dimension of each pairwise factor (0 for none).
      synergy_dim: number of synergistic angles (0 for none).
      nuisance_dim: dimension of each modality's private nuisance (0 for none).
      hidden: hidden width of the random mixing MLPs.
      gain: scale of the first mixing layer (larger is more nonlinear).
      noise: standard deviation of the observation noise.
      synergy_classes: classes of ``synergy_label`` (bins of the first angle).
      num_train, num_test: split sizes.
      seed: seed of the mixing maps and of the samples.
    """

    M: int = 3
    dim: int = 32
    shared_dim: int = 2
    pair_dim: int = 2
    synergy_dim: int = 1
    nuisance_dim: int = 2
    hidden: int = 64
    gain: float = 1.0
    noise: float = 0.05
    synergy_classes: int = 4
    num_train: int = 20_000
    num_test: int = 5_000
    seed: int = 0


def label_bits(c: LatentConfig) -> int:
    """How many shared coordinates define ``label`` (its classes are 2**label_bits)."""
    return min(c.shared_dim, 3)


def sample_factors(rng: np.random.Generator, n: int, c: LatentConfig) -> dict[str, np.ndarray]:
    """Draws the latent factors of ``n`` examples.

    Returns float32 arrays:
      shared: (n, shared_dim) N(0, I), seen by every modality.
      pair: (n, M-1, pair_dim) N(0, I); ``pair[:, j]`` is seen by modalities j and j+1 only.
      synergy: (n, synergy_dim) angles uniform in [0, 2pi).
      shares: (n, M, synergy_dim) angles in [0, 2pi) with sum over M = synergy (mod 2pi):
        shares 0..M-2 uniform and independent, the last completes the sum, so any M-1
        shares are independent of ``synergy``; modality m sees only ``shares[:, m]``.
      nuisance: (n, M, nuisance_dim) N(0, I); row m is private to modality m.
    """
    M = c.M
    shared = rng.standard_normal((n, c.shared_dim))
    pair = rng.standard_normal((n, M - 1, c.pair_dim))
    synergy = rng.uniform(0.0, TWO_PI, (n, c.synergy_dim))
    free = rng.uniform(0.0, TWO_PI, (n, M - 1, c.synergy_dim))
    last = np.mod(synergy - free.sum(1), TWO_PI)
    shares = np.concatenate([free, last[:, None]], axis=1)
    nuisance = rng.standard_normal((n, M, c.nuisance_dim))
    out = dict(shared=shared, pair=pair, synergy=synergy, shares=shares, nuisance=nuisance)
    return {k: v.astype(np.float32) for k, v in out.items()}


def modality_inputs(f: dict[str, np.ndarray], m: int) -> np.ndarray:
    """What modality m sees, float32 (n, shared + 2 pair + 2 synergy + nuisance dims).

    ``[shared, pair[m-1] (zeros for m = 0), pair[m] (zeros for m = M-1),
    cos(shares[m]), sin(shares[m]), nuisance[m]]``.
    """
    pair = f["pair"]
    zeros = np.zeros_like(pair[:, 0])
    left = pair[:, m - 1] if m > 0 else zeros
    right = pair[:, m] if m < pair.shape[1] else zeros
    share = f["shares"][:, m]
    parts = [f["shared"], left, right, np.cos(share), np.sin(share), f["nuisance"][:, m]]
    return np.concatenate(parts, axis=1)


def mixing_mlps(c: LatentConfig) -> list[tuple[np.ndarray, ...]]:
    """Per modality (W1 (in, hidden), b1 (hidden,), W2 (hidden, dim)), fixed by the config."""
    d_in = c.shared_dim + 2 * c.pair_dim + 2 * c.synergy_dim + c.nuisance_dim
    rng = np.random.default_rng([c.seed, c.M, d_in, c.hidden, c.dim, 11])
    mlps = []
    for _ in range(c.M):
        w1 = rng.standard_normal((d_in, c.hidden)) * (c.gain / np.sqrt(d_in))
        b1 = rng.standard_normal(c.hidden) * 0.1
        w2 = rng.standard_normal((c.hidden, c.dim)) / np.sqrt(c.hidden)
        mlps.append((w1, b1, w2))
    return mlps


def mix(h: np.ndarray, mlp: tuple[np.ndarray, ...]) -> np.ndarray:
    """The mixing MLP: tanh(h W1 + b1) W2; (n, in) -> (n, dim)."""
    w1, b1, w2 = mlp
    return np.tanh(h @ w1 + b1) @ w2


def targets(f: dict[str, np.ndarray], c: LatentConfig) -> dict[str, np.ndarray]:
    """The stored targets.

    Returns:
      label: int64 (n,): binary code of ``shared[:, j] > 0`` for j < label_bits.
      synergy_label: int64 (n,): bin of ``synergy[:, 0]`` among ``synergy_classes`` equal
        arcs (only when synergy_dim > 0).
      target: float32 (n, 1): ``a.shared + 0.5 sin(2 b.shared)``, a, b fixed random unit
        vectors.
    """
    s = f["shared"]
    rng = np.random.default_rng([c.seed, c.shared_dim, 13])
    a, b = rng.standard_normal((2, c.shared_dim))
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    out = dict(
        label=bits_to_int(s[:, : label_bits(c)] > 0),
        target=(s @ a + 0.5 * np.sin(2.0 * (s @ b)))[:, None].astype(np.float32),
    )
    if c.synergy_dim:
        bins = np.floor(f["synergy"][:, 0] / TWO_PI * c.synergy_classes).astype(np.int64)
        out["synergy_label"] = np.minimum(bins, c.synergy_classes - 1)
    return out


class OvaibLatent(SpecBuilder):
    """Gaussian latent factors mixed nonlinearly into M modalities, every factor stored.

    Per example: a factor ``shared`` (N(0, I)) seen by all modalities; pairwise factors
    ``pair[j]`` (N(0, I)) seen by modalities j and j+1 only (a chain); synergistic angles
    ``synergy`` (uniform on the circle) of which modality m sees only its share
    ``shares[m]`` (any M-1 shares are independent of ``synergy``; all M sum to it mod
    2 pi), so it is visible only jointly; and a nuisance ``nuisance[m]`` (N(0, I)) private
    to modality m. Modality ``x{m}`` (float32, (dim,)) is a fixed random MLP
    ``tanh(h W1 + b1) W2`` (seeded by the config) of
    ``h = [shared, pair[m-1], pair[m], cos(shares[m]), sin(shares[m]), nuisance[m]]``
    (absent neighbours as zeros), plus Gaussian noise.

    Targets: ``label`` (sign pattern of the first min(shared_dim, 3) shared coordinates,
    2**that classes), ``target`` (regression, (1,): a.shared + 0.5 sin(2 b.shared)),
    ``synergy_label`` (which of ``synergy_classes`` arcs ``synergy[0]`` lies in: a purely
    higher-order target). Stored too: ``shared``, ``pair`` (M-1, pair_dim),
    ``synergy``, ``shares`` (M, synergy_dim) and ``nuisance`` (M, nuisance_dim), to
    measure what a representation captures or leaks. Splits: train and test.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First release."}
    BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [
        LatentConfig(name=f"m{M}", M=M) for M in (3, 4, 5)
    ]

    @classmethod
    def spec_for(cls, config: LatentConfig) -> DatasetSpec:
        c = config
        dims = (c.pair_dim, c.synergy_dim, c.nuisance_dim)
        if c.M < 2 or c.shared_dim < 1 or min(dims) < 0 or c.synergy_classes < 2:
            raise ValueError(f"ovaib_latent: invalid config {c}.")
        targets_ = [
            Target("label", "classification", num_classes=2 ** label_bits(c)),
            Target("target", "regression", dim=1),
        ]
        if c.synergy_dim:
            targets_.append(
                Target("synergy_label", "classification", num_classes=c.synergy_classes)
            )
        return DatasetSpec(
            name="ovaib_latent",
            modalities=tuple(Modality(f"x{m}", (c.dim,), "float32", "mlp") for m in range(c.M)),
            targets=tuple(targets_),
            splits=tuple(_SPLIT_IDS),
            description=(
                f"{c.M} modalities mixing shared ({c.shared_dim}), pairwise ({c.pair_dim}), "
                f"synergistic ({c.synergy_dim}) and private ({c.nuisance_dim}) factors."
            ),
        )

    def extra_features(self):
        c = self.builder_config
        tensor = tfds.features.Tensor
        return {
            "shared": tensor(shape=(c.shared_dim,), dtype=np.float32),
            "pair": tensor(shape=(c.M - 1, c.pair_dim), dtype=np.float32),
            "synergy": tensor(shape=(c.synergy_dim,), dtype=np.float32),
            "shares": tensor(shape=(c.M, c.synergy_dim), dtype=np.float32),
            "nuisance": tensor(shape=(c.M, c.nuisance_dim), dtype=np.float32),
        }

    def _split_generators(self, dl_manager):
        c = self.builder_config
        return {
            "train": self._generate_examples("train", c.num_train),
            "test": self._generate_examples("test", c.num_test),
        }

    def _generate_examples(self, split: str, n: int):
        c = self.builder_config
        rng = np.random.default_rng([c.seed, _SPLIT_IDS[split]])
        f = sample_factors(rng, n, c)
        x = [mix(modality_inputs(f, m), mlp) for m, mlp in enumerate(mixing_mlps(c))]
        x = [(xm + c.noise * rng.standard_normal(xm.shape)).astype(np.float32) for xm in x]
        t = targets(f, c)
        for i in range(n):
            example = {f"x{m}": x[m][i] for m in range(c.M)}
            example.update({k: v[i] for k, v in f.items()})
            example.update({k: v[i] for k, v in t.items()})
            yield i, example
