"""WESAD (Schmidt et al., ICMI 2018): chest Resp + chest ECG + wrist BVP, 3-class affect.

Built from the subject pickles of the official release, which the user downloads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from ovaib_jax.data._multibench import load_pickle
from ovaib_jax.data.base import SpecBuilder
from ovaib_jax.data.spec import DatasetSpec, Modality, Target

CHEST_HZ = 700  # RespiBAN: every chest channel, and the labels.
BVP_HZ = 64  # Empatica E4 blood volume pulse.
# WESAD label ids kept, in class order: 1 baseline, 2 stress, 3 amusement. The others
# (0 transient, 4 meditation, 5/6/7 "should be ignored") are dropped.
WESAD_LABEL_IDS = (1, 2, 3)
CLASS_NAMES = ("baseline", "stress", "amusement")
# The 15 subjects of the release (S1 and S12 were discarded by the authors).
ALL_SUBJECTS = tuple(f"S{i}" for i in (*range(2, 12), *range(13, 18)))
LABEL_RULES = ("constant", "majority")
RAW_FORMAT = "a Python pickle (a WESAD subject file, S*/S*.pkl of the WESAD release)"


@dataclasses.dataclass(eq=False)
class WesadConfig(tfds.core.BuilderConfig):
    """How the WESAD recordings are cut into examples.

    Attributes:
      window_s: window length in seconds; ``window_s * 700`` and ``window_s * 64`` must
        be whole numbers of samples (5 s gives 3500 chest and 320 BVP samples).
      stride_s: step between window starts in seconds (same constraint); equal to
        ``window_s`` by default, i.e. non-overlapping windows.
      label_rule: ``"constant"``: keep a window only when its 700 Hz labels are all the
        same id in {1, 2, 3}; ``"majority"``: label a window by its most frequent id
        (ties to the smaller id) and keep it when that id is in {1, 2, 3}.
      valid_subjects: subjects of the ``valid`` split (none: no ``valid`` split).
      test_subjects: subjects of the ``test`` split. Every other subject found in the
        manual dir goes to ``train``.
    """

    window_s: float = 5.0
    stride_s: float = 5.0
    label_rule: str = "constant"
    valid_subjects: tuple[str, ...] = ("S13", "S14")
    test_subjects: tuple[str, ...] = ("S15", "S16", "S17")


def _samples(seconds: float, hz: int, what: str) -> int:
    n = Fraction(str(seconds)) * hz
    if n.denominator != 1 or n <= 0:
        raise ValueError(
            f"WESAD: {what} = {seconds} s is not a positive whole number of samples at {hz} Hz."
        )
    return int(n)


class Wesad(SpecBuilder):
    """WESAD: synchronised 5 s windows of chest Resp, chest ECG and wrist BVP; 3 classes.

    Raw files read (the official release, one folder per subject)::

        <manual_dir>/S2/S2.pkl, S3/S3.pkl, ..., S17/S17.pkl   (15 subjects; no S1, S12)

    Each ``S*.pkl`` is a Python 2 pickle (read with ``encoding="latin1"``) of a dict:

    * ``'subject'``: ``'S2'``...;
    * ``'signal'``: ``{'chest': {...}, 'wrist': {...}}``. ``chest`` (RespiBAN, all at
      700 Hz): ``'ACC'`` (N, 3), ``'ECG'``, ``'EMG'``, ``'EDA'``, ``'Temp'``, ``'Resp'``
      (N, 1 each), float64. ``wrist`` (Empatica E4): ``'ACC'`` (32 Hz, (n, 3)),
      ``'BVP'`` (64 Hz, (n, 1)), ``'EDA'`` and ``'TEMP'`` (4 Hz, (n, 1));
    * ``'label'``: (N,) integer protocol condition at 700 Hz: 0 not defined/transient,
      1 baseline, 2 stress, 3 amusement, 4 meditation, 5/6/7 to be ignored.

    The two devices are synchronised in the pickle (both start at t = 0), so window k
    covers chest/label samples ``[k * s * 700, k * s * 700 + 3500)`` and BVP samples
    ``[k * s * 64, k * s * 64 + 320)`` (s = stride in seconds). Windows running past the
    end of either device are dropped.

    Stored per example (values as in the pickle, cast to float32; no filtering, no
    normalisation):

    * ``resp``: chest ``Resp`` (3500, 1) float32; ``ecg``: chest ``ECG`` (3500, 1);
      ``bvp``: wrist ``BVP`` (320, 1) float32;
    * ``label``: 0 baseline, 1 stress, 2 amusement (WESAD ids 1, 2, 3). **Decision:** by
      default a window is kept only when its 3500 labels are constant (no window mixes
      conditions; windows touching transitions are dropped); ``label_rule="majority"``
      keeps it with its most frequent id instead;
    * ``subject``: the subject number (2 for ``S2``), int32, for subject-wise analyses.

    Splits are subject-wise, so no subject is in two splits. **Decision:** the default
    (the paper gives none) is ``valid`` = S13, S14; ``test`` = S15, S16, S17; ``train`` =
    the other 10 subjects. Change it with
    ``Wesad(config=Wesad.make_config(test_subjects=("S2",), valid_subjects=()))``.
    Window length and stride are configurable too (``window_s``, ``stride_s``).
    """

    VERSION = tfds.core.Version("1.0.0")
    HOMEPAGE = "https://archive.ics.uci.edu/dataset/465/wesad+wearable+stress+and+affect+detection"
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First release."}
    BUILDER_CONFIGS: ClassVar[list[WesadConfig]] = [WesadConfig(name="default")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
WESAD (Wearable Stress and Affect Detection, Schmidt et al., ICMI 2018): download
WESAD.zip from the UCI Machine Learning Repository (dataset 465,
https://archive.ics.uci.edu/dataset/465/wesad+wearable+stress+and+affect+detection)
and unzip it (it unpacks to a folder WESAD/). Pass the folder that holds the subject
folders (that WESAD/ folder) as manual_dir:
  <manual_dir>/S2/S2.pkl
  <manual_dir>/S3/S3.pkl
  ...
  <manual_dir>/S17/S17.pkl      (S1 and S12 do not exist)
Only the S*/S*.pkl files are read; the other files of each subject folder may stay."""

    @classmethod
    def spec_for(cls, config: WesadConfig | None) -> DatasetSpec:
        config = config or cls.BUILDER_CONFIGS[0]
        chest = _samples(config.window_s, CHEST_HZ, "window_s")
        bvp = _samples(config.window_s, BVP_HZ, "window_s")
        splits = ("train", "valid", "test") if config.valid_subjects else ("train", "test")
        return DatasetSpec(
            name="wesad",
            modalities=(
                Modality("resp", (chest, 1), "float32", "cnn1d"),
                Modality("ecg", (chest, 1), "float32", "cnn1d"),
                Modality("bvp", (bvp, 1), "float32", "cnn1d"),
            ),
            targets=(Target("label", "classification", num_classes=len(CLASS_NAMES)),),
            splits=splits,
            manual=True,
            description=(
                f"WESAD {config.window_s:g} s windows: chest Resp and ECG at 700 Hz, wrist "
                "BVP at 64 Hz; baseline/stress/amusement; subject-wise splits."
            ),
        )

    def extra_features(self) -> dict[str, tfds.features.FeatureConnector]:
        return {"subject": tfds.features.Scalar(dtype=np.int32)}

    def _split_subjects(self, found: list[str]) -> dict[str, list[str]]:
        """Maps each split of the spec to its subjects (``found``: subjects on disk)."""
        config = self.builder_config
        valid, test = list(config.valid_subjects), list(config.test_subjects)
        both = sorted(set(valid) & set(test))
        if both:
            raise ValueError(
                f"WESAD: subjects {both} are in both valid_subjects and test_subjects."
            )
        if config.label_rule not in LABEL_RULES:
            raise ValueError(
                f"WESAD: unknown label_rule {config.label_rule!r}; valid rules are {LABEL_RULES}."
            )
        _samples(config.stride_s, CHEST_HZ, "stride_s")
        _samples(config.stride_s, BVP_HZ, "stride_s")
        if not test:
            raise ValueError(
                "WESAD: test_subjects is empty; the test split needs at least one subject "
                "(the evaluators read it), e.g. test_subjects=('S17',)."
            )
        train = [s for s in found if s not in set(valid) | set(test)]
        if not train:
            raise ValueError(
                f"WESAD: every subject found {found} is held out (valid {valid}, test {test}); "
                "the train split would be empty."
            )
        splits = {"train": train, "test": test}
        if valid:
            splits["valid"] = valid
        return splits

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        config = self.builder_config
        held_out = [*config.valid_subjects, *config.test_subjects]
        root = self.require_manual_files(
            dl_manager, "S*/S*.pkl", *(f"{s}/{s}.pkl" for s in held_out)
        )
        found = sorted(
            (p.parent.name for p in root.glob("S*/S*.pkl") if p.stem == p.parent.name),
            key=lambda s: (len(s), s),
        )
        splits = self._split_subjects(found)
        return {
            split: self._generate_examples([root / s / f"{s}.pkl" for s in subjects])
            for split, subjects in splits.items()
        }

    def _generate_examples(self, paths: list[epath.Path]) -> Iterator[tuple[str, dict]]:
        config = self.builder_config
        win_c = _samples(config.window_s, CHEST_HZ, "window_s")
        win_b = _samples(config.window_s, BVP_HZ, "window_s")
        hop_c = _samples(config.stride_s, CHEST_HZ, "stride_s")
        hop_b = _samples(config.stride_s, BVP_HZ, "stride_s")
        for path in paths:
            subject, resp, ecg, bvp, labels = _read_subject(path, self)
            number = int(subject.lstrip("S"))
            n_windows = (
                min(
                    (len(resp) - win_c) // hop_c,
                    (len(labels) - win_c) // hop_c,
                    (len(bvp) - win_b) // hop_b,
                )
                + 1
            )
            for k in range(max(n_windows, 0)):
                c0, b0 = k * hop_c, k * hop_b
                label = _window_label(labels[c0 : c0 + win_c], config.label_rule)
                if label is None:
                    continue
                yield (
                    f"{subject}_{k:06d}",
                    {
                        "resp": resp[c0 : c0 + win_c, None],
                        "ecg": ecg[c0 : c0 + win_c, None],
                        "bvp": bvp[b0 : b0 + win_b, None],
                        "label": label,
                        "subject": np.int32(number),
                    },
                )


