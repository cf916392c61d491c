"""A workdir never lies and never loses data (issue 11, items 1-6).

* a rerun whose config would make the records another run's stops at start, names the
  differing keys and touches nothing; a checkpoint of another model is never moved;
* ``num_train_steps`` below the latest checkpoint is refused;
* nothing non-finite or exploded is ever saved;
* one live run per workdir (a SIGKILLed holder leaves no stale lock);
* a full disk stops the run with one error naming the cause and the last complete
  checkpoint.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
from tensorboardX.proto.event_pb2 import Event, SessionLog

from ovaib_jax import checkpointing, evaluation, records, state, train, workdir
from tests.train_helpers import ROOT, TINY, main_cmd, read_model, subprocess_env, tiny_config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("workdir_data"))


@pytest.fixture(scope="module")
def finished(data_dir, tmp_path_factory):
    """A finished tiny run (6 steps, checkpoints 3 and 6) and its config."""
    wd = str(tmp_path_factory.mktemp("finished") / "run")
    config = tiny_config(data_dir, eval_every_steps=6, eval_num_batches=1)
    train.train_and_evaluate(config, wd)
    return wd, config


def _snapshot(wd: str) -> dict[str, str]:
    """sha256 of every file of a workdir but the lock (what "touches nothing" means)."""
    out = {}
    for root, _, files in os.walk(wd):
        for f in files:
            if f != workdir.LOCK_FILE:
                p = os.path.join(root, f)
                out[os.path.relpath(p, wd)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


@pytest.mark.parametrize(
    "key, value",
    [("model.embedding_dim", 16), ("objective.tau", 0.5), ("optimizer.name", "sgd")],
)
def test_a_changed_config_is_refused_and_touches_nothing(finished, key, value):
    """Items 1 and 2: a shape change and a hyper-parameter change on resume."""
    wd, base = finished
    before = _snapshot(wd)
    config = tiny_config(base.dataset.data_dir, eval_every_steps=6, eval_num_batches=1)
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(workdir.ResumeError, match=key.replace(".", r"\.")) as err:
        train.train_and_evaluate(config, wd)
    assert "nothing was changed" in str(err.value)
    assert _snapshot(wd) == before
    assert not os.path.exists(os.path.join(os.path.dirname(wd), "checkpoints_corrupt"))


def test_a_checkpoint_of_another_model_is_not_damage(finished, tmp_path):
    """Item 1 at the checkpoint level: restoring with other shapes raises a clear error
    and moves nothing (the fallback is for unreadable files only)."""
    wd, base = finished
    before = _snapshot(wd)
    config = tiny_config(base.dataset.data_dir, **{"model.embedding_dim": 16})
    run = train.build(config, with_data=False)
    ckpt = state.open_checkpointer(wd)
    with pytest.raises(checkpointing.CheckpointMismatchError, match=r"\(16,\)|16\)"):
        state.restore(ckpt, run.state, None)
    ckpt.close()
    assert _snapshot(wd) == before
    assert not os.path.exists(os.path.join(wd, "checkpoints_corrupt"))


def test_a_workdir_whose_checkpoints_were_all_moved_aside_is_not_restarted(finished, tmp_path):
    """Every checkpoint moved to checkpoints_corrupt (as an earlier version did when none
    restored, whatever the cause): the rerun trained again from step 0 over the run's
    records. check_resume refuses it, naming both ways out."""
    import shutil

    wd = str(tmp_path / "run")
    shutil.copytree(finished[0], wd)
    os.rename(os.path.join(wd, "checkpoints"), os.path.join(wd, "checkpoints_corrupt"))
    config = tiny_config(finished[1].dataset.data_dir, eval_every_steps=6, eval_num_batches=1)
    with pytest.raises(workdir.ResumeError, match=r"checkpoints_corrupt/ holds \['3', '6'\]"):
        workdir.check_resume(config, wd)


def test_a_full_disk_at_the_start_of_a_rerun_is_one_error_and_releases_the_workdir(
    finished, tmp_path, monkeypatch
):
    """record_start and the metric writer ran outside the trainer's OSError handling: a
    disk still full on the rerun gave a raw traceback and left the lock and the SIGTERM
    handler installed (an in-process sweep could not run again)."""
    import shutil

    wd = str(tmp_path / "run")
    shutil.copytree(finished[0], wd)
    config = tiny_config(finished[1].dataset.data_dir, eval_every_steps=6, eval_num_batches=1)
    config.num_train_steps = 8

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    handler = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(train.workdir_lib, "record_start", full)
    with pytest.raises(train.WriteError, match=r"No space left.*checkpoint is step 6"):
        train.train_and_evaluate(config, wd)
    assert signal.getsignal(signal.SIGTERM) == handler
    workdir.Lock(wd).acquire().release()  # released: a second run may take it


def test_an_evaluation_with_another_config_says_so_in_its_results(finished, tmp_path):
    """evaluate with a config that differs from the run's beyond its evaluators (here the
    objective's tau) wrote eval/results.json as if it were the run's; the file now names
    the keys that differ. The run's own config records none."""
    import shutil

    from ovaib_jax import evaluate

    wd = str(tmp_path / "run")
    shutil.copytree(finished[0], wd)
    config = tiny_config(finished[1].dataset.data_dir, eval_every_steps=6, eval_num_batches=1)
    config.evaluators = "heldout_loss"  # an evaluation field: not a change of the run
    assert "config_changes" not in evaluate.evaluate_checkpoint(config, wd)
    tau = config.objective.tau
    config.objective.tau = 0.5
    evaluate.evaluate_checkpoint(config, wd)
    saved = json.load(open(os.path.join(wd, "eval", "results.json")))
    assert saved["config_changes"] == {"objective.tau": {"run": tau, "evaluated": 0.5}}


