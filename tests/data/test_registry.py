"""The dataset registry: names, specs without data, configs, build-once, the build command."""

import dataclasses
import logging
import os
import pathlib
import re
import shlex
import shutil
import threading
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import logging as absl_logging

from ovaib_jax import data
from ovaib_jax.data import base, build
from ovaib_jax.data.spec import DatasetSpec

OFFLINE = ("ovaib_parity", "ovaib_latent", "ovaib_trifeature", "uci_mfeat", "mnist_views")
TINY_PARITY = dict(config="m3", k=2, num_train=40, num_test=10)


def test_names_are_the_nine_registered_datasets():
    assert data.names() == tuple(sorted(data.BUILDERS))
    assert len(data.names()) == 9
    assert set(OFFLINE) <= set(data.names())


@pytest.mark.parametrize("call", [data.get_spec, data.get_builder, data.builder_class])
def test_unknown_name_lists_the_valid_names(call, tmp_path):
    kwargs = {"data_dir": tmp_path} if call is data.get_builder else {}
    with pytest.raises(ValueError, match="Unknown dataset 'imagenet'") as e:
        call("imagenet", **kwargs)
    for name in data.names():
        assert name in str(e.value)


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_specs_need_no_data(name):
    spec = data.get_spec(name)
    assert isinstance(spec, DatasetSpec) and spec.name == name
    assert not spec.manual
    assert set(spec.splits) == {"train", "test"}
    assert len(set(spec.modality_names)) == len(spec.modalities) >= 1


def test_configs_and_overrides_change_the_spec():
    assert len(data.get_spec("ovaib_parity", config="m5").modalities) == 5
    assert len(data.get_spec("ovaib_latent", config="m3").modalities) == 3
    spec = data.get_spec("ovaib_parity", config="m4", k=3, dim=16)
    assert len(spec.modalities) == 4
    assert spec.modalities[0].shape == (16,)
    assert spec.targets[0].num_classes == 8
    assert len(data.get_spec("mnist_views", M=2).modalities) == 2
    with pytest.raises(ValueError, match="unknown config 'm9'"):
        data.get_spec("ovaib_parity", config="m9")
    with pytest.raises(ValueError, match=r"unknown config fields \['bogus'\]"):
        data.get_spec("ovaib_parity", bogus=1)
    with pytest.raises(ValueError, match="M >= 3"):
        data.get_spec("ovaib_parity", M=2)


def test_custom_config_names_encode_the_overrides():
    cls = data.builder_class("ovaib_parity")
    default = cls.make_config()
    assert default.name == "m3"
    assert cls.make_config("m3", p=1) is cls.BUILDER_CONFIGS[0]  # p=1 is the default 1.0
    a = cls.make_config("m4", p=0.5, k=2)
    b = cls.make_config("m4", k=2, p=0.5)
    c = cls.make_config("m4", p=0.25, k=2)
    assert a.name == b.name == "m4-k2-p0.5"
    assert c.name != a.name
    assert (a.M, a.k, a.p) == (4, 2, 0.5)
    assert cls.BUILDER_CONFIGS[1].p == 1.0  # the registered config is not modified


def test_default_data_dir(monkeypatch):
    monkeypatch.delenv("OVAIB_DATA_DIR", raising=False)
    assert data.default_data_dir() == os.path.expanduser("~/tensorflow_datasets")
    monkeypatch.setenv("OVAIB_DATA_DIR", "/somewhere")
    assert data.default_data_dir() == "/somewhere"


