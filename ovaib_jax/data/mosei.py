"""CMU-MOSEI as preprocessed by MultiBench: vision, audio and text feature sequences."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from ovaib_jax.data._multibench import load_pickle
from ovaib_jax.data.base import SpecBuilder
from ovaib_jax.data.spec import DatasetSpec, Modality, Target

AUDIO_DIM = 74  # COVAREP
TEXT_DIM = 300  # GloVe
SPLITS = ("train", "valid", "test")
RAW_FORMAT = "a Python pickle (MultiBench's CMU-MOSEI file)"


@dataclasses.dataclass(eq=False)
class MoseiConfig(tfds.core.BuilderConfig):
    """Which MultiBench pickle to read and how many time steps to keep.

    Attributes:
      file_name: the pickle under manual_dir.
      vision_dim: feature size of its ``'vision'`` arrays (713 in ``mosei_raw.pkl``,
        35 (FACET) in ``mosei_senti_data.pkl``).
      seq_len: time steps stored per modality; the MultiBench files hold 50.
    """

    file_name: str = "mosei_raw.pkl"
    vision_dim: int = 713
    seq_len: int = 50


class Mosei(SpecBuilder):
    """CMU-MOSEI (MultiBench pickles): vision, audio, text sequences; binary sentiment.

    Raw file read (one of the two MultiBench releases of CMU-MOSEI, by config)::

        <manual_dir>/mosei_raw.pkl            (config "raw", the default)
        <manual_dir>/mosei_senti_data.pkl     (config "senti")

    Each is a Python 3 pickle of ``{'train': d, 'valid': d, 'test': d}``; each ``d`` is a
    dict of word-aligned arrays (N utterances, 50 steps, zero padding at the front):
    ``'vision'`` (N, 50, 713) in ``mosei_raw.pkl`` or (N, 50, 35) (FACET) in
    ``mosei_senti_data.pkl``; ``'audio'`` (N, 50, 74) (COVAREP, may hold ``-inf``);
    ``'text'`` (N, 50, 300) (GloVe); ``'labels'`` (N, 1, 1) float sentiment in [-3, 3];
    ``'id'`` (not read). This is the layout MultiBench's
    ``datasets/affect/get_data.py`` reads (its examples use vision size 713 for
    ``mosei_raw.pkl`` and 35 for ``mosei_senti_data.pkl``).

    Processing, as MultiBench's loader does it:

    * utterances whose ``text`` is all zero are dropped (MultiBench ``drop_entry``);
    * non-finite values become 0 (MultiBench zeroes ``-inf`` in audio; here every
      non-finite value of every modality, so no NaN reaches training);
    * ``label`` = 1 (positive) iff sentiment > 0, else 0: a score of exactly 0 is
      **negative**, as in MultiBench's ``get_class`` for MOSI/MOSEI;
    * ``sentiment`` = the raw score, shape (1,) float32 (regression target).

    Stored per example: ``vision`` (L, 713 or 35), ``audio`` (L, 74), ``text``
    (L, 300), all float32, with L = ``seq_len`` (50 by default, the files' length). A
    shorter ``seq_len`` keeps the **last** L steps (the files pad at the front, so only
    padding is lost for utterances of at most L words); a longer one pads zeros at the
    front.

    SPEC section 6 lists the paper's shapes as visual 35x713, acoustic 32x74, text
    32x300: the 713-d vision features are those of ``mosei_raw.pkl``, and the 32 steps
    are reproduced with ``Mosei.make_config("raw", seq_len=32)``; the leading "35"
    matches no MultiBench file (it is the FACET size of the other release).

    Splits: ``train``, ``valid`` and ``test`` as in the pickle.
    """

    VERSION = tfds.core.Version("1.0.0")
    HOMEPAGE = "https://github.com/pliang279/MultiBench"
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First release."}
    BUILDER_CONFIGS: ClassVar[list[MoseiConfig]] = [
        MoseiConfig(name="raw", file_name="mosei_raw.pkl", vision_dim=713),
        MoseiConfig(name="senti", file_name="mosei_senti_data.pkl", vision_dim=35),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
CMU-MOSEI as preprocessed by MultiBench (Liang et al., NeurIPS 2021 Datasets and
Benchmarks): follow "Affective computing" in the MultiBench data download page
(https://multibench.readthedocs.io/en/latest/start/datadownload.html, repository
https://github.com/pliang279/MultiBench) and download the MOSEI pickle. Put it
directly in manual_dir:
  <manual_dir>/mosei_raw.pkl            (config "raw", the default: vision 713-d)
  <manual_dir>/mosei_senti_data.pkl     (config "senti": vision 35-d)
Only the file of the chosen config is needed."""

    @classmethod
    def spec_for(cls, config: MoseiConfig | None) -> DatasetSpec:
        config = config or cls.BUILDER_CONFIGS[0]
        length = config.seq_len
        return DatasetSpec(
            name="mosei",
            modalities=(
                Modality("vision", (length, config.vision_dim), "float32", "lstm"),
                Modality("audio", (length, AUDIO_DIM), "float32", "lstm"),
                Modality("text", (length, TEXT_DIM), "float32", "lstm"),
            ),
            targets=(
                Target("label", "classification", num_classes=2),
                Target("sentiment", "regression", dim=1),
            ),
            splits=SPLITS,
            manual=True,
            description=(
                f"CMU-MOSEI ({config.file_name}, MultiBench): {length}-step vision, audio and "
                "text features; binary sentiment (> 0 positive) and the raw score."
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        config = self.builder_config
        if config.seq_len < 1:
            raise ValueError(f"MOSEI: seq_len must be >= 1, got {config.seq_len}.")
        root = self.require_manual_files(dl_manager, config.file_name)
        with self.reading_raw_file(root / config.file_name, RAW_FORMAT):
            data = load_pickle(root / config.file_name)
        missing = [s for s in SPLITS if not isinstance(data, dict) or s not in data]
        if missing:
            raise ValueError(
                f"MOSEI: {root / config.file_name} lacks the split(s) {missing}; expected a "
                f"dict with keys {SPLITS} (the MultiBench layout)."
            )
        return {split: self._generate_examples(data[split], split) for split in SPLITS}

    def _generate_examples(self, part: dict, split: str) -> Iterator[tuple[str, dict]]:
        config = self.builder_config
        arrays = {}
        for key, dim in (("vision", config.vision_dim), ("audio", AUDIO_DIM), ("text", TEXT_DIM)):
            if key not in part:
                raise ValueError(f"MOSEI: split {split!r} has no {key!r} array.")
            x = np.asarray(part[key], dtype=np.float32)
            if x.ndim != 3 or x.shape[2] != dim:
                hint = (
                    " (the config 'raw' reads mosei_raw.pkl with 713-d vision, 'senti' reads "
                    "mosei_senti_data.pkl with 35-d vision)"
                    if key == "vision"
                    else ""
                )
                raise ValueError(
                    f"MOSEI: {split!r} {key!r} has shape {x.shape}; expected (N, T, {dim}){hint}."
                )
            arrays[key] = x
        if "labels" not in part:
            raise ValueError(f"MOSEI: split {split!r} has no 'labels' array.")
        scores = np.asarray(part["labels"], dtype=np.float32).reshape(len(arrays["text"]), -1)
        scores = scores[:, 0]
        for i in range(len(scores)):
            if not np.any(arrays["text"][i]):
                continue  # MultiBench's drop_entry: an utterance without words.
            example = {
                key: _fit_length(
                    np.nan_to_num(x[i], nan=0.0, posinf=0.0, neginf=0.0), config.seq_len
                )
                for key, x in arrays.items()
            }
            example["label"] = int(scores[i] > 0)
            example["sentiment"] = scores[i : i + 1]
            yield f"{split}_{i:06d}", example


def _fit_length(x: np.ndarray, length: int) -> np.ndarray:
    """(T, D) -> (length, D): keeps the last ``length`` steps, or pads zeros at the front."""
    if len(x) >= length:
        return x[len(x) - length :]
    return np.concatenate([np.zeros((length - len(x), x.shape[1]), x.dtype), x])
