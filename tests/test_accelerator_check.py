"""benchmarks/accelerator_check.py --quick: it runs end to end on a CPU and writes every
section of the report with numbers in it."""

import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from tests.train_helpers import one_real_device

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "accelerator_check.py"


def _section(text: str, heading: str) -> str:
    assert heading in text, f"no {heading!r} in the report:\n{text}"
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


def _rows(section: str) -> list[list[str]]:
    """The body rows of the markdown tables of a section, as lists of cells."""
    rows = []
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def _float(cell: str) -> float:
    assert re.fullmatch(r"-?\d+(\.\d+)?", cell), f"not a number: {cell!r}"
    return float(cell)


@pytest.mark.slow
def test_accelerator_check_quick(tmp_path):
    env = dict(os.environ)
    # conftest.py asks for 8 fake CPU devices; the check measures the real ones.
    one_real_device(env)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", f"--out={tmp_path}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,  # about 55 s on 2 busy cores; the margin is for a loaded CI machine
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = list(tmp_path.glob("accelerator_*.md"))
    assert len(files) == 1, files
    assert re.fullmatch(r"accelerator_cpu_\d{4}-\d{2}-\d{2}_quick\.md", files[0].name)
    assert f"Wrote {files[0]}" in proc.stdout
    # Progress lines carry a clock time and the seconds since the start.
    assert re.search(r"^\[\d\d:\d\d:\d\d \+ *\d+\.\d s\] section 2", proc.stderr, re.M)
    text = files[0].read_text()

    # Header: device, jax version, date; no failure.
    assert text.startswith("# Accelerator check, ")
    assert f"jax {jax.__version__}" in text
    assert "Device `cpu` (cpu)" in text
    assert "Failures: none." in text

    # 1. Tests: counts per outcome; with one CPU device everything is skipped, with why.
    tests = _section(text, "## 1. Tests on the real devices")
    counts = {row[0]: int(row[1]) for row in _rows(tests) if row[0] != "outcome"}
    assert set(counts) == {"passed", "failed", "error", "skipped", "not selected"}
    assert counts["failed"] == counts["error"] == 0
    assert counts["passed"] + counts["skipped"] > 0
    assert "pytest summary: `" in tests
    assert "test_eight_devices_equal_one_device` not selected: needs 2 or more" in tests
    assert "skipped by pytest: needs 8 devices" in tests

    # 2. Loss: every (M, dtype, form) has a time, a ratio to the floor and memory.
    loss = _section(text, "## 2. Loss forward+backward")
    rows = [r for r in _rows(loss) if r[0] == "ova_ib"]
    got = {(int(r[1]), int(r[2]), r[3], r[4]) for r in rows}
    want = {
        (m, 256, dt, form)
        for m in (2,)
        for dt in ("bfloat16", "float32")
        for form in ("plain", "chunk=64")
    }
    assert got == want, rows
    for r in rows:
        assert _float(r[5]) > 0 and _float(r[6]) > 0, r  # ms, / floor
        assert _float(r[7]) >= 0 and _float(r[8]) >= 0, r  # temporary MiB

    # 3. Train step: both configs, both dtypes between them, numbers; no peak for a CPU.
    train = _section(text, "## 3. Train step of the paper configs")
    rows = [r for r in _rows(train) if r[0] != "config"]
    assert {(r[0], r[1]) for r in rows} == {
        ("VFD classification", "bfloat16"),
        ("WESAD", "float32"),
    }
    for r in rows:
        steps_per_s, examples_per_s = _float(r[3]), _float(r[4])
        assert steps_per_s > 0 and examples_per_s == pytest.approx(
            steps_per_s * int(r[2]), rel=0.01, abs=0.1
        )
        assert _float(r[6]) > 0 and _float(r[7]) > 0, r  # GFLOP/step, achieved TFLOP/s
        assert r[8] == r[9] == "n/a", r  # peak and MFU: unknown device
    assert "rgb (128, 128, 3) uint8 (resnet18)" in train
    assert "resp (3500, 1) float32 (cnn1d)" in train

    # 4. Pipeline: supply, demand and their ratios.
    pipe = _section(text, "## 4. Input pipeline against the step's demand")
    rows = {r[0]: r for r in _rows(pipe)}
    for name in (
        "step fed by the real pipeline",
        "step fed by in-memory batches (the step's demand)",
        "the pipeline alone (its supply)",
    ):
        assert _float(rows[name][1]) > 0 and _float(rows[name][2]) > 0
    for label in ("VFD classification, bfloat16", "WESAD, float32"):
        assert _float(rows[label][3]) > 0
    assert _float(re.search(r"throughput: \*\*([\d.]+)\*\*", pipe).group(1)) > 0
    assert _float(re.search(r"supply / demand of this step: \*\*([\d.]+)\*\*", pipe).group(1)) > 0

    # What was skipped, and why.
    skipped = _section(text, "## Skipped, and why")
    assert "--quick runs one dtype per config" in skipped
    assert "no known peak FLOP/s" in skipped


def test_only_running_out_of_memory_is_a_skip():
    """Section 2 skipped a case whose compile failed for any reason ("Failures: none" and
    exit status 0 with a broken objective); only a size that does not fit is a skip.
    (In a subprocess: the script's import defines absl flags that ovaib_jax.main defines
    too, which would break the tests that import it in this process.)"""
    code = """
import sys
sys.path.insert(0, sys.argv[1])
from benchmarks import accelerator_check as module
oom = RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 8.00GiB.")
assert module.out_of_memory(oom)
assert module.out_of_memory(RuntimeError("CUDA_ERROR_OUT_OF_MEMORY: out of memory"))
assert not module.out_of_memory(TypeError("dot_general requires contracting dims"))
assert not module.out_of_memory(NotImplementedError("MLIR translation rule"))
assert module.peak_of("nvidia h200 nvl")[0] == "NVIDIA H200 NVL"
assert module.peak_of("nvidia h200")[0] == "NVIDIA H200"
print("ok")
"""
    env = dict(os.environ)
    one_real_device(env)
    proc = subprocess.run(
        [sys.executable, "-c", code, str(REPO)], env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert proc.stdout.strip() == "ok", proc.stderr[-3000:]
