"""What the programs show: progress off a terminal, the end-of-run summary with chance
levels, the start-up noise filter, the batch-size check, and config errors as one line."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import subprocess
import sys
import types

import pytest

from ovaib_jax import console, data, inputs
from tests.train_helpers import ROOT, tiny_config


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_format_duration():
    assert console.format_duration(0) == "0s"
    assert console.format_duration(59.4) == "59s"
    assert console.format_duration(61) == "1m 01s"
    assert console.format_duration(3600 + 125) == "1h 02m"
    assert console.format_duration(2 * 86400 + 3 * 3600 + 59) == "2d 03h"
    assert console.format_duration(float("inf")) == "?"
    assert console.format_duration(None) == "?"


def _scalars(step: int) -> dict[str, float]:
    return {"train/loss": 1.0 + step, "train/steps_per_sec": 0.5}


def test_progress_off_a_terminal_logs_a_line_every_n_steps(caplog):
    stream = io.StringIO()  # not a TTY: nohup, SLURM, a log file
    progress = console.Progress(20, 0, True, every=5, stream=stream)
    with caplog.at_level(logging.INFO, logger="ovaib_jax"):
        for s in range(1, 11):  # scalars only at the log steps, as the loop gives them
            progress.update(s, _scalars(s) if s % 5 == 0 else None)
        progress.close()
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("ovaib_jax")]
    # 15 steps left at 0.5 steps/s: 30 s; 10 left: 20 s.
    assert lines == [
        "step 5/20 (25%) | loss 6 | 0.5 steps/s | ETA 30s",
        "step 10/20 (50%) | loss 11 | 0.5 steps/s | ETA 20s",
    ]
    assert stream.getvalue() == ""  # no bar written off a terminal


def test_progress_off_a_terminal_measures_the_rate_itself(caplog):
    clock = iter([0.0, 100.0, 200.0]).__next__  # the start, then each line
    progress = console.Progress(400, 100, True, every=100, stream=io.StringIO(), clock=clock)
    with caplog.at_level(logging.INFO, logger="ovaib_jax"):
        progress.update(200, {"train/loss": 2.0})  # no steps_per_sec: 100 steps in 100 s
        progress.update(400)  # the last step always logs
    assert [r.getMessage() for r in caplog.records] == [
        "step 200/400 (50%) | loss 2 | 1 steps/s | ETA 3m 20s",
        "step 400/400 (100%) | loss 2 | 2 steps/s | ETA 0s",
    ]


def test_progress_on_a_terminal_is_a_bar_and_disabled_shows_nothing(caplog):
    tty = _Terminal()
    with caplog.at_level(logging.INFO, logger="ovaib_jax"):
        bar = console.Progress(10, 0, True, every=5, stream=tty)
        for s in range(1, 6):
            bar.update(s, _scalars(s) if s == 5 else None)
        bar.close()
        quiet = console.Progress(10, 0, False, every=5, stream=_Terminal())
        quiet.update(5, _scalars(5))
        quiet.close()
    assert "5/10" in tty.getvalue() and "loss=6" in tty.getvalue()
    assert quiet.stream.getvalue() == ""
    assert not caplog.records


def test_summary_table_has_the_chance_levels():
    results = {
        "step": 1500,
        "heldout_loss": {"loss": 3.5, "accuracy": 0.5, "mi_bound/m0": 1.0, "mi_bound/m1": 2.0,
                         "minimality": 1.7},
        "inbatch_retrieval": {"top1": 0.25, "top5": 0.75, "x0/top1": 0.1},
        "downstream": {"label/accuracy": 0.9, "label/loss": 0.3, "label/val_loss": 0.2,
                       "label/best_epoch": 3, "nuisance/mean/r2": 0.1, "nuisance/x0/r2": 0.2},
        "mi_bounds": {"mi_bound/mean": 2.0, "ova_mi_bound/mean": 1.5, "log_n": 4.85,
                      "batch_size": 128, "num_batches": 2},
        "retrieval": {"R@1": 0.01, "R@10": 0.05, "mAP": 0.02, "num_candidates": 1000,
                      "table": "| ... |", "x0+x1->x2/R@1": 0.01},
    }  # fmt: skip
    train = {"train/loss": 3.25, "train/accuracy": 0.125, "train/mi_bound/m0": 0.5,
             "train/steps_per_sec": 40.0, "train/grad_norm": 1.0}  # fmt: skip
    text = console.summary_table(results, train, eval_batch_size=256, batch_size=64,
                                 num_classes={"label": 4}, dataset="ovaib_parity")  # fmt: skip
    cells = [re.split(r"\s{2,}", line.strip()) for line in text.splitlines()[2:]]
    rows = {c[0]: c[1:] for c in cells}
    assert text.splitlines()[0] == "Results at step 1500:"
    assert rows["train/loss"] == ["3.25"]
    assert rows["train/accuracy"] == ["0.125", "0.01562 (1/64)"]
    assert rows["train/mi_bound (mean of 1)"] == ["0.5", "max 4.159 (log 64)"]
    assert rows["heldout_loss/accuracy"] == ["0.5", "0.003906 (1/256)"]
    assert rows["heldout_loss/mi_bound (mean of 2)"] == ["1.5", "max 5.545 (log 256)"]
    assert rows["inbatch_retrieval/top1"] == ["0.25", "0.003906 (1/256)"]
    assert rows["inbatch_retrieval/top5"] == ["0.75", "0.01953 (5/256)"]
    assert rows["downstream/label/accuracy"] == ["0.9", "0.25 (1/4)"]
    assert rows["downstream/nuisance/mean/r2"] == ["0.1", "0 (nothing decodable)"]
    assert rows["mi_bounds/mi_bound/mean"] == ["2", "max 4.852 (log 128)"]
    assert rows["retrieval/R@10"] == ["0.05", "0.01 (10/1000)"]
    assert rows["retrieval/mAP"] == ["0.02"]
    for hidden in ("x0/top1", "label/val_loss", "label/best_epoch", "minimality", "grad_norm",
                   "log_n", "table", "x0+x1->x2", "nuisance/x0"):  # fmt: skip
        assert not any(hidden in k for k in rows), hidden
    assert "N = 256" in text and "ovaib_parity" in text and "equally right" in text
    # eval_batch_size 0 is batch_size; no parity note for another dataset.
    other = console.summary_table(results, train, eval_batch_size=0, batch_size=64)
    assert "0.07812 (5/64)" in other and "ovaib_parity" not in other
    assert console.summary_table({"step": 3}, {}, eval_batch_size=0, batch_size=8) == (
        "Results at step 3: no metrics."
    )


def test_the_tpu_message_is_dropped_and_other_warnings_kept():
    logger = logging.getLogger("jax._src.xla_bridge")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    noise = ("Unable to initialize backend 'tpu': INTERNAL: Failed to open libtpu.so: "
             "libtpu.so: cannot open shared object file: No such file or directory")  # fmt: skip
    busy = "Unable to initialize backend 'tpu': ABORTED: The TPU is already in use."
    saved_hook = sys.unraisablehook
    try:
        logger.info(noise)  # control: without the filter it is shown
        console.install_log_filters()
        console.install_log_filters()  # idempotent
        logger.info(noise)
        logger.warning("An NVIDIA GPU may be present on this machine.")
        logger.warning(busy)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        sys.unraisablehook = saved_hook
    assert seen == [noise, "An NVIDIA GPU may be present on this machine.", busy]
    assert sum(isinstance(f, logging.Filter) for f in logger.filters) == 1


def _unraisable(call):
    """The ``sys.unraisablehook`` argument for the exception ``call()`` raises."""
    try:
        call()
    except Exception as e:
        return types.SimpleNamespace(exc_type=type(e), exc_value=e,
                                     exc_traceback=e.__traceback__, err_msg=None,
                                     object=None)  # fmt: skip
    raise AssertionError("call() raised nothing")


def test_late_callbacks_of_a_closed_event_loop_are_dropped_and_others_kept():
    """A failed checkpoint save (full disk) leaves orbax's other background writes to
    finish after their event loop closed; each printed an ``Event loop is closed``
    traceback through sys.unraisablehook (200+ lines burying the one error)."""
    loop = asyncio.new_event_loop()
    loop.close()
    late = _unraisable(lambda: loop.call_soon_threadsafe(print))
    other = _unraisable(lambda: (_ for _ in ()).throw(RuntimeError("Event loop is closed")))
    also_other = _unraisable(lambda: {}["x"])
    seen = []

    def hook(u):
        seen.append(u)

    saved = sys.unraisablehook
    try:
        sys.unraisablehook = hook
        console.install_log_filters()
        console.install_log_filters()  # idempotent: one filter
        for u in (late, other, also_other):
            sys.unraisablehook(u)
        assert sys.unraisablehook.previous is hook
    finally:
        sys.unraisablehook = saved
    assert seen == [other, also_other]


def test_batch_sizes_larger_than_the_splits_fail_before_training(tmp_path):
    config = tiny_config(str(tmp_path), eval_batch_size=128, final_evaluators="inbatch_retrieval")
    data.prepare(config.dataset.name, **inputs.data_kwargs(config))  # num_test = 64
    with pytest.raises(console.ConfigError) as e:  # a ValueError: main shows it alone
        inputs.check_eval_batch(config)
    message = str(e.value)
    assert "--config.eval_batch_size=128" in message and "64 examples" in message
    assert "--config.eval_batch_size=64 or less" in message  # 8 test devices divide 64
    assert "--config.batch_size" not in message
    with config.unlocked():
        config.eval_batch_size = 0
        config.batch_size = 512  # both splits: one error naming both flags
    with pytest.raises(ValueError, match=r"batch_size=512 .*256 examples.*eval_batch_size=0"):
        inputs.check_eval_batch(config)
    # The trainer's own path checks before it makes the train iterator (whose epoch-aligned
    # stream refused the batch first, with a traceback instead of this message).
    from ovaib_jax import train

    with pytest.raises(console.ConfigError, match=r"--config.batch_size=512 is larger"):
        train.build(config)
    config.batch_size, config.eval_batch_size = 16, 64
    inputs.check_eval_batch(config)  # fits
    config.eval_batch_size, config.final_evaluators = 128, ""
    inputs.check_eval_batch(config)  # never evaluated (eval_every_steps = 0): no error


def test_an_evaluator_field_the_dataset_does_not_store_is_one_error_before_training(
    tmp_path, capsys, monkeypatch
):
    """A target an evaluator's config names that the dataset does not store (a typo) was
    found by the final evaluation, after the whole run, as a KeyError traceback; it is one
    config error now, before training (and before ovaib_jax.evaluate embeds a split)."""
    import ml_collections

    from ovaib_jax import evaluate, evaluation, main, train

    config = tiny_config(str(tmp_path), final_evaluators="downstream")
    with config.unlocked():
        config.evaluator_kwargs.downstream = ml_collections.ConfigDict({"targets": ("label",)})
    data.prepare(config.dataset.name, **inputs.data_kwargs(config))
    inputs.check_evaluator_keys(config)  # a declared target
    config.evaluator_kwargs.downstream.targets = ("is_parity",)
    inputs.check_evaluator_keys(config)  # a stored field that is not a declared target
    config.evaluator_kwargs.downstream.targets = ("labell", "label")
    want = (
        "config.evaluator_kwargs.downstream names ['labell'], which ovaib_parity does not "
        "store (its targets and other stored fields are ['bits', 'is_parity', 'label'])."
    )
    with pytest.raises(console.ConfigError) as e:
        inputs.check_evaluator_keys(config)
    assert str(e.value) == want
    inputs.check_evaluator_keys(config, names=["retrieval"])  # downstream does not run
    with pytest.raises(console.ConfigError):
        train.build(config)
    capsys.readouterr()  # the dataset build's progress bars
    with pytest.raises(SystemExit) as e:
        main.train_main(config, str(tmp_path / "w"))
    assert e.value.code == 2
    assert capsys.readouterr().err == f"ovaib_jax.main: config error: {want}\n"
    assert not os.path.exists(tmp_path / "w" / "checkpoints")  # nothing trained
    monkeypatch.setattr(
        evaluation, "restore", lambda *a: types.SimpleNamespace(step=0, evaluation=None)
    )
    with pytest.raises(SystemExit) as e:
        evaluate.evaluate_main(config, str(tmp_path / "w"))
    assert e.value.code == 2
    assert capsys.readouterr().err == f"ovaib_jax.evaluate: config error: {want}\n"


def _main(*flags: str, module: str = "ovaib_jax.main") -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", module, *flags]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_a_typo_in_a_config_key_is_one_line_with_a_suggestion(tmp_path):
    proc = _main("--config=experiments/default.py:runlocal", f"--workdir={tmp_path}",
                 "--config.num_train_stepz=5")  # fmt: skip
    out = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(out) < 5, out
    assert "--config.num_train_stepz" in proc.stderr
    assert "Did you mean --config.num_train_steps?" in proc.stderr
    assert "Traceback" not in proc.stderr


# ml_collections' config_flags loads the experiment file with importlib's deprecated
# load_module (its code, not ours; a warning Python hides outside __main__).
@pytest.mark.filterwarnings("ignore:the load_module\\(\\) method is deprecated:DeprecationWarning")
def test_a_key_the_objective_does_not_take_names_the_objectives_that_do(tmp_path, capsys,
                                                                         monkeypatch):  # fmt: skip
    """In process: ml_collections reads the overrides from sys.argv."""
    from absl import flags
    from ml_collections import config_flags

    argv = ["prog", "--config=experiments/default.py:runlocal", f"--workdir={tmp_path}",
            "--config.objective.logit_scale=3"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.chdir(ROOT)
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", lock_config=True, flag_values=fv)
    flags.DEFINE_string("workdir", None, "", flag_values=fv)
    with pytest.raises(SystemExit) as e:
        console.parse_flags(argv, program="ovaib_jax.main", flag_values=fv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("ovaib_jax.main: --config.objective.logit_scale: no such config key")
    assert "objective 'ova_ib' takes " in err[0] and "symile" in err[0]
    assert "--config=experiments/default.py:runlocal,objective=symile" in err[0]
    # An experiment file that fails: its exception's line, no traceback.
    argv[1] = "--config=experiments/wesad.py:runlocal"
    monkeypatch.setattr(sys, "argv", argv[:3])
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", lock_config=True, flag_values=fv)
    with pytest.raises(SystemExit):
        console.parse_flags(argv[:2], program="ovaib_jax.main", flag_values=fv)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Unknown config argument 'runlocal'" in err[0], err


def test_missing_raw_files_and_config_errors_found_by_the_trainer(tmp_path, capsys, monkeypatch):
    """main.train_main (what main does after parsing the flags): a config that does not
    validate, or that fails once the dataset is built, is one line (status 2); missing
    raw files name the trainer's --config.dataset.manual_dir, not the build tool's flag."""
    from ovaib_jax import main, train

    config = tiny_config(str(tmp_path))
    builder = data.get_builder("wesad", data_dir=str(tmp_path))
    missing = data.MissingDataError(builder.missing_files_message(["S2/S2.pkl"], None))
    assert "--manual_dir DIR" in str(missing)  # the build tool's flag, as data/ words it
    errors = []
    for error, status in ((missing, 1), (console.ConfigError("--config.batch_size=9 ..."), 2)):

        def fails(*args, error=error):
            raise error

        monkeypatch.setattr(train, "train_and_evaluate", fails)
        with pytest.raises(SystemExit) as e:
            main.train_main(config, str(tmp_path / "w"))
        errors.append(capsys.readouterr().err)
        assert e.value.code == status and errors[-1].startswith("ovaib_jax.main: "), errors
    assert "pass --config.dataset.manual_dir=DIR" in errors[0]
    assert "--manual_dir DIR" not in errors[0] and "Dataset 'wesad'" in errors[0]
    assert errors[1] == "ovaib_jax.main: config error: --config.batch_size=9 ...\n"
    config.objective.tau = -1.0  # fails validation, before training
    with pytest.raises(SystemExit) as e:
        main.train_main(config, str(tmp_path / "w"))
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "objective.tau" in err[0], err


def test_label_relevance_retrieval_shows_the_evaluators_chance_level():
    """With label relevance a random ranking finds a same-class candidate far more often
    than k/N: the summary shows the evaluator's chance/R@k instead."""
    results = {"step": 10, "retrieval": {"R@1": 0.3, "R@5": 0.6, "num_candidates": 1000,
                                         "chance/R@1": 0.1, "chance/R@5": 0.41}}  # fmt: skip
    text = console.summary_table(results, None, eval_batch_size=8, batch_size=8)
    rows = {c[0]: c[1:] for c in (re.split(r"\s{2,}", ln.strip()) for ln in text.splitlines()[2:])}
    assert rows["retrieval/R@1"] == ["0.3", "0.1"] and rows["retrieval/R@5"] == ["0.6", "0.41"]
    assert not any(k.startswith("retrieval/chance") for k in rows)


