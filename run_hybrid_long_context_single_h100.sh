#!/usr/bin/env bash
# Long-context study, Gated-DeltaNet hybrid (train_gpt_gdn.py), one context length on one H100:
#   ./run_hybrid_long_context_single_h100.sh {4096|8192|16384|32768|65536}   (log in LOG_DIR, default logs/)
# The settings, overrides and checks are in scripts/launch_long_context.sh, shared with the other model.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/scripts/launch_long_context.sh" hybrid "$@"
