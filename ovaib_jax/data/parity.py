"""``ovaib_parity``: the higher-order (XOR / parity) benchmark of SPEC section 8, M modalities."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from ovaib_jax.data.base import SpecBuilder
from ovaib_jax.data.spec import DatasetSpec, Modality, Target

_SPLIT_IDS = {"train": 0, "test": 1}


@dataclasses.dataclass(eq=False)
class ParityConfig(tfds.core.BuilderConfig):
    """Parameters of ``ovaib_parity``.

    Attributes:
      M: number of modalities (>= 3).
      k: bits per modality (1..16); the label has 2**k classes.
      p: probability that the last bit vector is the parity (XOR) of the others; else
        it is a copy of the first.
      dim: dimension of each embedded modality (>= k).
      noise: standard deviation of the Gaussian noise added to each coordinate.
      num_train, num_test: split sizes.
      seed: seed of the embedding maps and of the samples.
    """

    M: int = 3
    k: int = 4
    p: float = 1.0
    dim: int = 32
    noise: float = 0.1
    num_train: int = 20_000
    num_test: int = 5_000
    seed: int = 0


def check_config(c: ParityConfig) -> None:
    """Raises ValueError for an invalid config."""
    if c.M < 3:
        raise ValueError(f"ovaib_parity needs M >= 3 (with M = 2 parity is a copy), got {c.M}.")
    if not 1 <= c.k <= 16:
        raise ValueError(f"ovaib_parity needs 1 <= k <= 16, got {c.k}.")
    if not 0.0 <= c.p <= 1.0:
        raise ValueError(f"ovaib_parity needs 0 <= p <= 1, got {c.p}.")
    if c.dim < c.k or c.noise < 0 or min(c.num_train, c.num_test) <= 0:
        raise ValueError(f"ovaib_parity: invalid dim/noise/sizes in {c}.")


def sample_bits(rng: np.random.Generator, n: int, M: int, k: int, p: float):
    """Draws the bit vectors.

    Returns:
      bits: uint8 (n, M, k): rows 0..M-2 i.i.d. uniform; row M-1 is the XOR of rows
        0..M-2 where ``is_parity`` is True, else a copy of row 0.
      is_parity: bool (n,), True with probability p.
    """
    free = rng.integers(0, 2, size=(n, M - 1, k), dtype=np.uint8)
    is_parity = rng.random(n) < p
    parity = np.bitwise_xor.reduce(free, axis=1)
    last = np.where(is_parity[:, None], parity, free[:, 0])
    return np.concatenate([free, last[:, None]], axis=1), is_parity


def embedding_maps(seed: int, M: int, k: int, dim: int) -> np.ndarray:
    """Fixed random linear maps float32 (M, dim, k), entries N(0, 1/k) (unit signal power).

    Depends only on (seed, M, k, dim), not on the split.
    """
    rng = np.random.default_rng([seed, M, k, dim, 7])
    return (rng.standard_normal((M, dim, k)) / np.sqrt(k)).astype(np.float32)


def embed(bits: np.ndarray, maps: np.ndarray, noise: float, rng: np.random.Generator):
    """x[n, m] = maps[m] @ (2 bits[n, m] - 1) + noise * eps; float32 (n, M, dim)."""
    signs = 2.0 * bits.astype(np.float32) - 1.0
    x = np.einsum("mdk,nmk->nmd", maps, signs)
    return (x + noise * rng.standard_normal(x.shape)).astype(np.float32)


def bits_to_int(bits: np.ndarray) -> np.ndarray:
    """Binary code of the last axis (bit j has weight 2**j): (..., k) -> int64 (...)."""
    return (bits.astype(np.int64) << np.arange(bits.shape[-1])).sum(-1)


class OvaibParity(SpecBuilder):
    """Higher-order (parity) benchmark with M modalities (SPEC section 8, generalised).

    For each example: M-1 independent uniform random k-bit vectors b_0..b_{M-2}; the
    last vector b_{M-1} is their XOR with probability p (``is_parity``), else a copy of
    b_0. Modality ``x{m}`` is ``W_m (2 b_m - 1) + noise * eps``: a fixed random linear
    map W_m (dim x k, entries N(0, 1/k), seeded by the config) of the +-1 bits plus
    i.i.d. Gaussian noise. With p = 1 any M-1 of the bit vectors are independent and
    uniform (so every pair of modalities is independent) while the M-tuple is
    deterministic (the XOR of all M vectors is 0); with p = 0, x_{M-1} copies x_0.

    Stored per example: ``x0`` .. ``x{M-1}`` float32 (dim,); ``bits`` uint8 (M, k);
    ``is_parity`` bool; ``label`` = the binary code of b_{M-1} (bit j weight 2**j),
    2**k classes: with p = 1 it is a function of all the other modalities jointly and
    of no proper subset of them. Splits: train and test, drawn independently.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First release."}
    BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [
        ParityConfig(name=f"m{M}", M=M) for M in (3, 4, 5)
    ]

    @classmethod
    def spec_for(cls, config: ParityConfig) -> DatasetSpec:
        check_config(config)
        return DatasetSpec(
            name="ovaib_parity",
            modalities=tuple(
                Modality(f"x{m}", (config.dim,), "float32", "mlp") for m in range(config.M)
            ),
            targets=(Target("label", "classification", num_classes=2**config.k),),
            splits=tuple(_SPLIT_IDS),
            description=(
                f"Parity of {config.M - 1} random {config.k}-bit vectors (p={config.p}), "
                f"embedded in {config.dim} dims with noise {config.noise}."
            ),
        )

    def extra_features(self):
        c = self.builder_config
        return {
            "bits": tfds.features.Tensor(shape=(c.M, c.k), dtype=np.uint8),
            "is_parity": tfds.features.Scalar(dtype=np.bool_),
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
        bits, is_parity = sample_bits(rng, n, c.M, c.k, c.p)
        x = embed(bits, embedding_maps(c.seed, c.M, c.k, c.dim), c.noise, rng)
        labels = bits_to_int(bits[:, -1])
        for i in range(n):
            example = {f"x{m}": x[i, m] for m in range(c.M)}
            example.update(bits=bits[i], is_parity=is_parity[i], label=labels[i])
            yield i, example
