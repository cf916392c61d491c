#!/bin/bash
# Copies each sweep's report (and its main figures) from ROOT to docs/results/<sweep>/.
#   bash scripts/copy_reports.sh /tmp/res
set -euo pipefail
ROOT=${1:?usage: bash scripts/copy_reports.sh ROOT}
DEST=$(dirname "$0")/../docs/results
for dir in "$ROOT"/*/; do
  name=$(basename "$dir")
  [ -f "$dir/report.md" ] || continue
  mkdir -p "$DEST/$name"
  cp "$dir"/report.md "$dir"/report.json "$DEST/$name/"
  for png in "$dir"/curves.png "$dir"/retrieval_*.png "$dir"/subsets_*.png; do
    [ -f "$png" ] && cp "$png" "$DEST/$name/"
  done
done
