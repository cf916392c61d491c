"""What a dataset declares about itself, so configs and the trainer need no per-dataset code.

Every dataset in the registry (``ovaib_jax.data.get_spec(name)``) is described by a
:class:`DatasetSpec`: its modalities (name, per-example shape, dtype, suggested encoder)
and its targets (classification or regression). Examples yielded by the input pipeline
are dicts ``{modality.name: array, ..., target.name: array}``.
"""

from __future__ import annotations

import dataclasses

ENCODERS = ("mlp", "cnn1d", "resnet18", "lstm", "small_cnn")
TARGET_KINDS = ("classification", "regression")


@dataclasses.dataclass(frozen=True)
class Modality:
    """One modality of a dataset.

    Attributes:
      name: key of the array in each example, e.g. ``"rgb"``.
      shape: per-example shape, e.g. ``(128, 128, 3)`` (images are channels-last),
        ``(3500, 1)`` for a 1-channel signal (time, channels), ``(32, 74)`` for a feature
        sequence (time, features), ``(76,)`` for a feature vector.
      dtype: numpy dtype name of the stored array (``"float32"``, ``"uint8"``, ...).
      encoder: the suggested encoder name, one of :data:`ENCODERS`.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    encoder: str

    def __post_init__(self):
        if self.encoder not in ENCODERS:
            raise ValueError(
                f"Modality {self.name!r}: unknown encoder {self.encoder!r}; "
                f"valid encoders are {ENCODERS}."
            )


@dataclasses.dataclass(frozen=True)
class Target:
    """A prediction target stored in each example.

    Attributes:
      name: key in each example (``"label"``, ``"position"``, ...).
      kind: ``"classification"`` (integer class ids) or ``"regression"`` (float vector).
      num_classes: number of classes for classification, else ``None``.
      dim: output dimension for regression (``shape == (dim,)``), else ``None``.
    """

    name: str
    kind: str
    num_classes: int | None = None
    dim: int | None = None

    def __post_init__(self):
        if self.kind not in TARGET_KINDS:
            raise ValueError(f"Target {self.name!r}: kind must be one of {TARGET_KINDS}.")
        if self.kind == "classification" and not self.num_classes:
            raise ValueError(f"Target {self.name!r}: classification needs num_classes.")
        if self.kind == "regression" and not self.dim:
            raise ValueError(f"Target {self.name!r}: regression needs dim.")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A dataset: its modalities, targets and splits.

    Attributes:
      name: registry name (``"ovaib_parity"``, ``"wesad"``, ...).
      modalities: the modalities, in the order they are stacked into ``z`` (M, N, d).
      targets: prediction targets for downstream probes.
      splits: available split names, e.g. ``("train", "test")``.
      manual: True when the user must download the raw files (built from a manual dir).
      description: one line for summaries and errors.
    """

    name: str
    modalities: tuple[Modality, ...]
    targets: tuple[Target, ...]
    splits: tuple[str, ...]
    manual: bool = False
    description: str = ""

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)
