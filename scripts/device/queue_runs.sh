#!/usr/bin/env bash
# For this team's sessions on the lent H100: started once with setsid in the first device call, it
# waits for /tmp/data/ready (written by the call that builds the shards), then runs the launcher
# jobs one after another, so no GPU time is lost between runs. Logs: /tmp/logs/<RUN_ID>.txt.
# Usage: REPO=$PWD setsid nohup bash /tmp/q/queue_runs.sh "hybrid 32768 1337" "baseline 16384 42" \
#            > /tmp/logs/queue.out 2>&1 < /dev/null &
# Extra trainer settings per job: "baseline 32768 1337 SDPA_BACKEND=flash GRAD_ACCUM_STEPS=8".
set -uo pipefail
T=${DEVICE_TMP:-/tmp}  # where the data, logs and ready flag live on the device (tests point it elsewhere)
export PYTHONPATH=${PYTHONPATH:-/tmp/site}
# Compile caches under $T/cache (carried between machines by caches.sh save / restore).
source "$(dirname "${BASH_SOURCE[0]}")/caches.sh"
cd "${REPO:?set REPO to the repository root on the device}"
while [[ ! -f "$T/data/ready" ]]; do sleep 2; done
mkdir -p "$T/logs"
for job in "$@"; do
    read -r model seq_len seed extra <<< "$job"
    echo "$(date +%T) start $job"
    # shellcheck disable=SC2086  # extra holds KEY=VALUE words
    # RUN_ID unset: the launcher's default names the run by model, length, seed and time.
    env -u RUN_ID DATA_PATH="$T/data/datasets/corpus_sp1024" TOKENIZER_PATH="$T/data/tokenizers/corpus_sp1024.model" \
        LOG_DIR="$T/logs" SEED="$seed" ${extra:-} \
        bash scripts/launch_long_context.sh "$model" "$seq_len" > "$T/logs/stdout_${model}_${seq_len}_${seed}.out" 2>&1
    status=$?
    echo "$(date +%T) end $job rc=$status"
done