def _read_subject(
    path: epath.Path, builder: SpecBuilder
) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reads one ``S*.pkl``: (subject, resp (N,), ecg (N,), bvp (n,), labels (N,))."""
    with builder.reading_raw_file(path, RAW_FORMAT):
        data = load_pickle(path)
    try:
        chest, wrist = data["signal"]["chest"], data["signal"]["wrist"]
        resp = np.asarray(chest["Resp"], np.float32).reshape(-1)
        ecg = np.asarray(chest["ECG"], np.float32).reshape(-1)
        bvp = np.asarray(wrist["BVP"], np.float32).reshape(-1)
        labels = np.asarray(data["label"]).reshape(-1).astype(np.int64)
    except (KeyError, TypeError) as e:
        raise ValueError(
            f"WESAD: {path} does not have the layout of a WESAD subject pickle "
            f"(missing {e}); expected 'signal' -> 'chest' -> 'Resp'/'ECG', 'signal' -> "
            "'wrist' -> 'BVP', and 'label'."
        ) from e
    subject = str(data.get("subject", path.stem))
    if subject != path.stem:
        raise ValueError(f"WESAD: {path} holds subject {subject!r}, not {path.stem!r}.")
    if len(resp) != len(ecg):
        raise ValueError(f"WESAD: {path}: chest Resp and ECG lengths differ.")
    return subject, resp, ecg, bvp, labels


def _window_label(ids: np.ndarray, rule: str) -> int | None:
    """The class (0, 1, 2) of a window of WESAD label ids, or None to drop the window."""
    if rule == "constant":
        wesad_id = int(ids[0]) if np.all(ids == ids[0]) else None
    else:
        counts = np.bincount(ids.clip(min=0))
        wesad_id = int(np.argmax(counts))
    if wesad_id not in WESAD_LABEL_IDS:
        return None
    return WESAD_LABEL_IDS.index(wesad_id)
