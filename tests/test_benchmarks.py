"""The loss benchmark's smoke run: it runs end to end and covers every objective."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ovaib_jax import losses

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "loss_benchmark.py"


@pytest.mark.slow
def test_loss_benchmark_quick(tmp_path):
    env = dict(os.environ)
    # conftest.py asks for 8 fake CPU devices; the benchmark measures one real device.
    env.pop("XLA_FLAGS", None)
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,  # about 45 s on 2 busy cores; the margin is for a loaded CI machine
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = list(tmp_path.glob("loss_benchmark_*.md"))
    assert len(files) == 1, files
    text = files[0].read_text()
    assert text.strip().splitlines()[0].startswith("# Loss benchmark")

    # Section 1's table has one row per registered objective, with a ratio in it.
    section = text.split("## 1.")[1].split("\n## ")[0]
    for name in losses.names():
        row = re.search(rf"^\| {re.escape(name)} \| (\d+) \| (\d+\.\d+) \|", section, re.M)
        assert row, f"no ratio row for {name!r} in:\n{section}"
    assert re.search(r"\| ova_ib \|.*\| <= 1\.3: (PASS|MISS) \|", section)
    # The literal eq. 11 form agreed with ova_sufficiency, and every section was written.
    assert "(OK, tolerance 1e-3)" in text
    for heading in ("## 2.", "## 3.", "## 4.", "## 5."):
        assert heading in text
    assert f"Wrote {files[0]}" in proc.stdout
