"""scripts/results_sweeps.sh: stopping the script stops the python it runs; the sections
run the commands they name."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import time

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "results_sweeps.sh"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes: read its state.
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _wait_for(predicate, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _fake_python(tmp_path, body: str) -> dict[str, str]:
    """The environment of a run of the script with a stand-in `python` (a shell script of
    ``body``) first on PATH."""
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(f"#!/bin/sh\n{body}\n")
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}


# Popen forks and at once execs bash: JAX's at-fork warning (threads in a forked child)
# does not apply.
@pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_killing_the_script_stops_its_python(tmp_path, sig):
    # A stand-in `python` first on PATH: records its pid, then sleeps as a long run would.
    pid_file = tmp_path / "python.pid"
    env = _fake_python(tmp_path, f"echo $$ > {pid_file}\nexec sleep 120")
    script = subprocess.Popen(
        ["bash", str(SCRIPT), str(tmp_path / "root"), "parity"],
        env=env,
        start_new_session=True,  # a signal to the script only, not a whole terminal group
        # As from a terminal: a test process started in the background by a
        # non-interactive shell inherits SIGINT ignored, and a shell cannot trap a signal
        # ignored on entry (POSIX).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert _wait_for(lambda: pid_file.exists() and pid_file.read_text().strip())
        child = int(pid_file.read_text())
        assert _alive(child)
        script.send_signal(sig)
        assert script.wait(timeout=20) == 143
        assert _wait_for(lambda: not _alive(child)), "the script's python outlived it"
    finally:
        if script.poll() is None:
            script.kill()
        if pid_file.exists() and pid_file.read_text().strip():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_unknown_section_is_one_clear_error(tmp_path):
    out = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path), "no_such_section"], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "unknown section no_such_section" in out.stderr


def test_bad_sections_and_roots_stop_the_script_before_any_sweep(tmp_path):
    """A typo'd section after a good one was found only once the good one had run (hours);
    a ROOT with a space split every --workdir in two; branches_score_weight with no run
    called score_weight.py with no argument and exited 0."""
    log = tmp_path / "commands.log"
    env = _fake_python(tmp_path, f'echo "$*" >> {log}')
    for root, sections, status, message in (
        (tmp_path / "root", ["trifeature_m5_confu", "mfeat-tau"], 2, "unknown section mfeat-tau"),
        (tmp_path / "my root", ["trifeature_m5_confu"], 2, "holds a space"),
        (tmp_path / "root", ["branches_score_weight"], 1, "trifeature_m*_branches/*/seed_* runs"),
    ):
        out = subprocess.run(
            ["bash", str(SCRIPT), str(root), *sections], env=env, capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == status and message in out.stderr, out.stderr
        assert not log.exists(), log.read_text()  # no python ran


def _commands(tmp_path, *sections: str) -> list[str]:
    """The python command lines the script runs for ``sections``, with a stand-in python
    that records them and succeeds."""
    log = tmp_path / "commands.log"
    env = _fake_python(tmp_path, f'echo "$*" >> {log}')
    subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "root"), *sections], env=env, check=True, timeout=60
    )
    return log.read_text().splitlines()


def test_more_seeds_keep_the_published_reports_whole(tmp_path):
    """moonshot_retention_more ran --seeds=4,5,6,7,8 into workdirs whose published reports
    hold seeds 42, 0-8: a sweep reports the seeds it is given, so the rerun rewrote them
    with five seeds. It now names all ten (the five finished ones are skipped)."""
    lines = _commands(tmp_path, "moonshot_retention_more")
    assert len(lines) == 4
    for line in lines:
        assert "--seeds=42,0,1,2,3,4,5,6,7,8 " in line
        assert "--config.dataset.epoch_aligned=False" in line  # the published runs' order


def test_one_method_at_one_m_is_a_section(tmp_path):
    (line,) = _commands(tmp_path, "trifeature_m5_confu")
    root = tmp_path / "root"
    assert line.startswith("-m ovaib_jax.sweep --seeds=42,0,1,2,3 ")
    assert "--config=experiments/trifeature.py:M=5 " in line
    assert f"--workdir={root}/trifeature_m5_confu --objectives=confu" in line
    # the union section runs each of its six parts once, in order
    (tmp_path / "all").mkdir()
    lines = _commands(tmp_path / "all", "trifeature_m45_rest")
    dirs = [x.split("--workdir=")[1].split()[0].rsplit("/", 1)[1] for x in lines]
    assert dirs == [
        f"trifeature_m{m}_{k}" for m in (4, 5) for k in ("span_product", "confu", "heads")
    ]


def test_published_reports_link_only_figures_that_are_there(tmp_path):
    """copy_reports.sh copied report.md whole but only some figures: 564 image links of
    docs/results/*/report.md pointed at files never copied (every PCA plot, and every
    figure of a single-objective sweep). It now keeps the links whose file it copied."""
    import json
    import re

    link = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")
    docs = SCRIPT.parents[1] / "docs" / "results"
    broken = [
        f"{path.parent.name}/{m.group(1)}"
        for path in sorted(docs.glob("*/report.md"))
        for m in link.finditer(path.read_text())
        if not (path.parent / m.group(1)).exists()
    ]
    assert not broken, broken[:10]

    root, dest = tmp_path / "root", tmp_path / "dest"
    figures = ["curves.png", "pca_a.png", "retrieval_x0_to_x1.png"]
    for name, objectives in (("multi", ["a", "b"]), ("single", ["a"])):
        sweep = root / name
        sweep.mkdir(parents=True)
        lines = ["# report", "", "## Figures", ""]
        for fig in figures:
            (sweep / fig).write_bytes(b"png")
            lines += [f"![{fig}]({fig})", ""]
        (sweep / "report.md").write_text("\n".join(lines))
        (sweep / "report.json").write_text(json.dumps({"objectives": objectives}))
    env = {**os.environ, "COPY_REPORTS_DEST": str(dest)}
    script = SCRIPT.parent / "copy_reports.sh"
    subprocess.run(["bash", str(script), str(root)], env=env, check=True)
    for name, kept in (("multi", ["curves.png", "retrieval_x0_to_x1.png"]), ("single", [])):
        text = (dest / name / "report.md").read_text()
        assert link.findall(text) == kept, text
        assert sorted(p.name for p in (dest / name).glob("*.png")) == kept
        assert "were not copied to the repository" in text
