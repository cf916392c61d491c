"""Checkpoints: fallback from a damaged latest step, SIGKILL / SIGTERM and exact resume.

The resume tests run ``python -m ovaib_jax.main`` in subprocesses (1 CPU device each):
an uninterrupted reference run, a run killed with SIGKILL and restarted, and a run
stopped with SIGTERM and restarted. The final parameters must be bit-identical.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ovaib_jax import checkpointing
from ovaib_jax.checkpointing import (
    Checkpointer,
    CheckpointMismatchError,
    NoRestorableCheckpointError,
)
from tests.train_helpers import ROOT, TINY, main_cmd, read_model, subprocess_env

# ---------------------------------------------------------------- damaged checkpoints


def _tree(v: float):
    return {"model": {"w": jnp.full((3, 2), v), "b": jnp.arange(4.0) + v}}


def _abstract():
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _tree(0.0))


def _damage(step_dir: str) -> None:
    """Overwrites every data file of a committed step with garbage (bit rot, bad copy)."""
    for root, _, files in os.walk(step_dir):
        for f in files:
            if "metadata" in f or f.endswith(".json"):
                continue
            with open(os.path.join(root, f), "r+b") as fh:
                size = max(os.path.getsize(fh.name), 1)
                fh.write(b"\x13" * size)


def test_damaged_latest_checkpoint_falls_back(tmp_path, caplog):
    directory = str(tmp_path / "checkpoints")
    ckpt = Checkpointer(directory, async_save=False)
    for step in (1, 2, 3):
        ckpt.save(step, _tree(float(step)), {"next_index": step})
    ckpt.wait_until_finished()
    _damage(os.path.join(directory, "3"))
    with caplog.at_level(logging.WARNING, logger="ovaib_jax.checkpointing"):
        restored = ckpt.restore(_abstract())
    assert restored.step == 2 and restored.data == {"next_index": 2}
    np.testing.assert_array_equal(restored.trees["model"]["w"], np.full((3, 2), 2.0))
    assert "step 3" in caplog.text and "falling back" in caplog.text
    # The damaged step is moved aside, so step 3 can be written again.
    assert os.listdir(tmp_path / "checkpoints_corrupt") == ["3"]
    assert ckpt.all_steps() == [1, 2]
    ckpt.save(3, _tree(30.0), {"next_index": 3})
    ckpt.wait_until_finished()
    assert ckpt.restore(_abstract()).trees["model"]["b"][0] == 30.0
    ckpt.close()


def test_a_reader_of_a_live_run_follows_its_newer_checkpoints(tmp_path, caplog, monkeypatch):
    """evaluate on a live run (read-only): the trainer may save a newer step and delete
    (max_to_keep) the one being read. That step vanished, it is not damage: the reader
    lists the steps again and restores the newer one (it had given up with "None of the
    checkpoints restores ... Remove the directory")."""
    directory = str(tmp_path / "checkpoints")
    writer = Checkpointer(directory, async_save=False, max_to_keep=1)
    writer.save(1, _tree(1.0), None)
    writer.wait_until_finished()
    reader = Checkpointer(directory, read_only=True)
    real = Checkpointer._restore_step

    def replaced_while_read(self, step, abstract, with_data):
        if step in replace:  # the live run saves step + 1 and deletes step under the reader
            writer.save(step + 1, _tree(step + 1.0), None)
            writer.wait_until_finished()
            assert not os.path.exists(os.path.join(directory, str(step)))
        return real(self, step, abstract, with_data)

    replace = {1}
    monkeypatch.setattr(Checkpointer, "_restore_step", replaced_while_read)
    with caplog.at_level(logging.WARNING, logger="ovaib_jax.checkpointing"):
        restored = reader.restore(_abstract(), with_data=False)
    assert restored.step == 2 and restored.trees["model"]["b"][0] == 2.0
    assert "failed to restore" not in caplog.text  # not reported as damage
    # A run that replaces its checkpoints faster than they restore: one clear error.
    replace = set(range(2, 100))
    with pytest.raises(RuntimeError, match=r"deleted 9 times while being read.*--step"):
        reader.restore(_abstract(), with_data=False)
    reader.close()
    writer.close()


def test_explicit_step_and_all_damaged(tmp_path):
    """An explicit damaged step is one error naming the saved steps; where every step
    fails nothing is moved aside (they were all moved, and a rerun then silently trained
    from step 0)."""
    directory = str(tmp_path / "checkpoints")
    ckpt = Checkpointer(directory, async_save=False)
    ckpt.save(5, _tree(5.0), None)
    ckpt.wait_until_finished()
    with pytest.raises(FileNotFoundError, match="saved steps: \\[5\\]"):
        ckpt.restore(_abstract(), step=4)
    _damage(os.path.join(directory, "5"))
    with pytest.raises(NoRestorableCheckpointError, match=r"step 5 .* does not restore .*saved"):
        ckpt.restore(_abstract(), step=5, with_data=False)
    with pytest.raises(NoRestorableCheckpointError, match=r"None of the.*left in place"):
        ckpt.restore(_abstract(), with_data=False)
    assert ckpt.all_steps() == [5] and not os.path.exists(tmp_path / "checkpoints_corrupt")
    ckpt.close()
    assert Checkpointer(str(tmp_path / "empty")).restore(_abstract()) is None


def test_good_checkpoints_that_fail_for_another_reason_are_not_moved_aside(tmp_path, monkeypatch):
    """A restore failing for a cause outside the checkpoints (memory, storage access) on
    every step moved all of them to checkpoints_corrupt; the next run started from step 0.
    Failed steps are moved aside only once an older one restores."""
    directory = str(tmp_path / "checkpoints")
    ckpt = Checkpointer(directory, async_save=False)
    for step in (1, 2):
        ckpt.save(step, _tree(float(step)), None)
    ckpt.wait_until_finished()
    real = Checkpointer._restore_step

    def out_of_memory(self, step, abstract, with_data):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory")

    monkeypatch.setattr(Checkpointer, "_restore_step", out_of_memory)
    with pytest.raises(NoRestorableCheckpointError, match="RESOURCE_EXHAUSTED"):
        ckpt.restore(_abstract(), with_data=False)
    assert ckpt.all_steps() == [1, 2] and not os.path.exists(tmp_path / "checkpoints_corrupt")
    monkeypatch.setattr(Checkpointer, "_restore_step", real)
    assert ckpt.restore(_abstract(), with_data=False).step == 2
    ckpt.close()


def test_another_optimizers_state_is_a_mismatch_not_damage(tmp_path):
    """The optimizer item's structure was not compared (only the model's): SGD with
    momentum restoring Adam's state failed on every step, each then moved aside as
    damaged. Optax's named-tuple states compare equal to orbax's metadata of them."""
    import optax

    directory = str(tmp_path / "checkpoints")
    params = _tree(1.0)["model"]
    adam = {"opt_state": optax.adam(1e-3).init(params)}
    ckpt = Checkpointer(directory, async_save=False)
    ckpt.save(1, {"model": params, "optimizer": adam}, None)
    ckpt.wait_until_finished()
    ckpt.close()
    ckpt = Checkpointer(directory, async_save=False)

    def abstract(opt):
        tree = {"model": params, "optimizer": {"opt_state": opt.init(params)}}
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)

    restored = ckpt.restore(abstract(optax.adam(1e-3)), with_data=False)
    assert int(restored.trees["optimizer"]["opt_state"][0].count) == 0
    sgd = optax.sgd(1e-3, momentum=0.9)
    with pytest.raises(CheckpointMismatchError, match=r"optimizer\['opt_state'\]"):
        ckpt.restore(abstract(sgd), with_data=False)
    assert ckpt.all_steps() == [1] and not os.path.exists(tmp_path / "checkpoints_corrupt")
    ckpt.close()