def test_prepare_builds_once_and_make_source_reads(tmp_path):
    with pytest.raises(FileNotFoundError, match="not built") as err:
        data.make_source("ovaib_parity", "train", data_dir=tmp_path, build=False, **TINY_PARITY)
    # The command that builds this very config there (not the default config elsewhere).
    command = re.search(r"`(python -m ovaib_jax\.data\.build [^`]*)`", str(err.value)).group(1)
    args = shlex.split(command)[3:]
    assert args[0] == "ovaib_parity" and args[args.index("--data_dir") + 1] == str(tmp_path)
    sets = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--set")
    given = {"config": args[args.index("--config") + 1], **{k: int(v) for k, v in sets.items()}}
    assert given == TINY_PARITY
    builder = data.prepare("ovaib_parity", data_dir=tmp_path, **TINY_PARITY)
    assert data.is_built(builder)
    files = sorted(p for p in tmp_path.rglob("*.array_record*"))
    stamps = [p.stat().st_mtime_ns for p in files]
    assert len(files) == 2
    data.prepare("ovaib_parity", data_dir=tmp_path, **TINY_PARITY)  # reused, not rewritten
    assert [p.stat().st_mtime_ns for p in files] == stamps
    src = data.make_source(
        "ovaib_parity", "train[:25%]", data_dir=tmp_path, build=False, **TINY_PARITY
    )
    assert len(src) == 10
    assert len(data.make_source("ovaib_parity", "test", data_dir=tmp_path, **TINY_PARITY)) == 10


def test_spec_features():
    spec = data.get_spec("ovaib_latent", config="m3")
    features = base.spec_features(spec)
    assert features["x0"].shape == (32,) and features["x0"].np_dtype == np.float32
    assert features["label"].num_classes == 4
    assert features["target"].shape == (1,)


# A manual dataset, as the paper builders are written: one clear error for missing files.
@dataclasses.dataclass(eq=False)
class _ToyConfig(tfds.core.BuilderConfig):
    n: int = 3


