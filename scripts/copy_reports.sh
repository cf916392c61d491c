#!/bin/bash
# Copies each sweep's report from ROOT to docs/results/<sweep>/: report.md and report.json
# always, the figures (training curves, retrieval bars, subset heatmaps) only for sweeps
# that compare several objectives. The copied report.md keeps only the figure links whose
# file was copied, and says where the others are (the PCA plots, every figure of a
# single-objective sweep: in the sweep's directory under ROOT).
#   bash scripts/copy_reports.sh /tmp/res
#   bash scripts/copy_reports.sh --prune-only   # only rewrite the links of docs/results/*
set -euo pipefail
DEST=${COPY_REPORTS_DEST:-$(dirname "$0")/../docs/results}  # the variable: for tests

# Drops the figure links of report.md files whose image is not beside them.
prune_links() {
  python - "$@" <<'PY'
import os
import re
import sys

LINK = re.compile(r"^!\[[^\]]*\]\(([^)]+)\)\s*$")
NOTE = "Figures not listed here were not copied to the repository: they are in the sweep's\ndirectory (`report.md` there links every one)."
for path in sys.argv[1:]:
    with open(path) as f:
        lines = f.read().split("\n")
    here = os.path.dirname(path)
    kept, dropped = [], 0
    for line in lines:
        match = LINK.match(line)
        if match and not os.path.exists(os.path.join(here, match.group(1))):
            dropped += 1
            if kept and kept[-1] == "":
                kept.pop()  # the blank line before the link goes with it
            continue
        kept.append(line)
    if dropped and NOTE not in "\n".join(kept):
        at = kept.index("## Figures") + 1 if "## Figures" in kept else len(kept)
        kept[at:at] = ["", NOTE]
    with open(path, "w") as f:
        f.write("\n".join(kept))
PY
}

if [ "${1:-}" = "--prune-only" ]; then
  shopt -s nullglob
  reports=("$DEST"/*/report.md)
  [ "${#reports[@]}" -eq 0 ] || prune_links "${reports[@]}"
  exit 0
fi
ROOT=${1:?usage: bash scripts/copy_reports.sh ROOT}
[ -d "$ROOT" ] || { echo "copy_reports.sh: $ROOT is not a directory" >&2; exit 2; }
for dir in "$ROOT"/*/; do
  name=$(basename "$dir")
  [ -f "$dir/report.md" ] || continue
  rm -rf "${DEST:?}/$name"
  mkdir -p "$DEST/$name"
  cp "$dir"/report.md "$dir"/report.json "$DEST/$name/"
  n=$(python -c "import json,sys; print(len(json.load(open(sys.argv[1]))['objectives']))" "$dir/report.json")
  if [ "$n" -gt 1 ]; then
    for png in "$dir"/curves.png "$dir"/retrieval_*.png "$dir"/subsets_*.png; do
      if [ -f "$png" ]; then cp "$png" "$DEST/$name/"; fi
    done
  fi
  prune_links "$DEST/$name/report.md"
done