def test_damaged_data_files_are_one_line_in_train_and_evaluate(tmp_path, capsys, monkeypatch):
    """A damaged record or raw file (CorruptDataError: its message names the file and the
    rebuild command), or checkpoints none of which restores, end ovaib_jax.main and
    ovaib_jax.evaluate with that message alone, status 1, as missing files do (they had
    escaped as tracebacks)."""
    from ovaib_jax import evaluate, main, train
    from ovaib_jax.checkpointing import NoRestorableCheckpointError

    config = tiny_config(str(tmp_path))
    for error in (
        data.CorruptDataError("Record file x.array_record-00000-of-00001 is damaged ..."),
        NoRestorableCheckpointError("None of the checkpoints in W restores (...). Remove ..."),
    ):

        def fails(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(train, "train_and_evaluate", fails)
        monkeypatch.setattr(evaluate, "evaluate_checkpoint", fails)
        for program, call in (
            ("ovaib_jax.main", lambda: main.train_main(config, str(tmp_path / "w"))),
            ("ovaib_jax.evaluate", lambda: evaluate.evaluate_main(config, str(tmp_path / "w"))),
        ):
            with pytest.raises(SystemExit) as e:
                call()
            err = capsys.readouterr().err
            assert e.value.code == 1 and err == f"{program}: {error}\n", err


def test_distributed_settings_that_cannot_start_are_one_config_error(tmp_path, capsys, monkeypatch):
    """Half-given distributed settings reached jax.distributed.initialize (tracebacks:
    "Number of processes must be defined.", an IndexError for an address without a port)
    or were silently ignored (num_processes and process_id without a coordinator trained
    alone); each is one config-error line now, before any device is touched."""
    from ovaib_jax import main, runtime, train

    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    monkeypatch.setattr(train, "train_and_evaluate", lambda *a: pytest.fail("trained"))
    cases = [
        ({"num_processes": 2, "process_id": 0}, r"num_processes=2 and process_id=0 set, but"),
        ({"process_id": 1}, r"distributed\.process_id=1 set, but nothing starts"),
        ({"coordinator_address": "localhost"}, r"must be HOST:PORT"),
        ({"coordinator_address": "localhost:1234", "num_processes": 2, "process_id": 2},
         r"process_id=2 must be in \[0, num_processes=2\)"),
    ]  # fmt: skip
    for settings, match in cases:
        config = tiny_config(str(tmp_path))
        config.distributed.update(settings)
        with pytest.raises(ValueError, match=match):
            runtime.initialize_distributed(config)
        with pytest.raises(SystemExit) as e:
            main.train_main(config, str(tmp_path / "w"))
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and "config error" in err[0], err

    # Evaluating a recorded multi-host run (its coordinator came from the environment):
    # one process, no error.
    config = tiny_config(str(tmp_path))
    config.distributed.update({"num_processes": 2, "process_id": 0})
    assert runtime.initialize_distributed(config, training=False) is False

    def jax_fails(**kwargs):
        raise ValueError("Number of processes must be defined.")

    monkeypatch.setattr(runtime.jax.distributed, "initialize", jax_fails)
    config = tiny_config(str(tmp_path))
    config.distributed.coordinator_address = "localhost:1234"
    with pytest.raises(ValueError, match=r"Number of processes.*set all of"):
        runtime.initialize_distributed(config)


def test_an_empty_or_unusable_workdir_is_one_line(tmp_path, capsys):
    """--workdir= trained into the current directory; a workdir that is a file was a
    FileExistsError traceback."""
    from ovaib_jax import main

    config = tiny_config(str(tmp_path))
    with pytest.raises(SystemExit) as e:
        main.train_main(config, " ")
    assert e.value.code == 2 and "--workdir is empty" in capsys.readouterr().err
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(SystemExit) as e:
        main.train_main(config, str(afile))
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 1 and len(err) == 1 and "cannot use --workdir=" in err[0], err


def test_an_unknown_key_with_nothing_close_lists_its_section():
    """--config.optimizer.lr=3e-4 said only "no such config key"."""
    config = tiny_config("/tmp")
    msg = console.unknown_key_message(config, "optimizer.lr")
    assert msg.startswith("--config.optimizer.lr: no such config key; optimizer holds ")
    assert "learning_rate" in msg and "weight_decay" in msg
    near = console.unknown_key_message(config, "optimizer.learning_rat")
    assert near.endswith("Did you mean --config.optimizer.learning_rate?")


def test_a_section_given_one_value_names_its_keys_and_the_objective_argument(tmp_path):
    """--config.objective=symile was "bad --config override: ValueError: Failed to parse
    'symile' as a ConfigDict"."""
    proc = _main("--config=experiments/parity.py:runlocal", f"--workdir={tmp_path}",
                 "--config.objective=symile")  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "--config.objective is a section, not a value" in err[0], err
    assert "--config=experiments/parity.py:runlocal,objective=NAME" in err[0]


def test_a_second_ctrl_c_is_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    """A KeyboardInterrupt out of training (a second Ctrl-C) ended in a traceback; now one
    line saying the last checkpoint is kept, and exit status 130."""
    from ovaib_jax import main, train

    def interrupted(config, workdir):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "train_and_evaluate", interrupted)
    config = tiny_config(str(tmp_path))
    with pytest.raises(SystemExit) as e:
        main.train_main(config, str(tmp_path / "w"))
    assert e.value.code == 130
    err = capsys.readouterr().err
    assert "last saved checkpoint is kept: rerun the same command to resume" in err
