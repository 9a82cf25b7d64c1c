#!/usr/bin/env bash
# The long-context study's launcher, shared by run_{baseline,hybrid}_long_context_single_h100.sh:
#
#   scripts/launch_long_context.sh {baseline|hybrid} {4096|8192|16384|32768|65536}
#
# Overridable from the environment: RUN_ID, SEED, DATA_PATH, TOKENIZER_PATH, MAX_WALLCLOCK_SECONDS,
# NPROC, LOG_DIR, PUBLISHED_SCHEDULE. The published optimizer settings below are fixed. Any other
# variable you set (e.g. SDPA_BACKEND=flash GRAD_ACCUM_STEPS=8 for the published kernel settings)
# reaches the trainer untouched.
#
# The log is LOG_DIR/RUN_ID.txt (the trainer refuses a RUN_ID already used). LOG_DIR defaults to logs/:
# logs_experiment/ holds the runs the published results are built from, so the study's own runs set
# LOG_DIR=logs_experiment explicitly and nobody else's land there by accident.
#
# Before torchrun starts, `python3 TRAINER --check` validates the settings, data, tokenizer and paths
# with the same environment: a mistake costs one `error:` line, not a torchrun traceback. While the
# trainer runs, nvidia-smi (when installed) samples the first visible GPU every 5 s into
# LOG_DIR/RUN_ID.gpu.csv (time, utilisation, SM clock, power, throttle reasons). The exit status is
# torchrun's.
set -euo pipefail

CONTEXTS="4096|8192|16384|32768|65536"
MODEL=${1:-}
case "$MODEL" in
    baseline) TRAINER=train_gpt.py ;;
    hybrid) TRAINER=train_gpt_gdn.py ;;
    *) echo "usage: $(basename "$0") {baseline|hybrid} {$CONTEXTS}" >&2; exit 2 ;;
esac
shift

usage() {
    echo "usage: run_${MODEL}_long_context_single_h100.sh {$CONTEXTS}" >&2
    echo "  runs $TRAINER at TRAIN_SEQ_LEN = the given context length (valid: ${CONTEXTS//|/, })" >&2
    exit 2
}
[[ $# -eq 1 ]] || usage
SEQ_LEN=$1
case "$SEQ_LEN" in
    4096 | 8192 | 16384) BATCH_TOKENS=393216 ;;
    32768 | 65536) BATCH_TOKENS=524288 ;;  # published: larger batch at 32k (16 sequences per step, not 12)
    *) usage ;;
esac

PUBLISHED_SCHEDULE=${PUBLISHED_SCHEDULE:-0}
[[ "$PUBLISHED_SCHEDULE" == 0 || "$PUBLISHED_SCHEDULE" == 1 ]] || {
    echo "error: PUBLISHED_SCHEDULE=$PUBLISHED_SCHEDULE: expected 0 (wall-clock fractions) or 1 (the published step counts)" >&2
    exit 2
}
NPROC=${NPROC:-1}
[[ "$NPROC" =~ ^[1-9][0-9]*$ ]] || { echo "error: NPROC=$NPROC: expected the number of GPUs, e.g. 1" >&2; exit 2; }

