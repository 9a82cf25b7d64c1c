#!/usr/bin/env bash
# Long-context study, hybrid: contexts 8192, 16384 and 32768 in turn on one H100, each through
# run_hybrid_long_context_single_h100.sh (same environment overrides). Stops at the first failed run.
# A RUN_ID set by you gets the context appended (RUN_ID_8192, ...) so each run has its own log.
set -euo pipefail
if [[ $# -ne 0 ]]; then
    echo "usage: $(basename "$0")   (no arguments; runs contexts 8192 16384 32768 in turn)" >&2
    exit 2
fi
cd "$(dirname "${BASH_SOURCE[0]}")"
for seq_len in 8192 16384 32768; do
    if [[ -n "${RUN_ID:-}" ]]; then
        RUN_ID="${RUN_ID}_${seq_len}" ./run_hybrid_long_context_single_h100.sh "$seq_len"
    else
        ./run_hybrid_long_context_single_h100.sh "$seq_len"
    fi
done
