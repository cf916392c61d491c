"""ovaib_jax.records writes standard JSON: a non-finite number is null, never NaN."""

from __future__ import annotations

import json
import logging
import os
import time

import jax.numpy as jnp
import numpy as np

from ovaib_jax import records


def _strict_load(text: str):
    """``json.loads`` that refuses the NaN / Infinity literals, as jq or JavaScript do."""

    def refuse(name):
        raise ValueError(f"non-standard JSON literal {name}")

    return json.loads(text, parse_constant=refuse)


def test_write_json_is_standard_json(tmp_path):
    obj = {
        "probe": {"label/val_loss": float("nan"), "label/accuracy": np.float32(0.75)},
        "r2": np.float64(np.inf),
        "rows": [1.5, -float("inf"), np.int64(3), True],
        "device": jnp.asarray(float("nan")),
        "curve": np.asarray([0.25, np.nan]),
        "name": "x",
        "none": None,
    }
    path = str(tmp_path / "results.json")
    records.write_json(path, obj, indent=2)
    got = _strict_load(open(path).read())
    assert got == {
        "probe": {"label/val_loss": None, "label/accuracy": 0.75},
        "r2": None,
        "rows": [1.5, None, 3, True],
        "device": None,
        "curve": [0.25, None],
        "name": "x",
        "none": None,
    }
    assert records.read_json(path) == got
    # Read back into a float array, null is NaN again.
    assert np.isnan(np.asarray([got["probe"]["label/val_loss"]], np.float64)[0])


def test_metrics_lines_are_standard_json(tmp_path):
    writer = records.MetricWriter(str(tmp_path), 0)
    try:
        writer.write(2, {"train/loss": float("nan"), "train/accuracy": 0.5})
    finally:
        writer.close()
    lines = open(tmp_path / records.METRICS_FILE).read().splitlines()
    assert [_strict_load(line) for line in lines] == [
        {"step": 2, "train/loss": None, "train/accuracy": 0.5}
    ]
    assert records.read_metrics(str(tmp_path)) == [
        {"step": 2, "train/loss": None, "train/accuracy": 0.5}
    ]


def test_tensorboard_gets_the_finite_scalars_only(tmp_path, caplog):
    """A NaN (the few-label probes' val_loss) goes to metrics.jsonl as null, not to
    TensorBoard, where tensorboardX would log a warning for each."""
    writer = records.MetricWriter(str(tmp_path), 0)
    tags = []
    add_scalar = writer.tb.add_scalar

    def spy(tag, value, step):
        tags.append((tag, value, step))
        add_scalar(tag, value, step)

    writer.tb.add_scalar = spy
    try:
        with caplog.at_level(logging.WARNING):
            writer.write(3, {"probe/val_loss": np.nan, "probe/acc@1": 0.5, "x": -np.inf})
    finally:
        writer.close()
    assert tags == [("probe/acc_at_1", 0.5, 3)]
    assert not [r for r in caplog.records if "NaN or Inf" in r.getMessage()]
    assert records.read_metrics(str(tmp_path)) == [
        {"step": 3, "probe/val_loss": None, "probe/acc@1": 0.5, "x": None}
    ]


def test_concurrent_atomic_writes_of_one_file_never_tear(tmp_path):
    """Two writers of one file (e.g. two ``evaluate`` runs writing eval/results.json) and a
    reader: every write lands whole and every read sees one whole version. With one fixed
    temporary name the writers shared it, so a rename failed or a read saw a torn file."""
    import threading

    from ovaib_jax import paths

    target = str(tmp_path / "results.json")
    versions = [str(i) * 200_000 for i in range(2)]
    paths.write_text(target, versions[0])
    errors, torn, stop = [], [], threading.Event()

    def writer(text):
        try:
            for _ in range(150):
                paths.write_text(target, text)
        except Exception as e:  # any failure is the bug
            errors.append(e)

    def reader():
        while not stop.is_set():
            if paths.read_text(target) not in versions:
                torn.append(1)

    threads = [threading.Thread(target=writer, args=(v,)) for v in versions]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    assert not errors and not torn, (errors[:1], len(torn))
    assert not [p for p in os.listdir(tmp_path) if p != "results.json"]  # no temporaries left


def test_a_temporary_left_by_a_killed_write_is_removed_by_a_later_write(tmp_path):
    """A SIGKILL between a write's temporary and its rename leaves ``.<file>.<hex>.tmp``:
    the next write of that file removes it once it is older than a live write can be; a
    recent one (a concurrent writer's) and other files' temporaries stay."""
    from ovaib_jax import paths

    target = tmp_path / "results.json"
    old = tmp_path / ".results.json.0123456789ab.tmp"
    live = tmp_path / ".results.json.ba9876543210.tmp"
    other = tmp_path / ".config.json.0123456789ab.tmp"
    for f in (old, live, other):
        f.write_text("partial")
    hours_ago = time.time() - 2 * paths.STALE_TEMPORARY_S
    for f in (old, other):
        os.utime(f, (hours_ago, hours_ago))
    paths.write_text(str(target), "{}")
    assert sorted(os.listdir(tmp_path)) == sorted([other.name, live.name, target.name])


def test_read_metrics_skips_a_line_cut_short(tmp_path):
    """A kill or a full disk mid-write leaves a partial last line: it is skipped, the
    complete records before it are read."""
    (tmp_path / records.METRICS_FILE).write_text(
        '{"step": 1, "train/loss": 2.5}\n\n{"step": 2, "train/loss": 2.0}\n{"step": 3, "tr'
    )
    assert records.read_metrics(str(tmp_path)) == [
        {"step": 1, "train/loss": 2.5},
        {"step": 2, "train/loss": 2.0},
    ]
