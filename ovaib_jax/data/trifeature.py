"""``ovaib_trifeature``: redundancy, uniqueness and synergy together, M image views (offline)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from ovaib_jax.data.base import SpecBuilder
from ovaib_jax.data.spec import DatasetSpec, Modality, Target

_SPLIT_IDS = {"train": 0, "test": 1}

SIZE = 32  # images are SIZE x SIZE x 3, uint8
SUPERSAMPLE = 2  # shape masks are anti-aliased on a SUPERSAMPLE x finer grid
BASE_RADIUS = 11.0  # pixels from the centre to the edge of a shape at scale 1
NUM_SHAPES = NUM_TEXTURES = NUM_COLORS = 10
SHADES = 5  # colours per palette: colour c has palette bit c // 5 and shade c % 5
BACKGROUND = 0.1  # grey level of the background, in [0, 1]
DARK = 0.4  # brightness of a texture's dark parts (its bright parts are 1)

SHAPE_NAMES = (
    "circle",
    "square",
    "triangle",
    "plus",
    "diamond",
    "ring",
    "star",
    "x_cross",
    "half_disc",
    "heart",
)
TEXTURE_NAMES = (
    "h_stripes",
    "v_stripes",
    "diag_stripes",
    "antidiag_stripes",
    "checker",
    "dots",
    "solid",
    "rings",
    "grid",
    "waves",
)
COLOR_NAMES = (
    # palette 0 (colour bit 0)
    "red",
    "orange",
    "yellow",
    "pink",
    "brown",
    # palette 1 (colour bit 1)
    "blue",
    "cyan",
    "green",
    "purple",
    "white",
)
PALETTE = np.array(
    [
        (0.90, 0.10, 0.10),
        (1.00, 0.55, 0.00),
        (0.95, 0.90, 0.10),
        (0.95, 0.40, 0.75),
        (0.55, 0.30, 0.10),
        (0.10, 0.25, 0.95),
        (0.10, 0.85, 0.90),
        (0.15, 0.70, 0.20),
        (0.55, 0.20, 0.85),
        (0.92, 0.92, 0.92),
    ]
)

# Columns of the stored ``nuisance`` array (one row per view).
NUISANCE_FIELDS = (
    "shift_x",  # shape centre to the right of the image centre, pixels
    "shift_y",  # shape centre below the image centre, pixels
    "scale",  # shape size (radius BASE_RADIUS * scale)
    "phase",  # offset of the texture along its period, in [0, 1) (circular)
    "tint_r",  # colour jitter added to the palette colour, per channel
    "tint_g",
    "tint_b",
)


@dataclasses.dataclass(eq=False)
class TrifeatureConfig(tfds.core.BuilderConfig):
    """Parameters of ``ovaib_trifeature``.

    Attributes:
      M: number of views (>= 2; the builder configs are M = 3, 4, 5).
      num_train, num_test: split sizes.
      max_shift: the shape centre moves uniformly in [-max_shift, max_shift] pixels on
        each axis, independently per view.
      min_scale, max_scale: the shape radius is BASE_RADIUS times a uniform scale in
        this range, per view (BASE_RADIUS * max_scale + max_shift <= SIZE / 2).
      color_jitter: each view's colour is its palette colour plus a uniform
        [-color_jitter, color_jitter] offset per channel (clipped to [0, 1]).
      noise: standard deviation of the Gaussian pixel noise, in [0, 1] units (x 255).
      seed: seed of the samples (each split draws from its own stream).
    """

    M: int = 3
    num_train: int = 5_000
    num_test: int = 1_000
    max_shift: float = 3.0
    min_scale: float = 0.8
    max_scale: float = 1.1
    color_jitter: float = 0.05
    noise: float = 0.03
    seed: int = 0


def check_config(c: TrifeatureConfig) -> None:
    """Raises ValueError for an invalid config."""
    if c.M < 2:
        raise ValueError(f"ovaib_trifeature needs M >= 2 views, got {c.M}.")
    if min(c.num_train, c.num_test) <= 0:
        raise ValueError(f"ovaib_trifeature: split sizes must be positive, got {c}.")
    if not 0.0 < c.min_scale <= c.max_scale:
        raise ValueError(f"ovaib_trifeature: need 0 < min_scale <= max_scale, got {c}.")
    if c.max_shift < 0 or BASE_RADIUS * c.max_scale + c.max_shift > SIZE / 2:
        raise ValueError(
            f"ovaib_trifeature: shapes must fit in the image: need max_shift >= 0 and "
            f"{BASE_RADIUS} * max_scale + max_shift <= {SIZE // 2}, got {c}."
        )
    if c.color_jitter < 0 or c.noise < 0:
        raise ValueError(f"ovaib_trifeature: color_jitter and noise must be >= 0, got {c}.")


# ---- factors and labels --------------------------------------------------------------


def sample_factors(rng: np.random.Generator, n: int, M: int) -> dict[str, np.ndarray]:
    """Draws the ground-truth factors of ``n`` examples of M views.

    Returns int64 arrays:
      shape: (n,) uniform in 0..9, drawn once per example (every view shows it).
      texture: (n, M) i.i.d. uniform in 0..9 (each view its own).
      color: (n, M) in 0..9, ``SHADES * bit + shade``: shades i.i.d. uniform in 0..4;
        bits 0..M-2 i.i.d. uniform, bit M-1 their XOR. So any M-1 of the bits are i.i.d.
        uniform (every proper subset of views is independent of the others' bits) and
        the XOR of all M bits is 0.
    """
    shape = rng.integers(0, NUM_SHAPES, n)
    texture = rng.integers(0, NUM_TEXTURES, (n, M))
    bits = rng.integers(0, 2, (n, M))
    bits[:, -1] = np.bitwise_xor.reduce(bits[:, :-1], axis=1)
    shade = rng.integers(0, SHADES, (n, M))
    return dict(shape=shape, texture=texture, color=SHADES * bits + shade)


def color_bits(color: np.ndarray) -> np.ndarray:
    """The palette bit of colour ids: ``color // SHADES`` (0: warm palette, 1: the other)."""
    return np.asarray(color) // SHADES


def labels(f: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The two higher-order labels, int64 (n,).

    synergy_label: the XOR of the colour bits of views 0..M-2 (= the bit of view M-1).
    task_label: ``(texture_0 + color_1) mod 10``. Each of its two factors is uniform
      and independent of the other, so view 0 alone and view 1 alone carry no
      information about it (chance 10 %), the two together determine it.
    """
    bits = color_bits(f["color"])
    return dict(
        synergy_label=np.bitwise_xor.reduce(bits[:, :-1], axis=1),
        task_label=(f["texture"][:, 0] + f["color"][:, 1]) % NUM_COLORS,
    )


def sample_nuisance(rng: np.random.Generator, n: int, c: TrifeatureConfig) -> np.ndarray:
    """Per-view nuisance float32 (n, M, len(NUISANCE_FIELDS)), i.i.d. over examples and views."""
    size = (n, c.M)
    cols = [
        rng.uniform(-c.max_shift, c.max_shift, size),
        rng.uniform(-c.max_shift, c.max_shift, size),
        rng.uniform(c.min_scale, c.max_scale, size),
        rng.uniform(0.0, 1.0, size),
        *(rng.uniform(-c.color_jitter, c.color_jitter, size) for _ in range(3)),
    ]
    return np.stack(cols, axis=-1).astype(np.float32)


# ---- shapes (binary masks of normalised coordinates: u right, v down, radius 1) --------


def _plus(u, v, half_width=0.3, length=0.9):
    a, b = np.abs(u), np.abs(v)
    return ((a <= half_width) & (b <= length)) | ((b <= half_width) & (a <= length))


def _triangle(u, v):
    y = -v  # pointing up: apex (0, 0.9), base y = -0.7 from x = -0.92 to 0.92
    return (y >= -0.7) & (np.abs(u) <= 0.92 * (0.9 - y) / 1.6)


def _star(u, v):
    theta = np.arctan2(-v, u) - np.pi / 2  # a tip points up
    return np.hypot(u, v) <= 0.45 + 0.45 * ((1.0 + np.cos(5.0 * theta)) / 2.0) ** 2


def _x_cross(u, v):
    s = np.sqrt(0.5)
    return _plus((u + v) * s, (u - v) * s, half_width=0.25, length=0.95)


def _half_disc(u, v):
    w = v + 0.3  # the lower half of a disc centred 0.3 above the centre
    return (u * u + w * w <= 0.95**2) & (w >= 0)


def _heart(u, v):
    x, y = u / 0.8, -v / 0.8 + 0.15
    return (x * x + y * y - 1.0) ** 3 - x * x * y**3 <= 0


SHAPES: tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], ...] = (
    lambda u, v: u * u + v * v <= 0.85**2,
    lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.72,
    _triangle,
    _plus,
    lambda u, v: np.abs(u) + np.abs(v) <= 0.95,
    lambda u, v: (u * u + v * v <= 0.9**2) & (u * u + v * v >= 0.5**2),
    _star,
    _x_cross,
    _half_disc,
    _heart,
)


def shape_coverage(shape: np.ndarray, nuisance: np.ndarray) -> np.ndarray:
    """The fraction of each pixel covered by the shape, float64 (n, SIZE, SIZE) in [0, 1].

    shape int (n,); nuisance (n, len(NUISANCE_FIELDS)) of one view (its shift and
    scale are used). Each shape is a fixed region of coordinates normalised by the
    view's centre and radius, sampled on a SUPERSAMPLE x finer grid.
    """
    n = len(shape)
    t = (np.arange(SIZE * SUPERSAMPLE) + 0.5) / SUPERSAMPLE  # pixel coordinates
    cx = SIZE / 2 + nuisance[:, 0].astype(np.float64)
    cy = SIZE / 2 + nuisance[:, 1].astype(np.float64)
    r = BASE_RADIUS * nuisance[:, 2].astype(np.float64)
    u = (t[None, None, :] - cx[:, None, None]) / r[:, None, None]
    v = (t[None, :, None] - cy[:, None, None]) / r[:, None, None]
    u, v = np.broadcast_arrays(u, v)
    inside = np.zeros(u.shape, bool)
    for s, region in enumerate(SHAPES):
        sel = shape == s
        if sel.any():
            inside[sel] = region(u[sel], v[sel])
    return inside.reshape(n, SIZE, SUPERSAMPLE, SIZE, SUPERSAMPLE).mean(axis=(2, 4))


# ---- textures (binary patterns in pixel units, relative to the shape centre) -----------


def _stripes(a, phase, period=4.0):
    return np.mod(a / period + phase, 1.0) < 0.5


def _texture_patterns(dx, dy, phase) -> tuple[np.ndarray, ...]:
    s = np.sqrt(0.5)
    du, dv = np.mod(dx / 5.0 + phase, 1.0), np.mod(dy / 5.0 + phase, 1.0)
    return (
        _stripes(dy, phase),
        _stripes(dx, phase),
        _stripes((dx + dy) * s, phase),
        _stripes((dx - dy) * s, phase),
        (np.floor(dx / 3.0 + phase) + np.floor(dy / 3.0 + phase)) % 2 == 0,
        ((du - 0.5) ** 2 + (dv - 0.5) ** 2) * 25.0 <= 1.4**2,
        np.ones_like(dx, bool),
        _stripes(np.hypot(dx, dy), phase),
        (du < 0.34) | (dv < 0.34),
        _stripes(dy + 1.5 * np.sin(2.0 * np.pi * dx / 8.0), phase),
    )


def texture_pattern(texture: np.ndarray, nuisance: np.ndarray) -> np.ndarray:
    """Texture brightness float64 (n, SIZE, SIZE): 1 on the pattern, DARK elsewhere.

    texture int (n,); nuisance of one view (its shift and phase are used): patterns
    are drawn relative to the shape centre, offset by ``phase`` periods.
    """
    t = np.arange(SIZE) + 0.5
    dx = t[None, None, :] - (SIZE / 2 + nuisance[:, 0].astype(np.float64))[:, None, None]
    dy = t[None, :, None] - (SIZE / 2 + nuisance[:, 1].astype(np.float64))[:, None, None]
    dx, dy = np.broadcast_arrays(dx, dy)
    phase = np.broadcast_to(nuisance[:, 3].astype(np.float64)[:, None, None], dx.shape)
    out = np.zeros(dx.shape)
    for k in range(NUM_TEXTURES):
        sel = texture == k
        if sel.any():
            out[sel] = _texture_patterns(dx[sel], dy[sel], phase[sel])[k]
    return DARK + (1.0 - DARK) * out


def render(
    shape: np.ndarray,
    texture: np.ndarray,
    color: np.ndarray,
    nuisance: np.ndarray,
    noise: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """One view of n examples, uint8 (n, SIZE, SIZE, 3).

    Pixel = BACKGROUND outside the shape; inside, the view's colour
    ``clip(PALETTE[color] + tint, 0, 1)`` times the texture brightness; the coverage
    blends the two at the edges; then Gaussian noise of std ``noise``, clipping to
    [0, 1], x 255, rounding.
    """
    coverage = shape_coverage(shape, nuisance)[..., None]
    rgb = np.clip(PALETTE[color] + nuisance[:, 4:7].astype(np.float64), 0.0, 1.0)
    fg = rgb[:, None, None, :] * texture_pattern(texture, nuisance)[..., None]
    x = BACKGROUND * (1.0 - coverage) + coverage * fg
    if noise > 0:
        x = x + noise * rng.standard_normal(x.shape)
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


class OvaibTrifeature(SpecBuilder):
    """Trifeature-like images in M views where redundancy, uniqueness and synergy co-exist.

    In the spirit of Trifeature (Hermann and Lampinen 2020; CoMM's bimodal benchmark),
    generated with numpy. Each example has one ``shape`` (10 binary masks: circle,
    square, triangle, plus, diamond, ring, star, x_cross, half_disc, heart) drawn in
    every view (redundancy); view m has its own ``texture_m`` (10 patterns: horizontal,
    vertical, diagonal and anti-diagonal stripes, checker, dots, solid, rings, grid,
    waves), i.i.d. across views (uniqueness), and its own ``color_m`` (10 colours).
    Colour ids 0-4 (red, orange, yellow, pink, brown) form palette 0, 5-9 (blue, cyan,
    green, purple, white) palette 1: the *colour bit* of view m is ``color_m // 5``
    (stored in ``color_bits``), its shade ``color_m % 5`` is uniform and private. The
    bits of views 0..M-2 are i.i.d. uniform and the bit of view M-1 is their XOR: any
    M-1 views' bits are independent and uniform, all M are deterministic (the XOR of
    all M bits is 0), a dependence of order M only.

    Labels: ``synergy_label`` = that XOR (2 classes; from views 0..M-2 it needs all of
    them jointly, view M-1 shows it as its colour bit); ``task_label`` =
    ``(texture_0 + color_1) mod 10`` (10 classes; CoMM-style task synergy: view 0 alone
    and view 1 alone say nothing about it, the two jointly determine it).

    View ``view{m}`` (uint8 (32, 32, 3)): the shape mask (anti-aliased, centre shifted
    by up to ``max_shift`` pixels, radius 11 px times a scale in [min_scale,
    max_scale], per view) filled with the view's colour (plus a uniform per-channel
    jitter up to ``color_jitter``) times its texture (brightness 1 on the pattern, 0.4
    off it; drawn relative to the shape centre with a random phase), on a grey
    background (0.1), plus Gaussian pixel noise (std ``noise``); small CNNs apply.

    Targets (classification): ``shape`` (10), ``texture_{m}`` (10) and ``color_{m}``
    (10) for each view, ``synergy_label`` (2), ``task_label`` (10). Stored too:
    ``color_bits`` uint8 (M,); ``texture_onehot`` float32 (M, 10), a per-modality target
    (row m private to view m); ``nuisance`` float32 (M, 7) with columns
    ``NUISANCE_FIELDS`` (shift_x, shift_y, scale, phase, tint_r, tint_g, tint_b).
    Splits: train and test, independent draws; the build is deterministic (seeded by
    ``seed`` and the split).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First release."}
    BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [
        TrifeatureConfig(name=f"m{M}", M=M) for M in (3, 4, 5)
    ]
    CHUNK: ClassVar[int] = 256  # examples rendered at a time (bounds the memory)

    @classmethod
    def spec_for(cls, config: TrifeatureConfig) -> DatasetSpec:
        c = config
        check_config(c)
        per_view = [
            Target(f"{factor}_{m}", "classification", num_classes=10)
            for factor in ("texture", "color")
            for m in range(c.M)
        ]
        return DatasetSpec(
            name="ovaib_trifeature",
            modalities=tuple(
                Modality(f"view{m}", (SIZE, SIZE, 3), "uint8", "small_cnn") for m in range(c.M)
            ),
            targets=(
                Target("shape", "classification", num_classes=NUM_SHAPES),
                *per_view,
                Target("synergy_label", "classification", num_classes=2),
                Target("task_label", "classification", num_classes=NUM_COLORS),
            ),
            splits=tuple(_SPLIT_IDS),
            description=(
                f"{c.M} image views: a shared shape, a texture per view, colour bits whose "
                "XOR is 0, a task label of texture_0 and color_1."
            ),
        )

    def extra_features(self):
        M = self.builder_config.M
        tensor = tfds.features.Tensor
        return {
            "color_bits": tensor(shape=(M,), dtype=np.uint8),
            "texture_onehot": tensor(shape=(M, NUM_TEXTURES), dtype=np.float32),
            "nuisance": tensor(shape=(M, len(NUISANCE_FIELDS)), dtype=np.float32),
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
        f = sample_factors(rng, n, c.M)
        t = labels(f)
        nuisance = sample_nuisance(rng, n, c)
        bits = color_bits(f["color"]).astype(np.uint8)
        onehot = np.eye(NUM_TEXTURES, dtype=np.float32)[f["texture"]]
        for start in range(0, n, self.CHUNK):
            rows = slice(start, min(n, start + self.CHUNK))
            views = [
                render(
                    f["shape"][rows],
                    f["texture"][rows, m],
                    f["color"][rows, m],
                    nuisance[rows, m],
                    c.noise,
                    rng,
                )
                for m in range(c.M)
            ]
            for j, i in enumerate(range(rows.start, rows.stop)):
                example = {f"view{m}": views[m][j] for m in range(c.M)}
                example["shape"] = f["shape"][i]
                for m in range(c.M):
                    example[f"texture_{m}"] = f["texture"][i, m]
                    example[f"color_{m}"] = f["color"][i, m]
                example.update({k: v[i] for k, v in t.items()})
                example.update(color_bits=bits[i], texture_onehot=onehot[i], nuisance=nuisance[i])
                yield i, example
