#!/usr/bin/env bash
# Long-context study, Gated-DeltaNet hybrid: the study's contexts 8192, 16384 and 32768 in turn on one H100
# (see scripts/launch_long_context_all.sh, shared with the other model).
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/scripts/launch_long_context_all.sh" hybrid "$@"