def test_num_train_steps_below_the_latest_checkpoint_is_refused(finished):
    """Item 3: results of the step-6 model must never be labelled step 3."""
    wd, base = finished
    before = _snapshot(wd)
    config = tiny_config(base.dataset.data_dir, eval_every_steps=6, eval_num_batches=1)
    config.num_train_steps = 3
    with pytest.raises(workdir.ResumeError, match="below the latest checkpoint"):
        train.train_and_evaluate(config, wd)
    assert _snapshot(wd) == before
    assert json.load(open(os.path.join(wd, "results.json")))["step"] == 6


def test_resumable_changes_continue_the_run_and_are_recorded(data_dir, tmp_path):
    wd = str(tmp_path / "run")
    train.train_and_evaluate(tiny_config(data_dir), wd)
    config = tiny_config(data_dir, num_train_steps=8, log_every_steps=4)
    out = train.train_and_evaluate(config, wd)
    assert out["step"] == 8 and state.saved_steps(wd)[-1] == 8
    run = json.load(open(os.path.join(wd, workdir.RUN_FILE)))
    assert [s["step"] for s in run["starts"]] == [0, 6]
    assert run["starts"][1]["changed"] == ["log_every_steps", "num_train_steps"]
    assert json.load(open(os.path.join(wd, "config.json")))["num_train_steps"] == 8
    assert run["identity_sha256"] == workdir.identity_hash(tiny_config(data_dir))
    # A decaying schedule fixes num_train_steps: changing it would rewrite the past.
    wd2 = str(tmp_path / "cosine")
    train.train_and_evaluate(tiny_config(data_dir, **{"optimizer.schedule": "cosine"}), wd2)
    longer = tiny_config(data_dir, num_train_steps=9, **{"optimizer.schedule": "cosine"})
    with pytest.raises(workdir.ResumeError, match="decays over num_train_steps"):
        train.train_and_evaluate(longer, wd2)


def test_nothing_exploded_is_saved(data_dir, tmp_path):
    """Item 4: the loss and gradient norm are checked before the update; the parameters
    after it must be checked before they are saved."""
    wd = str(tmp_path / "exploded")
    config = tiny_config(
        data_dir,
        num_train_steps=20,
        checkpoint_every_steps=1,
        **{"optimizer.learning_rate": 1e38, "optimizer.name": "sgd"},
    )
    with pytest.raises(FloatingPointError) as err:
        train.train_and_evaluate(config, wd)
    saved = state.saved_steps(wd)
    if saved:
        assert f"The last checkpoint, step {saved[-1]}, has finite" in str(err.value)
        assert "Start a new workdir with a lower optimizer.learning_rate" in str(err.value)
    else:
        assert "No checkpoint was saved yet" in str(err.value)
    for s in saved:
        for leaf in _leaves(read_model(wd, s)):
            assert np.all(np.isfinite(leaf)) and np.max(np.abs(leaf)) < state.EXPLODED


def _leaves(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)
    else:
        yield np.asarray(tree)


def test_healthy_rejects_nan_inf_and_exploded_values():
    import jax.numpy as jnp

    def st(x):
        return state.TrainState(jnp.zeros((), jnp.int32), {"w": jnp.asarray(x)}, {}, ())

    assert state.healthy(st([1.0, -2.0]))
    for bad in ([1.0, np.nan], [np.inf, 0.0], [2.9e38, 0.0], [-1.9e19, 0.0]):
        assert not state.healthy(st(np.asarray(bad, np.float32))), bad