class ToyManualForTests(base.SpecBuilder):
    """A two-file manual dataset used only by these tests."""

    VERSION = tfds.core.Version("0.1.0")
    BUILDER_CONFIGS = [_ToyConfig(name="default")]  # noqa: RUF012
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Get a.txt and parts/*.csv from the toy site."

    @classmethod
    def spec_for(cls, config):
        return DatasetSpec(
            name="toy_manual_for_tests",
            modalities=(data.Modality("v", (2,), "float32", "mlp"),),
            targets=(data.Target("label", "classification", num_classes=2),),
            splits=("train",),
            manual=True,
        )

    def _split_generators(self, dl_manager):
        root = self.require_manual_files(dl_manager, "a.txt", "parts/*.csv")
        return {"train": self._generate_examples(root)}

    def _generate_examples(self, root):
        scale = float((root / "a.txt").read_text())
        for i in range(self.builder_config.n):
            yield i, {"v": np.full(2, scale * i, np.float32), "label": i % 2}


def test_missing_manual_files_one_clear_error_and_nothing_left(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "a.txt").write_text("2")
    builder = ToyManualForTests(data_dir=tmp_path / "data", manual_dir=manual)
    with pytest.raises(data.MissingDataError) as e:
        builder.download_and_prepare()
    message = str(e.value)
    assert "toy_manual_for_tests" in message and "['parts/*.csv']" in message
    assert str(manual) in message and "from the toy site" in message
    assert "a.txt'" not in message  # present files are not reported
    assert not data.is_built(builder)
    assert not list((tmp_path / "data").rglob("dataset_info.json"))
    assert not [p for p in (tmp_path / "data").rglob("*") if "incomplete" in p.name]
    # Once the files are there, the same builder builds.
    (manual / "parts").mkdir()
    (manual / "parts" / "x.csv").write_text("")
    builder.download_and_prepare()
    src = builder.as_data_source("train")
    assert sorted(float(src[i]["v"][0]) for i in range(3)) == [0.0, 2.0, 4.0]


def test_build_command_prints_a_summary(tmp_path, capsys):
    args = [
        "ovaib_parity",
        "--data_dir",
        str(tmp_path),
        "--config",
        "m4",
        "--set",
        "k=1",
        "--set",
        "num_train=30",
        "--set",
        "num_test=6",
    ]
    assert build.main(args) == 0
    out = capsys.readouterr().out
    assert "ovaib_parity/m4-k1-num_test6-num_train30/1.0.0" in out
    assert "test 6, train 30" in out
    assert "modality x3: (32,) float32" in out
    counts = out.split("train:")[1].split()[:2]  # label balance of the train split
    assert sum(int(c) for c in counts) == 30


def test_build_command_missing_files_exit_code(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OVAIB_NO_DOWNLOAD", "1")
    rc = build.main(["uci_mfeat", "--data_dir", str(tmp_path), "--manual_dir", str(tmp_path)])
    assert rc == 1
    assert "uci_mfeat" in capsys.readouterr().err


def test_parse_overrides():
    assert build.parse_overrides(["M=4", "p=0.5", "s=abc", "t=(1, 2)"]) == {
        "M": 4,
        "p": 0.5,
        "s": "abc",
        "t": (1, 2),
    }
    with pytest.raises(ValueError, match="key=value"):
        build.parse_overrides(["M"])


# ---- damaged built files -------------------------------------------------------------


@pytest.fixture(scope="module")
def built_parity(tmp_path_factory):
    """A tiny built ovaib_parity (40 train examples); tests damage copies of it."""
    root = tmp_path_factory.mktemp("built")
    data.prepare("ovaib_parity", data_dir=root, **TINY_PARITY)
    return root


def _copy_of_built(built_parity, tmp_path) -> tuple[pathlib.Path, pathlib.Path]:
    """(data_dir, train record file) of a fresh copy of the built dataset."""
    root = tmp_path / "data"
    shutil.copytree(built_parity, root)
    (record,) = sorted(root.rglob("ovaib_parity-train.array_record-*"))
    return root, record


def _cut(path: pathlib.Path, fraction: float) -> None:
    with open(path, "r+b") as f:
        f.truncate(int(path.stat().st_size * fraction))


def _garble_records(path: pathlib.Path) -> None:
    """Overwrites the record chunks but not the index: the file opens, reads fail."""
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(b"\xff" * 20000)


def _assert_rebuild_message(err, record: pathlib.Path) -> None:
    message = str(err.value)
    version_dir = record.parent
    for needle in (
        str(record),
        "ovaib_parity",
        str(version_dir),
        "delete",
        "python -m ovaib_jax.data.build ovaib_parity",
        "--config m3 --set k=2 --set num_test=10 --set num_train=40",
    ):
        assert needle in message, (needle, message)


# A half file ends on a 64 KiB block boundary: it opens and reads as empty records
# (examples of None); 0.7 of it fails to open with "Invalid/Corrupted Riegeli/records file".
@pytest.mark.parametrize("fraction", [0.5, 0.7])
def test_truncated_record_file_make_source_names_file_and_rebuild(built_parity, tmp_path, fraction):
    root, record = _copy_of_built(built_parity, tmp_path)
    _cut(record, fraction)
    with pytest.raises(data.CorruptDataError) as err:
        data.make_source("ovaib_parity", "train", data_dir=root, build=False, **TINY_PARITY)
    _assert_rebuild_message(err, record)
    # The other split is intact and still reads.
    test = data.make_source("ovaib_parity", "test", data_dir=root, build=False, **TINY_PARITY)
    assert len(data.load_arrays(test)["label"]) == 10


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("damage", ["cut", "garbled"])
def test_damaged_record_file_iterating_names_file_and_rebuild(
    built_parity, tmp_path, batched, damage
):
    root, record = _copy_of_built(built_parity, tmp_path)
    builder = data.get_builder("ovaib_parity", data_dir=root, **TINY_PARITY)
    source = builder.as_data_source("train")  # opened before the damage, not checked
    if damage == "cut":
        _cut(record, 0.7)
    else:
        _garble_records(record)
    with pytest.raises(data.CorruptDataError) as err:
        it = data.make_iterator(source, batch_size=8, seed=0, batched=batched, prefetch=2)
        next(it)
    _assert_rebuild_message(err, record)
    if damage == "garbled":  # the file opens and counts right: the read is what fails
        with pytest.raises(data.CorruptDataError):
            data.load_arrays(source)


# ---- builds killed midway ------------------------------------------------------------


def _config_dir(builder) -> pathlib.Path:
    return pathlib.Path(os.fspath(builder.data_path)).parent


def _fake_incomplete(directory: pathlib.Path, name: str, age_s: float = 3600.0):
    """An ``incomplete.*`` build directory as TFDS leaves it when a build is killed."""
    path = directory / name
    path.mkdir(parents=True)
    (path / "ovaib_parity-train.array_record-00000-of-00001").write_bytes(b"partial")
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def test_build_removes_incomplete_dirs_left_by_a_killed_build(tmp_path):
    builder = data.get_builder("ovaib_parity", data_dir=tmp_path, **TINY_PARITY)
    stale = _fake_incomplete(_config_dir(builder), f"incomplete.KILLED_{builder.version}")
    other_config = data.get_builder("ovaib_parity", data_dir=tmp_path, config="m4")
    other = _fake_incomplete(_config_dir(other_config), "incomplete.OTHER1_1.0.0")
    data.prepare("ovaib_parity", data_dir=tmp_path, **TINY_PARITY)
    assert not stale.exists()
    assert other.exists()  # another dataset (config) is not touched
    assert data.is_built(builder)
    src = data.make_source("ovaib_parity", "train", data_dir=tmp_path, build=False, **TINY_PARITY)
    assert len(data.load_arrays(src)["label"]) == 40
    # Once built, a later prepare (reusing the data) removes leftovers too, but only
    # when no build holds the lock, and without waiting for it.
    late = _fake_incomplete(_config_dir(builder), f"incomplete.LATE01_{builder.version}")
    with base.build_lock(_config_dir(builder)):
        data.prepare("ovaib_parity", data_dir=tmp_path, **TINY_PARITY)
        assert late.exists()
    data.prepare("ovaib_parity", data_dir=tmp_path, **TINY_PARITY)
    assert not late.exists()


def test_build_waits_for_a_live_build_and_keeps_its_directory(tmp_path):
    builder = data.get_builder("ovaib_parity", data_dir=tmp_path, **TINY_PARITY)
    config_dir = _config_dir(builder)
    live = _fake_incomplete(config_dir, f"incomplete.LIVE01_{builder.version}", age_s=0)
    errors = []

    def build():
        try:
            data.prepare("ovaib_parity", data_dir=tmp_path, **TINY_PARITY)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    with base.build_lock(config_dir) as held:  # another build holds the builder's lock
        assert held
        thread = threading.Thread(target=build)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive() and live.exists() and not data.is_built(builder)
        shutil.rmtree(live)  # the other build ends (TFDS removes or renames its dir)
    thread.join(60)
    assert not thread.is_alive() and errors == []
    assert data.is_built(builder)


def test_only_incomplete_dirs_older_than_the_build_are_removed(tmp_path):
    started = time.time()
    old = _fake_incomplete(tmp_path, "incomplete.OLD123_1.0.0", age_s=60)
    new = _fake_incomplete(tmp_path, "incomplete.NEW123_1.0.0", age_s=-60)
    kept = [_fake_incomplete(tmp_path, "1.0.0", age_s=60), tmp_path / "x.incomplete"]
    kept[1].write_text("")
    removed = base.remove_stale_incomplete_dirs(tmp_path, started)
    assert [pathlib.Path(os.fspath(p)) for p in removed] == [old]
    assert not old.exists() and new.exists() and all(p.exists() for p in kept)


# ---- console noise -------------------------------------------------------------------


def test_custom_config_message_is_silenced_other_warnings_pass(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    builder = data.get_builder("ovaib_parity", data_dir=tmp_path, **TINY_PARITY)
    assert builder.builder_config.name == "m3-k2-num_test10-num_train40"  # a custom config
    absl_logging.warning("Using another configuration: %s", "kept")
    absl_logging.warning("Using custom data configuration: %s", "not from TFDS")
    messages = [r.getMessage() for r in caplog.records if r.name == "absl"]
    assert [m for m in messages if m.startswith("Using custom data configuration:")] == [
        "Using custom data configuration: not from TFDS"
    ]
    assert "Using another configuration: kept" in messages


def test_a_builder_of_an_unbuilt_dataset_leaves_no_temp_directory(tmp_path, monkeypatch):
    """TFDS looked a dataset not built yet up in its bucket, through a temp directory it
    never removed: one empty /tmp/tmp*tfds per builder made (thousands after test runs)."""
    import tempfile

    made = []
    real = tempfile.mkdtemp

    def mkdtemp(*args, **kwargs):
        path = real(*args, **kwargs)
        made.append(path)
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    for name in ("ovaib_parity", "uci_mfeat", "wesad"):
        builder = data.get_builder(name, data_dir=str(tmp_path / name))
        assert not builder.is_prepared()
    assert made == []
