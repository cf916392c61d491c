#!/bin/bash
# Copies each sweep's report from ROOT to docs/results/<sweep>/: report.md and report.json
# always, the figures (training curves, retrieval bars, subset heatmaps) only for sweeps
# that compare several objectives.
#   bash scripts/copy_reports.sh /tmp/res
set -euo pipefail
ROOT=${1:?usage: bash scripts/copy_reports.sh ROOT}
DEST=$(dirname "$0")/../docs/results
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
done
