"""The package's layers (docs/ARCHITECTURE.md): every module imports only modules of
lower layers (imports inside functions count), so there is no import cycle, the
objectives need nothing else of the package, and data never imports models."""

from __future__ import annotations

import ast
import os

from tests.train_helpers import ROOT

# Layer of each unit of the package (a module, or a subpackage as a whole).
LAYERS = {
    # 0: the path layer (local directories and gs:// buckets)
    "paths": 0,
    # 1: foundations, independent of each other
    "losses": 1, "models": 1, "data": 1, "checkpointing": 1, "host": 1, "records": 1,
    # 2: on one foundation
    "reporting": 2, "state": 2,
    # 3: evaluators on embedded arrays
    "evaluators": 3,
    # 4-5: configs (authoring, loading, recording), then their validation
    "configs": 4, "validation": 5, "console": 5,
    # 6-7: where a run executes and its workdir rules; its input, its bound objective
    "runtime": 6, "workdir": 6, "inputs": 7, "objective": 7,
    # 8: the train step and the evaluation assembly
    "step": 8, "evaluation": 8,
    # 9: the loop; 10: command-line entry points
    "train": 9, "main": 10, "evaluate": 10, "sweep": 10,
}  # fmt: skip


def _units() -> dict[str, list[str]]:
    """``{unit: [files]}`` of the package."""
    out: dict[str, list[str]] = {}
    pkg = os.path.join(ROOT, "ovaib_jax")
    for d, _, files in os.walk(pkg):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(d, f), pkg)
                unit = rel.split(os.sep)[0].removesuffix(".py")
                out.setdefault(unit, []).append(os.path.join(d, f))
    return out


def _imported_units(path: str) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] == "ovaib_jax":
                out |= {a.name for a in node.names} if len(parts) == 1 else {parts[1]}
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("ovaib_jax.")}
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}: use absolute imports (from ovaib_jax...)")
    return out


def test_every_unit_has_a_layer():
    assert set(_units()) - {"__init__"} == set(LAYERS)


def test_imports_only_go_down():
    bad = []
    for unit, files in _units().items():
        if unit == "__init__":
            continue
        for path in files:
            for other in _imported_units(path) - {unit}:
                if LAYERS[other] >= LAYERS[unit]:
                    bad.append(f"{os.path.relpath(path, ROOT)} imports {other} (layer "
                               f"{LAYERS[other]} >= {LAYERS[unit]})")  # fmt: skip
    assert not bad, "\n".join(bad)