def test_healthy_allows_large_finite_optimizer_moments():
    """Adam's second moment holds squared gradients: a gradient of 4e11 (a near-zero vector
    L2-normalised, e.g. a CoMM fusion output at initialisation) leaves nu = 1.6e23, finite
    and harmless (its square root is what Adam uses). The parameters' bound is not the
    optimizer state's: only non-finite optimizer values are unhealthy."""
    import jax.numpy as jnp
    import optax

    params = {"w": jnp.ones(2)}
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)
    _, opt_state = tx.update({"w": jnp.asarray([4e11, 1.0])}, opt_state, params)
    assert float(opt_state[0].nu["w"][0]) > state.EXPLODED
    assert state.healthy(state.TrainState(jnp.zeros((), jnp.int32), params, {}, opt_state))
    for bad in (np.inf, np.nan):
        broken = state.TrainState(jnp.zeros((), jnp.int32), params, {}, ({"nu": jnp.full(2, bad)},))
        assert not state.healthy(broken), bad


def test_one_live_run_per_workdir(data_dir, tmp_path):
    """Item 5: a second run on a live workdir is refused naming the holder; a SIGKILLed
    holder leaves no stale lock."""
    wd = str(tmp_path / "locked")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from ovaib_jax.workdir import Lock; held = Lock(sys.argv[1]).acquire();"
         "print('held', flush=True); time.sleep(120)", wd],
        cwd=ROOT, env=subprocess_env(1), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(workdir.WorkdirBusyError, match=f"pid {holder.pid} on"):
            train.train_and_evaluate(tiny_config(data_dir), wd)
        assert not os.path.exists(os.path.join(wd, "config.json"))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    out = train.train_and_evaluate(tiny_config(data_dir), wd)
    assert out["step"] == 6