def test_another_models_checkpoint_is_refused_before_any_read(tmp_path, monkeypatch):
    """A shape mismatch (another model config's checkpoint) raises CheckpointMismatchError
    without starting orbax's restore: a doomed restore left its pending array reads to be
    garbage-collected later, as "Exception ignored in: <coroutine ...>" in whatever ran
    next. The explicit-step and walk-back paths both check first; nothing is moved."""
    directory = str(tmp_path / "checkpoints")
    ckpt = Checkpointer(directory, async_save=False)
    big = {"model": {"w": jnp.ones((64, 32)), "b": jnp.ones((32,))}}
    ckpt.save(1, big, None)
    ckpt.wait_until_finished()
    ckpt.close()
    # A fresh checkpointer, as a resumed run opens (orbax's manager then knows no item
    # handler yet: its own item metadata reads None until a first restore).
    ckpt = Checkpointer(directory, async_save=False)
    other = {"model": {"w": jax.ShapeDtypeStruct((64, 16), jnp.float32), "b": big["model"]["b"]}}
    other = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), other)
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    for step in (None, 1):
        with pytest.raises(CheckpointMismatchError, match=r"\['w'\]: checkpoint \(64, 32\)"):
            ckpt.restore(other, step=step, with_data=False)
    gc.collect()
    assert [u.object for u in unraisable] == []
    assert ckpt.all_steps() == [1] and not os.path.exists(tmp_path / "checkpoints_corrupt")
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), big)
    restored = ckpt.restore(abstract, with_data=False)
    np.testing.assert_array_equal(restored.trees["model"]["w"], np.ones((64, 32)))
    ckpt.close()


# ---------------------------------------------------------------- SIGKILL / SIGTERM

RUN = dict(TINY, num_train_steps=40, checkpoint_every_steps=10, log_every_steps=10)


