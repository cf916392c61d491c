"""The builders of the paper's datasets, built from tiny files in their original formats.

Each fixture writer below writes what the authors distribute, with the original keys,
nesting and dtypes (WESAD subject pickles, MultiBench's MOSEI pickle, the Vision&Touch
episode HDF5 files, the fannypack trajectory files of MuJoCo Push), only much shorter.
The HDF5 tests need h5py and are skipped without it.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from ovaib_jax.data import registry
from ovaib_jax.data.base import CorruptDataError, MissingDataError
from ovaib_jax.data.mosei import Mosei
from ovaib_jax.data.mujoco_push import POSITION_MEAN, POSITION_STD, MujocoPush, _pose
from ovaib_jax.data.spec import DatasetSpec
from ovaib_jax.data.vision_touch import VisionTouch
from ovaib_jax.data.wesad import Wesad

# ---- helpers -------------------------------------------------------------------------


def _check_against_spec(example: dict, spec: DatasetSpec) -> None:
    """Every modality and target of ``spec`` is in ``example`` with its shape and dtype."""
    for m in spec.modalities:
        x = np.asarray(example[m.name])
        assert x.shape == m.shape, (m.name, x.shape, m.shape)
        assert x.dtype == np.dtype(m.dtype), (m.name, x.dtype, m.dtype)
    for t in spec.targets:
        y = np.asarray(example[t.name])
        if t.kind == "classification":
            assert y.shape == () and np.issubdtype(y.dtype, np.integer), (t.name, y)
            assert 0 <= int(y) < t.num_classes
        else:
            assert y.shape == (t.dim,) and y.dtype == np.float32, (t.name, y.shape, y.dtype)


def _build(builder):
    builder.download_and_prepare()
    sources = builder.as_data_source()
    assert set(sources) == set(builder.spec.splits)
    return {split: [src[i] for i in range(len(src))] for split, src in sources.items()}


def _assert_nothing_built(data_dir: Path) -> None:
    """A failed build leaves no record file, no dataset_info and no incomplete directory."""
    leftovers = [
        p
        for p in data_dir.rglob("*")
        if "array_record" in p.name or p.name == "dataset_info.json" or "incomplete" in p.name
    ]
    assert leftovers == []


@pytest.fixture
def h5py():
    return pytest.importorskip("h5py")


# ---- WESAD ---------------------------------------------------------------------------

CHEST, BVP = 3500, 320  # samples in a 5 s window at 700 Hz and 64 Hz
# The 5 windows of every fixture subject have the WESAD label ids: 1 (baseline), 2
# (stress), 1 then 3 (1000 baseline then 2500 amusement samples), 3 (amusement), 0.


def write_wesad(root: Path, subjects: list[str], seed: int = 0) -> dict[str, dict]:
    """Writes ``root/S*/S*.pkl`` as the WESAD release does; returns the written dicts."""
    rng = np.random.default_rng(seed)
    written = {}
    n_chest, n_wrist_s = 5 * CHEST, 5 * 5  # 5 windows; 25 s of wrist data
    for s in subjects:
        segments = [(1, CHEST), (2, CHEST), (1, 1000), (3, CHEST - 1000), (3, CHEST), (0, CHEST)]
        label = np.concatenate([np.full(n, i) for i, n in segments]).astype(np.int32)
        chest = {k: rng.normal(size=(n_chest, 1)) for k in ("ECG", "EMG", "EDA", "Temp", "Resp")}
        chest["ACC"] = rng.normal(size=(n_chest, 3))
        wrist = {
            "ACC": rng.normal(size=(32 * n_wrist_s, 3)),
            "BVP": rng.normal(size=(64 * n_wrist_s, 1)),
            "EDA": rng.normal(size=(4 * n_wrist_s, 1)),
            "TEMP": rng.normal(size=(4 * n_wrist_s, 1)),
        }
        data = {"signal": {"chest": chest, "wrist": wrist}, "label": label, "subject": s}
        (root / s).mkdir(parents=True)
        with open(root / s / f"{s}.pkl", "wb") as f:
            pickle.dump(data, f, protocol=2)
        written[s] = data
    return written


def _wesad_window(example: dict, written: dict) -> tuple[str, int]:
    """(subject, window index) of an example, found by its Resp samples."""
    s = f"S{int(example['subject'])}"
    resp = written[s]["signal"]["chest"]["Resp"][:, 0].astype(np.float32)
    for k in range(len(resp) // CHEST):
        if np.array_equal(example["resp"][:, 0], resp[k * CHEST : (k + 1) * CHEST]):
            return s, k
    raise AssertionError(f"example of {s} matches no window")


def test_wesad_windows_labels_and_subject_splits(tmp_path):
    written = write_wesad(tmp_path / "manual", ["S2", "S3", "S4"])
    config = Wesad.make_config(valid_subjects=("S3",), test_subjects=("S4",))
    builder = Wesad(config=config, data_dir=tmp_path / "data", manual_dir=tmp_path / "manual")
    splits = _build(builder)

    subjects = {split: {f"S{int(e['subject'])}" for e in ex} for split, ex in splits.items()}
    assert subjects == {"train": {"S2"}, "valid": {"S3"}, "test": {"S4"}}
    for split, examples in splits.items():
        # "constant" rule: the mixed window (2) and the transient one (4) are dropped.
        assert len(examples) == 3, split
        seen = set()
        for e in examples:
            _check_against_spec(e, builder.spec)
            s, k = _wesad_window(e, written)
            seen.add(k)
            chest, wrist = written[s]["signal"]["chest"], written[s]["signal"]["wrist"]
            np.testing.assert_array_equal(
                e["ecg"][:, 0], chest["ECG"][k * CHEST : (k + 1) * CHEST, 0].astype(np.float32)
            )
            np.testing.assert_array_equal(
                e["bvp"][:, 0], wrist["BVP"][k * BVP : (k + 1) * BVP, 0].astype(np.float32)
            )
            assert e["label"] == {0: 0, 1: 1, 3: 2}[k]  # ids 1, 2, 3 -> classes 0, 1, 2
        assert seen == {0, 1, 3}
    # The first window of the first subject: exactly the first 3500 Resp samples written.
    first = next(e for e in splits["train"] if _wesad_window(e, written) == ("S2", 0))
    np.testing.assert_array_equal(
        first["resp"], written["S2"]["signal"]["chest"]["Resp"][:CHEST].astype(np.float32)
    )
    assert builder.spec.modality_names == ("resp", "ecg", "bvp")
    assert builder.spec.modalities[0].shape == (3500, 1)
    assert builder.spec.modalities[2].shape == (320, 1)


def test_wesad_majority_rule_keeps_mixed_windows(tmp_path):
    write_wesad(tmp_path / "manual", ["S2", "S3"])
    config = Wesad.make_config(label_rule="majority", valid_subjects=(), test_subjects=("S3",))
    builder = Wesad(config=config, data_dir=tmp_path / "data", manual_dir=tmp_path / "manual")
    assert builder.spec.splits == ("train", "test")
    splits = _build(builder)
    # Window 2 (1000 baseline + 2500 amusement samples) is now kept as amusement.
    assert sorted(int(e["label"]) for e in splits["train"]) == [0, 1, 2, 2]


def test_wesad_missing_files_one_clear_error(tmp_path):
    (tmp_path / "manual").mkdir()
    builder = Wesad(data_dir=tmp_path / "data", manual_dir=tmp_path / "manual")
    with pytest.raises(MissingDataError) as err:
        builder.download_and_prepare()
    message = str(err.value)
    for needle in ("'wesad'", "S*/S*.pkl", "archive.ics.uci.edu", "<manual_dir>/S2/S2.pkl"):
        assert needle in message
    _assert_nothing_built(tmp_path / "data")

    # A held-out subject that is not on disk is named too.
    write_wesad(tmp_path / "manual2", ["S2"])
    config = Wesad.make_config(valid_subjects=(), test_subjects=("S9",))
    builder = Wesad(config=config, data_dir=tmp_path / "data", manual_dir=tmp_path / "manual2")
    with pytest.raises(MissingDataError, match=r"S9/S9\.pkl"):
        builder.download_and_prepare()
    _assert_nothing_built(tmp_path / "data")


def test_an_empty_held_out_split_is_one_clear_error_before_anything_is_built(tmp_path, h5py):
    """test_subjects=() (WESAD) or test_fraction=0 (Vision&Touch) built the train split,
    then failed inside TFDS ("No examples were yielded") naming no config field."""
    write_wesad(tmp_path / "manual", ["S2", "S3"])
    config = Wesad.make_config(valid_subjects=("S3",), test_subjects=())
    builder = Wesad(config=config, data_dir=tmp_path / "data", manual_dir=tmp_path / "manual")
    with pytest.raises(ValueError, match="test_subjects is empty"):
        builder.download_and_prepare()
    _assert_nothing_built(tmp_path / "data")
    write_vision_touch(tmp_path / "vt", h5py)
    config = VisionTouch.make_config("vfpdo", test_fraction=0.0)
    builder = VisionTouch(config=config, data_dir=tmp_path / "data2", manual_dir=tmp_path / "vt")
    with pytest.raises(ValueError, match=r"test_fraction=0\.0 of 3 episode file\(s\) holds out"):
        builder.download_and_prepare()
    _assert_nothing_built(tmp_path / "data2")


def test_wesad_bad_file_midway_leaves_nothing_built(tmp_path):
    write_wesad(tmp_path / "manual", ["S2", "S3"])
    with open(tmp_path / "manual" / "S3" / "S3.pkl", "wb") as f:
        pickle.dump({"subject": "S3", "label": np.zeros(3, np.int32)}, f, protocol=2)
    config = Wesad.make_config(valid_subjects=(), test_subjects=("S3",))
    builder = Wesad(config=config, data_dir=tmp_path / "data", manual_dir=tmp_path / "manual")
    with pytest.raises(ValueError, match="layout of a WESAD subject pickle"):
        builder.download_and_prepare()
    _assert_nothing_built(tmp_path / "data")
    assert not builder.is_prepared()


# ---- MOSEI ---------------------------------------------------------------------------

# Sentiment scores per split (unique, to find examples again); the second train
# utterance has no words and is dropped.
MOSEI_SCORES = {"train": [0.0, 2.5, 1.5], "valid": [-0.5, 3.0], "test": [-2.0, 0.25]}


def write_mosei(path: Path, vision_dim: int = 713, steps: int = 50, seed: int = 0) -> dict:
    """Writes a MultiBench MOSEI pickle: {split: {'vision', 'audio', 'text', 'labels', 'id'}}."""
    rng = np.random.default_rng(seed)
    data = {}
    for split, scores in MOSEI_SCORES.items():
        n = len(scores)
        part = {
            "vision": rng.normal(size=(n, steps, vision_dim)).astype(np.float32),
            "audio": rng.normal(size=(n, steps, 74)).astype(np.float32),
            "text": rng.normal(size=(n, steps, 300)).astype(np.float32),
            "labels": np.asarray(scores, np.float32).reshape(n, 1, 1),
            "id": np.asarray([[f"video{i}[{split}]"] for i in range(n)]),
        }
        for i in range(n):  # word alignment: zero padding in front of the words
            pad = steps - (5 + 7 * i)
            for key in ("vision", "audio", "text"):
                part[key][i, :pad] = 0.0
        if split == "train":
            part["text"][1] = 0.0
            part["audio"][0, -1, 3] = -np.inf
        data[split] = part
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return data


def _mosei_index(example: dict, split: str) -> int:
    return MOSEI_SCORES[split].index(float(example["sentiment"][0]))


def test_mosei_raw_layout_labels_and_splits(tmp_path):
    (tmp_path / "manual").mkdir()
    data = write_mosei(tmp_path / "manual" / "mosei_raw.pkl")
    builder = Mosei(data_dir=tmp_path / "data", manual_dir=tmp_path / "manual")
    assert builder.builder_config.name == "raw"
    splits = _build(builder)
    assert {s: len(x) for s, x in splits.items()} == {"train": 2, "valid": 2, "test": 2}
    for split, examples in splits.items():
        for e in examples:
            _check_against_spec(e, builder.spec)
            i = _mosei_index(e, split)
            score = MOSEI_SCORES[split][i]
            assert int(e["label"]) == int(score > 0)  # a score of 0 is negative
            for key in ("vision", "text"):
                np.testing.assert_array_equal(e[key], data[split][key][i])
            expected_audio = np.nan_to_num(data[split]["audio"][i], neginf=0.0)
            np.testing.assert_array_equal(e["audio"], expected_audio)
    assert {_mosei_index(e, "train") for e in splits["train"]} == {0, 2}  # 1 has no words
    assert builder.spec.modalities[0].shape == (50, 713)


def test_mosei_seq_len_and_wrong_file_for_config(tmp_path):
    (tmp_path / "manual").mkdir()
    data = write_mosei(tmp_path / "manual" / "mosei_raw.pkl")
    config = Mosei.make_config("raw", seq_len=32)
    builder = Mosei(config=config, data_dir=tmp_path / "data", manual_dir=tmp_path / "manual")
    assert builder.spec.modalities[2].shape == (32, 300)
    for e in _build(builder)["test"]:
        i = _mosei_index(e, "test")
        np.testing.assert_array_equal(e["text"], data["test"]["text"][i, -32:])

    # The "senti" config expects 35-d vision: a 713-d file is refused, nothing is kept.
    write_mosei(tmp_path / "manual" / "mosei_senti_data.pkl", vision_dim=713)
    builder = Mosei(config="senti", data_dir=tmp_path / "d2", manual_dir=tmp_path / "manual")
    with pytest.raises(ValueError, match="35"):
        builder.download_and_prepare()
    _assert_nothing_built(tmp_path / "d2")


def test_mosei_missing_file_one_clear_error(tmp_path):
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "README.txt").write_text("not the pickle")
    builder = Mosei(data_dir=tmp_path / "data", manual_dir=tmp_path / "manual")
    with pytest.raises(MissingDataError) as err:
        builder.download_and_prepare()
    for needle in ("'mosei'", "mosei_raw.pkl", "MultiBench", "<manual_dir>/mosei_raw.pkl"):
        assert needle in str(err.value)
    _assert_nothing_built(tmp_path / "data")


# ---- Vision&Touch --------------------------------------------------------------------

VT_STEPS = 4  # steps per episode (50 in the real files)


def write_vision_touch(root: Path, h5py, episodes: int = 3, seed: int = 0) -> dict[str, dict]:
    """Writes ``root/triangle_real_data/*_1000.h5`` episodes with the original keys."""
    rng = np.random.default_rng(seed)
    (root / "triangle_real_data").mkdir(parents=True)
    written = {}
    t = VT_STEPS
    for ep in range(episodes):
        proprio = rng.normal(size=(t, 8)).astype(np.float32)
        proprio[:, 7] = 100 * ep + np.arange(t)  # unique (episode, step) marker
        contact = np.zeros((t, 50), np.float32)
        contact[2, 10:20] = 1.0  # contact during step 2 only
        arrays = {
            "action": rng.normal(size=(t, 4)).astype(np.float32),
            "contact": contact,
            "depth_data": rng.normal(size=(t, 128, 128, 1)).astype(np.float32),
            "ee_forces_continuous": rng.normal(scale=3.0, size=(t, 50, 6)).astype(np.float32),
            "ee_ori": rng.normal(size=(t, 4)).astype(np.float32),
            "ee_pos": rng.normal(size=(t, 3)).astype(np.float32),
            "ee_vel": rng.normal(size=(t, 3)).astype(np.float32),
            "ee_vel_ori": rng.normal(size=(t, 3)).astype(np.float32),
            "ee_yaw": rng.normal(size=(t, 4)).astype(np.float32),
            "ee_yaw_delta": rng.normal(size=(t, 4)).astype(np.float32),
            "image": rng.integers(0, 256, size=(t, 128, 128, 3), dtype=np.uint8),
            "joint_pos": rng.normal(size=(t, 7)).astype(np.float32),
            "joint_vel": rng.normal(size=(t, 7)).astype(np.float32),
            "optical_flow": rng.normal(size=(t, 128, 128, 2)).astype(np.float32),
            "proprio": proprio,
        }
        name = f"triangle_{ep}_1000"
        with h5py.File(root / "triangle_real_data" / f"{name}.h5", "w") as f:
            for key, value in arrays.items():
                f.create_dataset(key, data=value)
        written[name] = arrays
    return written


def _vt_step(example: dict, written: dict) -> tuple[str, int]:
    """(episode, step) of an example, found by the proprio marker."""
    marker = round(float(example["proprio"][7])) if "proprio" in example else None
    if marker is not None:
        return f"triangle_{marker // 100}_1000", marker % 100
    for name, arrays in written.items():  # no proprio stored: match the image
        for t in range(VT_STEPS - 1):
            if np.array_equal(example["rgb"], arrays["image"][t]):
                return name, t
    raise AssertionError("example matches no episode step")


def test_vision_touch_vfpdo_values_and_episode_splits(tmp_path, h5py):
    written = write_vision_touch(tmp_path / "manual", h5py)
    builder = VisionTouch(
        config="vfpdo", data_dir=tmp_path / "data", manual_dir=tmp_path / "manual"
    )
    assert builder.spec.modality_names == ("rgb", "force", "proprio", "depth", "optical_flow")
    splits = _build(builder)
    episodes = {}
    for split, examples in splits.items():
        for e in examples:
            _check_against_spec(e, builder.spec)
            name, t = _vt_step(e, written)
            episodes.setdefault(split, set()).add(name)
            raw = written[name]
            np.testing.assert_array_equal(e["rgb"], raw["image"][t])
            np.testing.assert_allclose(e["force"], np.tanh(raw["ee_forces_continuous"][t][-32:]))
            np.testing.assert_array_equal(e["proprio"], raw["proprio"][t])
            np.testing.assert_array_equal(e["depth"], raw["depth_data"][t])
            np.testing.assert_array_equal(e["optical_flow"], raw["optical_flow"][t])
            assert int(e["contact"]) == int(t + 1 == 2)
    # 3 episodes: 1 held out (round(0.2 * 3)); steps 0..T-2 of each episode.
    assert len(episodes["test"]) == 1 and len(episodes["train"]) == 2
    assert not episodes["test"] & episodes["train"]
    assert len(splits["train"]) == 2 * (VT_STEPS - 1)
    assert len(splits["test"]) == VT_STEPS - 1


def test_vision_touch_vfd_regression_target(tmp_path, h5py):
    written = write_vision_touch(tmp_path / "manual", h5py, episodes=2)
    builder = VisionTouch(config="vfd", data_dir=tmp_path / "data", manual_dir=tmp_path / "manual")
    assert [t.name for t in builder.spec.targets] == ["contact", "ee_yaw_next"]
    assert builder.spec.modality_names == ("rgb", "force", "depth")
    for examples in _build(builder).values():
        for e in examples:
            _check_against_spec(e, builder.spec)
            name, t = _vt_step(e, written)
            np.testing.assert_array_equal(e["ee_yaw_next"], written[name]["proprio"][t + 1][:4])


def test_vision_touch_missing_files_one_clear_error(tmp_path):
    (tmp_path / "manual" / "triangle_real_data").mkdir(parents=True)
    builder = VisionTouch(config="vfp", data_dir=tmp_path / "data", manual_dir=tmp_path / "manual")
    with pytest.raises(MissingDataError) as err:
        builder.download_and_prepare()
    for needle in ("'vision_touch'", "triangle_real_data/*.h5", "MultiBench", "h5py"):
        assert needle in str(err.value)
    _assert_nothing_built(tmp_path / "data")


# ---- MuJoCo Push ---------------------------------------------------------------------

PUSH_STEPS = 50  # time steps per trajectory: windows start at 0 and 16
PUSH_FILES = {"gentle_push_1000.hdf5": 2, "gentle_push_10.hdf5": 1, "gentle_push_300.hdf5": 1}


def write_push(root: Path, h5py, files: dict[str, int] = PUSH_FILES, seed: int = 0) -> dict:
    """Writes fannypack TrajectoriesFiles: groups ``trajectory<i>`` of (T, ...) datasets."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    t = PUSH_STEPS
    for name, count in files.items():
        with h5py.File(root / name, "w") as f:
            for i in range(count):
                traj = {
                    "image": rng.uniform(size=(t, 32, 32)).astype(np.float32),
                    "force": rng.normal(size=(t, 6)).astype(np.float32),
                    "contact": (rng.uniform(size=t) > 0.5).astype(np.float32),
                    "eef_pos": rng.normal(size=(t, 3)).astype(np.float32),
                    "eef_quat": rng.normal(size=(t, 4)).astype(np.float32),
                    "Cylinder0_pos": rng.normal(0.5, 0.05, size=(t, 3)).astype(np.float32),
                    "Cylinder0_quat": rng.normal(size=(t, 4)).astype(np.float32),
                    "object-state": rng.normal(size=(t, 14)).astype(np.float32),
                    "action": rng.normal(size=(t, 3)).astype(np.float32),
                }
                group = f.create_group(f"trajectory{i}")
                for key, value in traj.items():
                    group.create_dataset(key, data=value, chunks=True, compression="gzip")
                written[(name, i)] = traj
    return written


def _push_window(example: dict, written: dict) -> tuple[tuple[str, int], int]:
    for key, traj in written.items():
        for start in range(PUSH_STEPS):
            if np.array_equal(example["force"][0], traj["force"][start]):
                return key, start
    raise AssertionError("example matches no window")


def test_mujoco_push_windows_and_splits(tmp_path, h5py):
    written = write_push(tmp_path / "manual", h5py)
    builder = MujocoPush(data_dir=tmp_path / "data", manual_dir=tmp_path / "manual")
    splits = _build(builder)
    assert {s: len(x) for s, x in splits.items()} == {"train": 4, "valid": 2, "test": 2}
    split_of = {v: k for k, v in {"train": "1000", "valid": "10", "test": "300"}.items()}
    for split, examples in splits.items():
        starts = set()
        for e in examples:
            _check_against_spec(e, builder.spec)
            (name, index), start = _push_window(e, written)
            traj = written[(name, index)]
            assert split_of[name.split("_")[-1].split(".")[0]] == split
            starts.add(start)
            np.testing.assert_array_equal(e["image"][:, :, 5], traj["image"][start + 5])
            np.testing.assert_array_equal(
                e["image"], traj["image"][start : start + 32].transpose(1, 2, 0)
            )
            np.testing.assert_array_equal(e["force"], traj["force"][start : start + 32])
            pose = np.concatenate([traj["eef_pos"], traj["eef_quat"]], axis=1)
            np.testing.assert_array_equal(e["pose"], pose[start : start + 32])
            expected = (traj["Cylinder0_pos"][start + 32, :2] - POSITION_MEAN) / POSITION_STD
            np.testing.assert_allclose(e["position"], expected, rtol=1e-6)
        assert starts == {0, 16}
    assert builder.spec.modalities[0].shape == (32, 32, 32)


def test_mujoco_push_control_pose_is_multibench_control():
    eef = np.arange(12, dtype=np.float32).reshape(4, 3) ** 2
    contact = np.array([0, 1, 1, 0], np.float32)
    control = _pose({"eef_pos": eef, "contact": contact}, "control")
    assert control.shape == (4, 7)
    np.testing.assert_array_equal(control[0, :3], eef[0])  # no previous step: itself
    np.testing.assert_array_equal(control[2, :3], eef[1])
    np.testing.assert_array_equal(control[2, 3:6], eef[2] - eef[1])
    np.testing.assert_array_equal(control[:, 6], contact)


def test_mujoco_push_missing_files_one_clear_error(tmp_path, h5py):
    write_push(tmp_path / "manual", h5py, files={"gentle_push_1000.hdf5": 1})
    builder = MujocoPush(data_dir=tmp_path / "data", manual_dir=tmp_path / "manual")
    with pytest.raises(MissingDataError) as err:
        builder.download_and_prepare()
    message = str(err.value)
    for needle in ("'mujoco_push'", "gentle_push_10.hdf5", "gentle_push_300.hdf5", "MultiBench"):
        assert needle in message
    assert "'gentle_push_1000.hdf5'" not in message.split("How to get them")[0]
    _assert_nothing_built(tmp_path / "data")


# ---- registry ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, configs",
    [
        ("wesad", ["default"]),
        ("mosei", ["raw", "senti"]),
        ("vision_touch", ["vfd", "vfp", "vfpd", "vfpdo"]),
        ("mujoco_push", ["default"]),
    ],
)
def test_registered_specs_are_manual_and_match_the_paper(name, configs):
    cls = registry.builder_class(name)
    assert [c.name for c in cls.BUILDER_CONFIGS] == configs
    for config in configs:
        spec = registry.get_spec(name, config=config)
        assert spec.name == name and spec.manual
        assert len(spec.modalities) >= 3 and spec.targets


def test_spec_shapes_of_the_paper():
    vfpdo = registry.get_spec("vision_touch", config="vfpdo")
    assert [m.shape for m in vfpdo.modalities] == [
        (128, 128, 3),
        (32, 6),
        (8,),
        (128, 128, 1),
        (128, 128, 2),
    ]
    assert registry.get_spec("mosei", config="raw", seq_len=32).modalities[1].shape == (32, 74)
    push = registry.get_spec("mujoco_push")
    assert [m.shape for m in push.modalities] == [(32, 32, 32), (32, 6), (32, 7)]


# ---- damaged raw files ---------------------------------------------------------------


def _garbage(path: Path, size: int = 4096, seed: int = 0) -> None:
    """Overwrites ``path`` with random bytes (a wrong or corrupted download)."""
    path.write_bytes(np.random.default_rng(seed).bytes(size))


def _truncate(path: Path) -> None:
    """Cuts ``path`` in half (an interrupted download or copy)."""
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _assert_damaged_file_error(err, path: Path, expected_format: str, source: str) -> None:
    """One CorruptDataError naming the file, the format expected and where to get it."""
    assert isinstance(err.value, CorruptDataError) and isinstance(err.value, ValueError)
    message = str(err.value)
    for needle in (str(path), expected_format, "manual_dir", source, "download it again"):
        assert needle in message, (needle, message)


@pytest.mark.parametrize("damage", [_garbage, _truncate])
def test_wesad_damaged_pickle_names_the_file(tmp_path, damage):
    write_wesad(tmp_path / "manual", ["S2", "S3"])
    bad = tmp_path / "manual" / "S2" / "S2.pkl"
    damage(bad)
    config = Wesad.make_config(valid_subjects=(), test_subjects=("S3",))
    builder = Wesad(config=config, data_dir=tmp_path / "data", manual_dir=tmp_path / "manual")
    with pytest.raises(CorruptDataError) as err:
        builder.download_and_prepare()
    _assert_damaged_file_error(err, bad, "Python pickle", "archive.ics.uci.edu")
    _assert_nothing_built(tmp_path / "data")


@pytest.mark.parametrize("damage", [_garbage, _truncate])
def test_mosei_damaged_pickle_names_the_file(tmp_path, damage):
    (tmp_path / "manual").mkdir()
    bad = tmp_path / "manual" / "mosei_raw.pkl"
    write_mosei(bad)
    damage(bad)
    builder = Mosei(data_dir=tmp_path / "data", manual_dir=tmp_path / "manual")
    with pytest.raises(CorruptDataError) as err:
        builder.download_and_prepare()
    _assert_damaged_file_error(err, bad, "Python pickle", "MultiBench")
    _assert_nothing_built(tmp_path / "data")


@pytest.mark.parametrize("damage", [_garbage, _truncate])
def test_vision_touch_damaged_hdf5_names_the_file(tmp_path, h5py, damage):
    write_vision_touch(tmp_path / "manual", h5py, episodes=2)
    bad = tmp_path / "manual" / "triangle_real_data" / "triangle_1_1000.h5"
    damage(bad)
    builder = VisionTouch(config="vfp", data_dir=tmp_path / "data", manual_dir=tmp_path / "manual")
    with pytest.raises(CorruptDataError) as err:
        builder.download_and_prepare()
    _assert_damaged_file_error(err, bad, "HDF5", "MultiBench")
    _assert_nothing_built(tmp_path / "data")


@pytest.mark.parametrize("damage", [_garbage, _truncate])
def test_mujoco_push_damaged_hdf5_names_the_file(tmp_path, h5py, damage):
    write_push(tmp_path / "manual", h5py)
    bad = tmp_path / "manual" / "gentle_push_10.hdf5"
    damage(bad)
    builder = MujocoPush(data_dir=tmp_path / "data", manual_dir=tmp_path / "manual")
    with pytest.raises(CorruptDataError) as err:
        builder.download_and_prepare()
    _assert_damaged_file_error(err, bad, "HDF5", "MultiBench")
    _assert_nothing_built(tmp_path / "data")