def test_a_run_whose_lease_was_taken_stops_before_writing(data_dir, tmp_path, monkeypatch):
    """A run that lost its workdir (a bucket lease taken over while its renewals failed)
    stops with one error before its first checkpoint and writes neither checkpoints nor
    results, so that two runs never write one workdir."""
    wd = str(tmp_path / "taken")
    monkeypatch.setattr(workdir.Lock, "lost", lambda self: "pid 7 on elsewhere")
    with pytest.raises(workdir.WorkdirBusyError, match="taken over by pid 7 on elsewhere"):
        train.train_and_evaluate(tiny_config(data_dir), wd)
    assert state.saved_steps(wd) == []
    assert not os.path.exists(os.path.join(wd, "results.json"))


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs (needs root, as CI and the dev machines run; skipped elsewhere)."""
    mount = tmp_path / "small"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                       capture_output=True)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield str(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_stops_the_run_with_one_error(data_dir, small_disk):
    """Item 6: the failed save stops the run (not the TensorBoard flush much later), the
    error names the cause and the last complete checkpoint, and that checkpoint is the
    latest one listed and restores."""
    from ovaib_jax import data

    data.prepare("ovaib_parity", data_dir=data_dir, config="m3", M=3, k=2, p=1.0,
                 num_train=256, num_test=64)  # fmt: skip
    wd = os.path.join(small_disk, "run")
    fs = os.statvfs(small_disk)  # leave room for two or three checkpoints of ~0.4 MiB
    with open(os.path.join(small_disk, "filler"), "wb") as f:
        f.write(b"\0" * max(fs.f_bavail * fs.f_frsize - 1_100_000, 0))
    over = dict(TINY, **{"dataset.data_dir": data_dir, "checkpoint_every_steps": 1,
                         "num_train_steps": 40})  # fmt: skip
    t0 = time.time()
    r = subprocess.run(main_cmd(wd, over), env=subprocess_env(1), cwd=ROOT,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode != 0
    assert "No space left on device" in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "last complete checkpoint is" in ln]
    assert len(errors) == 1, r.stderr[-3000:]
    assert len(lines) < 40, f"{len(lines)} lines:\n" + "\n".join(lines[-60:])
    saved = state.saved_steps(wd)
    assert saved and f"last complete checkpoint is step {saved[-1]}" in errors[0]
    assert read_model(wd, saved[-1])  # complete: it restores
    assert time.time() - t0 < 300


# --------------------------------------------------------------------------- records
# A run interrupted anywhere leaves, once rerun, the records of an uninterrupted run.


class _Killed(BaseException):
    """A simulated kill: a BaseException, which nothing in the trainer catches."""


def _eval_config(data_dir: str):
    """6 steps: logs at 2, 4, 6; checkpoints and periodic evaluation at 3 and 6; a final
    evaluation (results.json and the ``final/`` line)."""
    return tiny_config(
        data_dir, eval_every_steps=3, eval_num_batches=1, final_evaluators="inbatch_retrieval"
    )


def _records(wd: str) -> list[dict]:
    """metrics.jsonl without the timing keys (they differ between any two runs)."""
    with open(os.path.join(wd, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return [{k: v for k, v in r.items() if not k.endswith("_per_sec")} for r in lines]


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
    wd = str(tmp_path_factory.mktemp("uninterrupted") / "run")
    train.train_and_evaluate(_eval_config(data_dir), wd)
    return _records(wd)


def test_uninterrupted_records_hold_every_step_and_kind(uninterrupted):
    """Train lines at the log steps and at each checkpoint (so that a resume never
    averages over a different window), eval lines at the eval steps, the final line."""
    kinds = [
        (r["step"], sorted({k.split("/")[0] for k in r if k != "step"})) for r in uninterrupted
    ]
    assert kinds == [
        (2, ["train"]), (3, ["train"]), (3, ["eval"]), (4, ["train"]), (6, ["train"]),
        (6, ["eval"]), (6, ["final"]),
    ]  # fmt: skip


def test_a_kill_during_an_evaluation_loses_no_record(
    data_dir, tmp_path, monkeypatch, uninterrupted
):
    """Killed in the evaluation of step 3, after its checkpoint was saved: the rerun
    resumes at step 3 and first evaluates it (the run had resumed past it)."""
    wd = str(tmp_path / "run")
    monkeypatch.setattr(evaluation.Evaluation, "run", lambda self, variables: _raise(_Killed()))
    with pytest.raises(_Killed):
        train.train_and_evaluate(_eval_config(data_dir), wd)
    monkeypatch.undo()
    train.train_and_evaluate(_eval_config(data_dir), wd)
    assert _records(wd) == uninterrupted


def test_a_kill_after_the_results_or_a_damaged_final_checkpoint_loses_no_final_record(
    data_dir, tmp_path, monkeypatch, uninterrupted
):
    """Killed right after results.json is written: the rerun still writes the final line.
    Then the last checkpoint damaged: the rerun falls back to step 3, trains again to 6
    and writes the final line again (the results.json of step 6 is kept: the same
    parameters, bit for bit)."""
    from tests.test_checkpointing import _damage

    wd = str(tmp_path / "run")
    real = records.write_results

    def write_then_die(*args, **kwargs):
        real(*args, **kwargs)
        raise _Killed()

    monkeypatch.setattr(records, "write_results", write_then_die)
    with pytest.raises(_Killed):
        train.train_and_evaluate(_eval_config(data_dir), wd)
    monkeypatch.undo()
    train.train_and_evaluate(_eval_config(data_dir), wd)
    assert _records(wd) == uninterrupted

    _damage(os.path.join(wd, "checkpoints", "6"))
    train.train_and_evaluate(_eval_config(data_dir), wd)
    assert state.saved_steps(wd) == [3, 6]
    assert _records(wd) == uninterrupted


def test_a_rerun_from_step_0_purges_the_killed_attempts_tensorboard_steps(
    data_dir, tmp_path, monkeypatch, uninterrupted
):
    """Killed at its first checkpoint (after logging steps 2 and 3), the run starts again at 0:
    TensorBoard gets the purge marker (a SessionLog START at step 1) that hides the
    killed attempt's steps, as a resume from a later step does."""
    wd = str(tmp_path / "run")
    monkeypatch.setattr(state, "save", lambda *a, **k: _raise(_Killed()))
    with pytest.raises(_Killed):
        train.train_and_evaluate(_eval_config(data_dir), wd)
    monkeypatch.undo()
    assert [r["step"] for r in _records(wd)] == [2, 3]  # train lines; killed before eval 3
    train.train_and_evaluate(_eval_config(data_dir), wd)
    assert _records(wd) == uninterrupted
    files = sorted(glob.glob(os.path.join(wd, "tensorboard", "events.out.tfevents.*")))
    assert len(files) == 2 and (1, SessionLog.START) in _session_logs(files[-1])  # the rerun's


