#!/usr/bin/env bash
# The "all contexts" launcher, shared by run_{baseline,hybrid}_long_context_all_single_h100.sh:
#   scripts/launch_long_context_all.sh {baseline|hybrid}
# Contexts 8192, 16384 and 32768 in turn, each through run_<model>_long_context_single_h100.sh with the
# same environment overrides; stops at the first failed run. A RUN_ID set by you gets the context
# appended (RUN_ID_8192, ...) so each run has its own log. Logs go to LOG_DIR (default logs/).
set -euo pipefail
MODEL=${1:-}
[[ "$MODEL" == baseline || "$MODEL" == hybrid ]] || { echo "usage: $(basename "$0") {baseline|hybrid}" >&2; exit 2; }
shift
if [[ $# -ne 0 ]]; then
    echo "usage: run_${MODEL}_long_context_all_single_h100.sh   (no arguments; runs contexts 8192 16384 32768 in turn)" >&2
    exit 2
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for seq_len in 8192 16384 32768; do
    # Empty when you set none: the single-length launcher then picks its default RUN_ID.
    RUN_ID="${RUN_ID:+${RUN_ID}_${seq_len}}" "./run_${MODEL}_long_context_single_h100.sh" "$seq_len"
done
