"""Every command of README.md that is cheap enough runs.

The ``bash`` blocks of the README are read line by line (continuations joined, ``&&``
chains split, comments dropped). ``python -m ovaib_jax.{main,evaluate,sweep}`` commands
run as written with their workdirs moved under a temporary directory and tiny sizes
appended (``--config.*`` overrides of tests/train_helpers.TINY that the config has, the
first seed and the first objective for a sweep); ``python -m ovaib_jax.data.build`` runs
for the offline datasets that need no download. Skipped, with the reason: installs, the
test suite itself, benchmarks (tests/test_benchmarks.py), commands that need downloaded
files.
"""

from __future__ import annotations

import os
import re
import shlex
import sys

import pytest

from tests.train_helpers import ROOT, TINY, cli_flags, load_experiment, run, subprocess_env

README = os.path.join(ROOT, "README.md")
# Datasets that build offline with nothing downloaded.
OFFLINE_BUILDS = ("ovaib_parity", "ovaib_latent")
TINY_EVAL = {
    **TINY,
    "evaluator_kwargs.downstream.hidden": (16,),
    "evaluator_kwargs.downstream.max_epochs": 2,
    "evaluator_kwargs.modality_subsets.hidden": (16,),
    "evaluator_kwargs.modality_subsets.max_epochs": 2,
    "evaluator_kwargs.mi_bounds.batch_size": 32,
}


def readme_commands(text: str) -> list[str]:
    """The shell commands of the ```bash blocks of a markdown text."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\s*\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands += [c.strip() for c in line.split("&&") if c.strip()]
    return commands


def skip_reason(command: str) -> str | None:
    """Why a README command is not run here (None: it runs)."""
    words = shlex.split(command)
    if words[:1] == ["pip"]:
        return "installs packages"
    if "pytest" in words:
        return "the test suite itself"
    if words[:1] == ["python"] and len(words) > 1 and words[1].startswith("benchmarks/"):
        return "benchmarks run in tests/test_benchmarks.py"
    if words[:2] != ["python", "-m"] or not words[2].startswith("ovaib_jax."):
        return "not an ovaib_jax command"
    if "manual_dir" in command:
        return "needs downloaded files"
    if "gs://" in command:
        return "needs a bucket (tests/test_gcs.py runs these against a GCS emulator)"
    if words[2] == "ovaib_jax.data.build" and words[3] not in OFFLINE_BUILDS:
        return f"{words[3]} downloads a wheel or needs downloaded files"
    return None


def _config_arg(words: list[str]) -> str | None:
    for w in words:
        if w.startswith("--config="):
            return w.split("=", 1)[1]
    return None


def tiny_args(words: list[str]) -> list[str]:
    """The tiny ``--config.*`` overrides (those the command's config has) and, for a sweep,
    only the first of its seeds and of its objectives."""
    config_arg = _config_arg(words)
    if config_arg is None:
        return []
    path, _, arg = config_arg.partition(":")
    name = os.path.relpath(os.path.join(ROOT, path), os.path.join(ROOT, "experiments"))[:-3]
    config = load_experiment(name, arg or None)

    def has(key):
        node = config
        for part in key.split("."):
            if not hasattr(node, "keys") or part not in node:
                return False
            node = node[part]
        return True

    extra = cli_flags({k: v for k, v in TINY_EVAL.items() if has(k)})
    if words[2] == "ovaib_jax.sweep":
        # (The flags given last win.) Several objectives and seeds are tests/test_sweep.py's.
        for flag, default in (("--seeds=", "42"), ("--objectives=", None)):
            given = [w.split("=", 1)[1] for w in words if w.startswith(flag)]
            if given or default:
                extra.append(flag + (given[0] if given else default).split(",")[0])
    return extra


def runnable(command: str, tmp: str) -> list[str]:
    """The command as run here: this Python, workdirs under ``tmp``, tiny sizes."""
    command = re.sub(r"\s\[[^\]]*\]", "", command)  # optional arguments shown as [--x=N]
    words = shlex.split(command)
    out = []
    for w in words:
        if w.startswith("--workdir="):
            w = "--workdir=" + os.path.join(tmp, re.sub(r"\W", "_", w.split("=", 1)[1]))
        out.append(w)
    if words[2] in ("ovaib_jax.main", "ovaib_jax.evaluate", "ovaib_jax.sweep"):
        out += tiny_args(words)
    return [sys.executable, *out[1:]]


def run_readme(path: str, tmp: str) -> list[tuple[str, str]]:
    """Runs the commands of the README at ``path``; returns (command, skip reason) of the
    skipped ones. Fails on the first command that does not exit with 0."""
    env = subprocess_env(devices=1)
    env["OVAIB_DATA_DIR"] = os.path.join(tmp, "data")
    env["OVAIB_NO_DOWNLOAD"] = "1"
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    skipped = []
    for command in readme_commands(open(path).read()):
        reason = skip_reason(command)
        if reason is not None:
            skipped.append((command, reason))
            continue
        proc = run(runnable(command, tmp), env, timeout=600)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return skipped


def test_readme_command_parsing():
    text = (
        "x\n```bash\n# comment\npip install -e . && python -m ovaib_jax.main --config=a.py "
        "--workdir=/tmp/w  # trailing\npython -m ovaib_jax.sweep --config=b.py \\\n"
        "    --objectives=ova_ib --workdir=DIR\n```\n```python\nimport x\n```\n"
    )
    assert readme_commands(text) == [
        "pip install -e .",
        "python -m ovaib_jax.main --config=a.py --workdir=/tmp/w",
        "python -m ovaib_jax.sweep --config=b.py --objectives=ova_ib --workdir=DIR",
    ]
    assert skip_reason("pip install -e .") == "installs packages"
    assert "downloaded" in skip_reason("python -m ovaib_jax.data.build wesad --manual_dir ~/x")
    assert skip_reason("python -m ovaib_jax.data.build ovaib_parity --config m3") is None
    sweep = "python -m ovaib_jax.sweep --config=experiments/parity.py --objectives=ova_ib,symile"
    first = ["--objectives=ova_ib"]
    assert tiny_args(shlex.split(sweep + " --seeds=7,0"))[-2:] == ["--seeds=7", *first]
    assert tiny_args(shlex.split(sweep))[-2:] == ["--seeds=42", *first]


@pytest.mark.slow
def test_every_cheap_readme_command_runs(tmp_path):
    skipped = run_readme(README, str(tmp_path))
    assert all(reason for _, reason in skipped)


def test_readme_python_example_runs():
    """The README's Python example (objectives in one's own JAX code) runs as written,
    on 4 fake CPU devices for its sharded part."""
    with open(README) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    assert blocks, "README has no python example"
    for code in blocks:
        proc = run([sys.executable, "-c", code], env=subprocess_env(devices=4))
        assert proc.returncode == 0, proc.stderr[-3000:]