def test_a_final_evaluator_added_on_a_rerun_with_no_result_writes_no_empty_line(data_dir, tmp_path):
    """A finished run rerun with a final evaluator its results.json lacks: results.json
    is kept (as documented) and no final line without values is appended, at any rerun."""
    wd = str(tmp_path / "run")
    train.train_and_evaluate(tiny_config(data_dir, eval_every_steps=6, eval_num_batches=1), wd)
    before = _records(wd)
    for _ in range(2):
        config = tiny_config(
            data_dir, eval_every_steps=6, eval_num_batches=1, final_evaluators="mi_bounds"
        )
        train.train_and_evaluate(config, wd)
    assert _records(wd) == before


def _raise(e: BaseException):
    raise e


def _session_logs(path: str) -> list[tuple[int, int]]:
    """(step, status) of every SessionLog event of a TensorBoard event file."""
    out = []
    with open(path, "rb") as f:
        data, i = f.read(), 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i : i + 8])  # length, its crc, data, its crc
        event = Event.FromString(data[i + 12 : i + 12 + n])
        i += 12 + n + 4
        if event.HasField("session_log"):
            out.append((event.step, event.session_log.status))
    return out


def test_keep_checkpoints_0_keeps_every_checkpoint(data_dir, tmp_path):
    """0 is the command line's "keep all" (None cannot be typed there); orbax itself would
    read max_to_keep=0 as keeping none."""
    wd = str(tmp_path / "all")
    config = tiny_config(data_dir, num_train_steps=4, checkpoint_every_steps=1)
    config.keep_checkpoints, config.final_evaluators = 0, ""
    train.train_and_evaluate(config, wd)
    assert state.saved_steps(wd) == [1, 2, 3, 4]


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_saves_and_stops_and_twice_stops_at_once(finished, tmp_path, monkeypatch, presses):
    """Ctrl-C raised KeyboardInterrupt wherever the loop was: a traceback, and the steps
    since the last checkpoint lost. One press now saves at the next step and stops, as
    SIGTERM does; a second stops at once, keeping the last saved checkpoint. Either way
    the lock is released and the handlers are given back."""
    import shutil

    wd = str(tmp_path / "run")
    shutil.copytree(finished[0], wd)
    config = tiny_config(finished[1].dataset.data_dir, eval_every_steps=6, eval_num_batches=1)
    config.num_train_steps = 12
    reached = train._Preemption.reached

    def press_at_step_8(self, step):
        if step == 8:
            for _ in range(presses):
                flag = self.flag
                os.kill(os.getpid(), signal.SIGINT)
                end = time.time() + 10
                # The handler runs in Python, soon: the first sets the flag, the second
                # raises KeyboardInterrupt out of this loop.
                while self.flag == flag and time.time() < end:
                    time.sleep(0.001)
        return reached(self, step)

    monkeypatch.setattr(train._Preemption, "reached", press_at_step_8)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    if presses == 1:
        out = train.train_and_evaluate(config, wd)
        assert out["preempted"] and out["step"] == 8
        assert state.saved_steps(wd)[-1] == 8  # saved where it stopped
    else:
        with pytest.raises(KeyboardInterrupt):
            train.train_and_evaluate(config, wd)
        assert state.saved_steps(wd)[-1] == 6  # the last saved checkpoint, kept
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    workdir.Lock(wd).acquire().release()


def test_a_ctrl_c_after_a_sigterm_is_a_first_press():
    """SIGTERM and Ctrl-C shared one flag: a Ctrl-C after a SIGTERM stopped at once
    instead of letting the run save."""
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    preemption = train._Preemption()
    try:

        def send(sig, until):
            os.kill(os.getpid(), sig)
            end = time.time() + 10
            while not until() and time.time() < end:
                time.sleep(0.001)

        send(signal.SIGTERM, lambda: preemption.flag)
        assert preemption.reached(1) and preemption.name == "SIGTERM"
        send(signal.SIGINT, lambda: preemption.interrupts == 1)  # no KeyboardInterrupt
        with pytest.raises(KeyboardInterrupt):
            send(signal.SIGINT, lambda: False)
    finally:
        preemption.restore()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


def test_every_closer_runs_when_one_raises_keyboard_interrupt():
    """A second Ctrl-C during the final save raised KeyboardInterrupt out of the
    checkpointer's close, and the closers after it (the lock's release) never ran."""
    ran = []

    def interrupted():
        ran.append("checkpointer")
        raise KeyboardInterrupt

    def failing():
        ran.append("writer")
        raise OSError("disk full")

    first = train._close_all([interrupted, failing, lambda: ran.append("lock")])
    assert ran == ["checkpointer", "writer", "lock"]
    assert isinstance(first, KeyboardInterrupt)  # the first failure is returned
