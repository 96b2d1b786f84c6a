#!/usr/bin/env bash
# Reproduce MM-CKD's result tables on an MMSA feature pickle (CMU-MOSI or CMU-MOSEI):
# import -> fit MM-CKD with the ablations -> Markdown tables.
#
#   benchmarks/reproduce_paper.sh MOSI/unaligned_50.pkl [OUT]      (OUT defaults to runs/paper-<name>)
#
# Writes OUT/features.h5 (the import), OUT/run/ (the fit run: model, metrics.json, report.md, plots) and
# OUT/tables.md: the seven-condition table and the missing-rate table (test), with the ablations
# (w/o MVSC, offline teacher, dropout baseline) and the imputation baselines beside MM-CKD, and the
# accuracy-against-cost table. Training runs on the best device
# (--device auto). Rerunning continues an interrupted fit (--resume).
#
# Settings: the `paper` preset (mmckd/model/presets/paper.json: 40 epochs, patience 10, seeds 1,2,3, the ablations
# and imputation baselines compared). The environment overrides it: MMCKD_REPRO_EPOCHS,
# MMCKD_REPRO_PATIENCE, MMCKD_REPRO_SEEDS, MMCKD_REPRO_COMPARE, MMCKD_REPRO_ARGS (further `mmckd fit` options,
# e.g. "--d-model 128"), MMCKD_PYTHON (interpreter).
# A quick dry run: MMCKD_REPRO_EPOCHS=1 MMCKD_REPRO_SEEDS=1 benchmarks/reproduce_paper.sh data.pkl /tmp/out
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 DATA.pkl [OUT]" >&2
    exit 2
fi
PKL=$1
NAME=$(basename "${PKL%.pkl}")
OUT=${2:-runs/paper-$(basename "$(dirname "$PKL")")-$NAME}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
if [[ -n "${MMCKD_PYTHON:-}" ]]; then
    PY=$MMCKD_PYTHON
elif [[ -x "$ROOT/.venv/bin/python" ]]; then
    PY=$ROOT/.venv/bin/python
else
    PY=python3
fi
SETTINGS=(--preset paper)
[[ -n "${MMCKD_REPRO_EPOCHS:-}" ]] && SETTINGS+=(--epochs "$MMCKD_REPRO_EPOCHS")
[[ -n "${MMCKD_REPRO_PATIENCE:-}" ]] && SETTINGS+=(--patience "$MMCKD_REPRO_PATIENCE")
[[ -n "${MMCKD_REPRO_SEEDS:-}" ]] && SETTINGS+=(--seeds "$MMCKD_REPRO_SEEDS")
[[ -n "${MMCKD_REPRO_COMPARE:-}" ]] && SETTINGS+=(--compare "$MMCKD_REPRO_COMPARE")
# shellcheck disable=SC2206  # word splitting of extra options is intended
EXTRA=(${MMCKD_REPRO_ARGS:-})

if [[ ! -f "$PKL" ]]; then
    echo "$0: error: $PKL: no such file" >&2
    exit 2
fi
mkdir -p "$OUT"
echo "== import $PKL -> $OUT/features.h5" >&2
"$PY" -m mmckd import mmsa "$PKL" -o "$OUT/features.h5" --overwrite
"$PY" -m mmckd info "$OUT/features.h5" > "$OUT/features.txt"

RESUME=()
if [[ -f "$OUT/run/run.json" ]]; then
    RESUME=(--resume)
fi
echo "== fit (${SETTINGS[*]} ${EXTRA[*]}) -> $OUT/run" >&2
"$PY" -m mmckd fit "$OUT/features.h5" -o "$OUT/run" --device auto --no-progress \
    "${SETTINGS[@]}" "${RESUME[@]}" "${EXTRA[@]}"

"$PY" "$HERE/paper_tables.py" "$OUT/run/metrics.json" --title "MM-CKD on $NAME ($(basename "$(dirname "$PKL")"))" \
    > "$OUT/tables.md.tmp"
mv "$OUT/tables.md.tmp" "$OUT/tables.md"
echo "$OUT/tables.md"