def _start(workdir, data_dir):
    over = dict(RUN, **{"dataset.data_dir": data_dir})
    return subprocess.Popen(
        main_cmd(workdir, over),
        env=subprocess_env(1),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    end = time.time() + timeout
    while not os.path.isdir(path):
        if proc.poll() is not None:
            raise AssertionError(f"run ended before {path} appeared:\n{proc.stderr.read()[-3000:]}")
        if time.time() > end:
            proc.kill()
            raise AssertionError(f"timeout waiting for {path}")
        time.sleep(0.002)


def _wait_for_file(path: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    end = time.time() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < end, f"timeout waiting for {path}"
        time.sleep(0.002)


def _assert_bit_identical(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb) > 0
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("ckpt_data"))


def test_sigkill_and_sigterm_resume_bit_identical(tmp_path, data_dir):
    # Build the tiny dataset once, before runs race to build it.
    from ovaib_jax import data

    data.prepare(
        "ovaib_parity", data_dir=data_dir, config="m3", M=3, k=2, p=1.0, num_train=256, num_test=64
    )
    ref, killed, termed = (str(tmp_path / n) for n in ("ref", "killed", "termed"))

    # Three runs side by side: uninterrupted, SIGTERMed as soon as it has started
    # (deterministic: the handler is installed before config.json is written; it must
    # save at step 1 and exit cleanly), SIGKILLed after step 10's checkpoint.
    stopped = _start(termed, data_dir)
    _wait_for_file(os.path.join(termed, "config.json"), stopped)
    stopped.send_signal(signal.SIGTERM)
    reference, victim = (_start(w, data_dir) for w in (ref, killed))
    _wait_for(os.path.join(killed, "checkpoints", "10"), victim)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    done = [int(s) for s in os.listdir(os.path.join(killed, "checkpoints")) if s.isdigit()]
    assert max(done) < 40, "the run finished before it was killed: nothing was tested"
    _, err = stopped.communicate(timeout=120)
    assert stopped.returncode == 0, err[-3000:]
    assert "SIGTERM received" in err
    steps = sorted(int(s) for s in os.listdir(os.path.join(termed, "checkpoints")) if s.isdigit())
    assert steps == [1]  # saved where it stopped
    _, err = reference.communicate(timeout=240)
    assert reference.returncode == 0, err[-3000:]
    want = read_model(ref, 40)

    # Both restarts resume and end bit-identical to the uninterrupted run.
    over = dict(RUN, **{"dataset.data_dir": data_dir})
    procs = [
        subprocess.Popen(
            main_cmd(w, over),
            env=subprocess_env(1),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in (killed, termed)
    ]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
    _assert_bit_identical(read_model(killed, 40), want)
    _assert_bit_identical(read_model(termed, 40), want)

    # The evaluate CLI (README command) on the run's own config.json: a damaged latest
    # step is skipped with a warning, read-only (nothing is moved).
    _damage(os.path.join(ref, "checkpoints", "40", "model"))
    r = subprocess.run(
        [sys.executable, "-m", "ovaib_jax.evaluate", f"--workdir={ref}"],
        env=subprocess_env(1),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "step 40" in r.stderr and "falling back" in r.stderr
    results = json.load(open(os.path.join(ref, "eval", "results.json")))
    assert results["step"] == 30 and json.loads(r.stdout)["step"] == 30
    assert (
        np.isfinite(results["heldout_loss"]["loss"])
        and 0 <= results["inbatch_retrieval"]["top1"] <= 1
    )
    assert os.path.isdir(os.path.join(ref, "checkpoints", "40"))


def test_a_resume_logs_no_missing_metadata_warning(tmp_path, caplog):
    """Reading an item's metadata on its own (the shape check before a restore) made orbax
    warn "Metadata file does not exist: .../model/_CHECKPOINT_METADATA" on every resume of
    a healthy checkpoint; that file sits in the step, one level up."""
    directory = str(tmp_path / "checkpoints")
    ckpt = Checkpointer(directory, async_save=False)
    ckpt.save(1, _tree(1.0), None)
    ckpt.wait_until_finished()
    ckpt.close()
    ckpt = Checkpointer(directory, async_save=False)  # a fresh one, as a resumed run opens
    with caplog.at_level(logging.WARNING):
        assert ckpt.restore(_abstract(), with_data=False).step == 1
    assert "Metadata file does not exist" not in caplog.text, caplog.text
    ckpt.close()


def test_the_metadata_warning_filter_lets_every_other_warning_through(caplog):
    """While an item's metadata is read, only orbax's missing-metadata warning is dropped:
    absl's logger was silenced whole, so another thread's warning in that window (a
    failed background write, say) was lost."""
    absl_logger = logging.getLogger("absl")
    with caplog.at_level(logging.WARNING):
        with checkpointing._quiet_absl():
            absl_logger.warning("Metadata file does not exist: /x/model/_CHECKPOINT_METADATA")
            absl_logger.warning("a background write failed: %s", "disk full")
        absl_logger.warning("Metadata file does not exist: /y")  # outside: kept
    assert "a background write failed: disk full" in caplog.text
    assert "/x/model" not in caplog.text
    assert "/y" in caplog.text