# The published launchers' hand-set step counts "momentum-warm-up warm-down" per model and context
# (PUBLISHED_SCHEDULE=1 only); the published study set them for these three contexts and no others.
published_steps() {
    case "$MODEL:$SEQ_LEN" in
        baseline:8192) echo "190 381" ;;
        baseline:16384) echo "118 236" ;;
        baseline:32768) echo "50 100" ;;
        hybrid:8192) echo "160 320" ;;
        hybrid:16384) echo "104 208" ;;
        hybrid:32768) echo "79 158" ;;
        *) return 1 ;;
    esac
}
if [[ "$PUBLISHED_SCHEDULE" == 1 ]] && ! published_steps >/dev/null; then
    echo "error: PUBLISHED_SCHEDULE=1 at context $SEQ_LEN: the published study set step counts only for 8192, 16384 and 32768; use one of those or PUBLISHED_SCHEDULE=0" >&2
    exit 2
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Published settings of the long-context study, fixed here (the trainer's defaults are for 1k context).
export TIED_EMBED_LR=0.030               # published; default 0.05 is tuned for short context
export MATRIX_LR=0.020                   # published; default 0.04 is tuned for short context
export SCALAR_LR=0.020                   # published; default 0.04 is tuned for short context
export MUON_MOMENTUM=0.99                # published; default 0.95
export MUON_MOMENTUM_WARMUP_START=0.92   # published; default 0.85
export WARMUP_STEPS=20                   # published compile warm-up steps (undone before the clock starts)
export VAL_LOSS_EVERY=50                 # published; gives the val_bpb-vs-step curve (default 1000 = ~never at these step counts)
export TRAIN_LOG_EVERY=10                # published; step_avg (ms/step) every 10 steps
export TRAIN_SEQ_LEN=$SEQ_LEN            # the context length under study
export TRAIN_BATCH_TOKENS=$BATCH_TOKENS  # published: 393216 up to 16k, 524288 from 32k (see the case above)
export MUON_MOMENTUM_WARMUP_FRAC=0.18    # the published step counts were ~0.18 of the expected steps; here a wall-clock fraction
export WARMDOWN_FRAC=0.36                # the published step counts were ~0.36 of the expected steps; here a wall-clock fraction (linear LR warm-down)
if [[ "$PUBLISHED_SCHEDULE" == 1 ]]; then
    read -r warmup_steps warmdown_steps < <(published_steps)
    export MUON_MOMENTUM_WARMUP_STEPS=$warmup_steps WARMDOWN_ITERS=$warmdown_steps
    export MUON_MOMENTUM_WARMUP_FRAC=0 WARMDOWN_FRAC=0  # 0: the trainer uses the step counts instead
fi

# Run identity, data and budget (overridable).
export SEED=${SEED:-1337}
export RUN_ID=${RUN_ID:-${MODEL}_${SEQ_LEN}_seed${SEED}_$(date +%Y%m%d_%H%M%S)}
export DATA_PATH=${DATA_PATH:-./data/datasets/fineweb10B_sp1024}
export TOKENIZER_PATH=${TOKENIZER_PATH:-./data/tokenizers/fineweb_1024_bpe.model}
export MAX_WALLCLOCK_SECONDS=${MAX_WALLCLOCK_SECONDS:-600}
export LOG_DIR=${LOG_DIR:-logs}

echo "$MODEL seq_len=$SEQ_LEN batch_tokens=$BATCH_TOKENS seed=$SEED run_id=$RUN_ID log=$LOG_DIR/$RUN_ID.txt" >&2
status=0
WORLD_SIZE=$NPROC python3 "$TRAINER" --check >&2 || status=$?
[[ $status -eq 0 ]] || exit "$status"  # its one error line is already printed

sampler=""
stop_sampler() { if [[ -n "$sampler" ]]; then kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true; fi; }
trap stop_sampler EXIT
if command -v nvidia-smi >/dev/null; then
    mkdir -p "$LOG_DIR"
    gpu=${CUDA_VISIBLE_DEVICES:-0}
    nvidia-smi --query-gpu=timestamp,utilization.gpu,clocks.sm,power.draw,clocks_throttle_reasons.active \
        --format=csv,nounits -l 5 -i "${gpu%%,*}" >"$LOG_DIR/$RUN_ID.gpu.csv" 2>/dev/null &
    sampler=$!
fi
# torchrun runs as a child (not exec'd) so that the sampler can be stopped after it; a TERM, INT or HUP
# sent to this script is passed on to torchrun as TERM (torchrun stops its workers on TERM; a background
# child of a script ignores INT), and the script waits for it to finish.
torchrun --standalone --nproc_per_node="$NPROC" "$TRAINER" &
trainer=$!
trap 'kill -TERM "$trainer" 2>/dev/null || true' TERM INT HUP
while kill -0 "$trainer" 2>/dev/null; do wait "$trainer" || true; done
wait "$trainer" || status=$?
exit "$status"
