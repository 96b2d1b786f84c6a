#!/bin/bash
# Whole-process `mmckd extract --workers 2` of this tree against an earlier commit, interleaved, same machine.
#
#   bash benchmarks/extract_before_after.sh REV [ROUNDS]      # e.g. 9fbd193 5
#
# The earlier commit is checked out into a temporary git worktree and run with this venv (PYTHONPATH puts its
# `mmckd` first, for the driver and its spawned workers alike). Clips: the real clips of ../shared/data, each
# six times (24 clips, 151.8 s of video), with a one-line sidecar transcript, as in extract_throughput.py.
# Prints one line per run (wall, user, sys seconds) and the median wall time of each side.
set -euo pipefail
REV=${1:?usage: extract_before_after.sh REV [ROUNDS]}
ROUNDS=${2:-5}
REPO=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${MMCKD_SHARED:-$REPO/../shared/data}
TMP=$(mktemp -d /tmp/mmckd-before-after.XXXXXX)
trap 'git -C "$REPO" worktree remove --force "$TMP/before" >/dev/null 2>&1 || true; rm -rf "$TMP"' EXIT
git -C "$REPO" worktree add --detach -f "$TMP/before" "$REV" >/dev/null 2>&1
mkdir "$TMP/clips"
for k in 0 1 2 3 4 5; do
  for f in "$SHARED"/videos/talk1.mp4 "$SHARED"/videos/talk2.mp4 "$SHARED"/videos/talk4.mp4 "$SHARED"/mosi/Oz06ZWiO20M_6.mp4; do
    b=$(basename "$f" .mp4)
    ln -s "$f" "$TMP/clips/${b}_$k.mp4"
    echo "I really enjoyed this movie, the acting was great." > "$TMP/clips/${b}_$k.txt"
  done
done
for r in $(seq 1 "$ROUNDS"); do
  for side in before now; do
    src=$REPO; [ "$side" = before ] && src=$TMP/before
    rm -f "$TMP/out.h5"
    /usr/bin/time -f "$side %e %U %S" -a -o "$TMP/times" env PYTHONPATH="$src" HF_HUB_OFFLINE=1 \
      "$REPO/.venv/bin/mmckd" extract "$TMP/clips" -o "$TMP/out.h5" --workers 2 --no-progress >/dev/null 2>&1
    echo "round $r $(tail -1 "$TMP/times" | awk '{printf "%s: wall %s s, user %s s, sys %s s", $1, $2, $3, $4}')"
  done
done
for side in before now; do
  awk -v s="$side" '$1 == s {print $2}' "$TMP/times" | sort -n | awk -v s="$side" -v rev="$REV" \
    '{a[NR]=$1} END {m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2; printf "%s%s: median wall %.2f s over %d runs\n", s, (s == "before" ? " (" rev ")" : ""), m, NR}'
done
