#!/usr/bin/env bash
# For this team's sessions on the lent H100: the speed issue's GPU checks, run in the background
# after the data is built (like queue_runs.sh), each step with its own time limit, results under
# $T/checks (copy them to $OUT with poll_logs.sh's pattern or by hand). Steps, in the order given:
#   fla_tests       pytest tests/test_gdn.py -k "fla or custom_op" (kernels, mixers and ops against references;
#                   autotunes for minutes)
#   muon_tests      pytest tests/test_muon.py -k cuda (MUON_COMPILE's Newton-Schulz on the GPU against fp64; ~1 min)
#   micro_steps     compare_losses.py: hybrid at 8k, 20 steps, 8 micro-steps vs the probe's choice
#   variants        compare_losses.py: hybrid at 8k, 20 steps, the grid's settings (FUSED_PROJECTIONS=0
#                   MUON_BATCHED=0 GDN_KEEP_STATES=0) vs the defaults (the three on since 2026-11-23), and the
#                   defaults with MUON_COMPILE=1 or GDN_SHIFT_CONV=1 (alone and with GDN_CUSTOM_OP=1: fullgraph
#                   without a conv kernel); 5 arms, ~9 min (each flag alone against the grid's settings:
#                   2026-11-23, logs_experiment/h100_checks)
#   published_kernels compare_losses.py: baseline, then hybrid, at 8k, 20 steps, the grid's kernels (cuDNN,
#                   2 micro-steps) vs the published kernels (FLASH, 8 micro-steps), on a step-based schedule, the
#                   speed flags off as in the grid: the same maths? (~12 min on a fresh machine, expected; the 32k
#                   pair with the published kernels trailed the grid's runs at equal steps by 0.006-0.041, the
#                   baseline by more; if a model's arms differ, split FLASH and the micro-steps next)
#   bench_fast      bench_step_time.py: baseline then hybrid at 8k/16k/32k, two arms in one process, blocks
#                   round-robin: the grid's settings (FUSED_PROJECTIONS=0 MUON_BATCHED=0, and the hybrid's
#                   GDN_KEEP_STATES=0) and the defaults (all on; the closing table of the speed issue;
#                   2026-11-23 measured the hybrid and the baseline at 32k, so the baseline's 8k and 16k come first)
#   bench_order     bench_step_time.py: the hybrid at 8k, bench_fast's two arms in the other order (the defaults
#                   built first): both earlier benches built the flags-on arm second and measured it 429 ms/step
#                   (0.858 of the flags-off arm), where the 600 s runs took 449 against 488 (0.920); does the order
#                   of the arms in one process move them? (~5 min)
#   custom_op_tests pytest tests/test_gdn.py -k custom_op (the GDN_CUSTOM_OP ops against fla's wrapper, opcheck)
#   bench_variants  bench_step_time.py: hybrid at 32k/16k (or VARIANT_CONTEXTS, e.g. 16384,8192), the default
#                   and three shape variants as arms of one process (power-of-two head dims in both mixers at
#                   the published count, attention head dim 64, 4 GDN heads of 64/128), each against the
#                   default block by block (~10 min per context at 32k, most of it compiling)
#   keep_states     GDN_KEEP_STATES (the backward reuses the forward's GDN states; a default since 2026-11-23
#                   session 12, when this step measured it: h100_checks/20261123g): its GPU tests (against fla's
#                   wrapper and the fp32 recurrence; on CPU they pass through Triton's interpreter), the first 20
#                   steps' losses at 8k with and without it, then bench_step_time.py, hybrid at 32k, the defaults
#                   with and without it as arms of one process (measured: 0.954 of the step)
#   two_gpus        on a 2-GPU machine: pytest tests/test_trainers.py -k two_gpus (tiny data, no compile), then
#                   compare_losses.py at 8k for each trainer: 1 process x 2 micro-steps against torchrun 2 ranks x 1
#   profile         bench_step_time.py: both models at 32k, 2 timed blocks, then 2 steps under torch.profiler
#                   (kernel time by category, top kernels, SM clock and power after the timed blocks; the
#                   timelines in traces/, for scripts/trace_gaps.py: where the GPU waits for the host)
# Usage: REPO=$PWD setsid nohup bash /tmp/q/gpu_checks.sh fla_tests micro_steps > /tmp/checks.out 2>&1 < /dev/null &
set -uo pipefail
T=${DEVICE_TMP:-/tmp}
export PYTHONPATH=${PYTHONPATH:-/tmp/site}
# Compile caches under $T/cache (carried between machines by caches.sh save / restore).
source "$(dirname "${BASH_SOURCE[0]}")/caches.sh"
cd "${REPO:?set REPO to the repository root on the device}"
while [[ ! -f "$T/data/ready" ]]; do sleep 2; done
out="$T/checks"
mkdir -p "$out"
# GRAD_ACCUM_STEPS=2: what the probe picks for the hybrid at 8k on an H100, given outright so each arm skips
# the probe's extra compile (arms that compare micro-step counts set their own).
data=(--data-path "$T/data/datasets/corpus_sp1024" --tokenizer-path "$T/data/tokenizers/corpus_sp1024.model"
      --log-dir "$out/logs" --steps 20 --env TRAIN_SEQ_LEN=8192 --env TRAIN_BATCH_TOKENS=393216
      --env GRAD_ACCUM_STEPS=2)
# The grid's trainers as an arm: the speed flags that became defaults after the grid, off (GDN_KEEP_STATES is the
# hybrid's; the baseline does not read it).
grid_arm=grid:FUSED_PROJECTIONS=0,MUON_BATCHED=0,GDN_KEEP_STATES=0
# compare NAME TIMEOUT TRAINER ARGS...: one compare_losses.py run on the data above into $out/NAME.{json,out}
compare() {
    local name=$1 limit=$2 trainer=$3
    shift 3
    timeout "$limit" python3 scripts/compare_losses.py --trainer "$trainer" "${data[@]}" "$@" \
        --out-json "$out/$name.json" > "$out/$name.out" 2>&1
}
# bench NAME TIMEOUT ARGS...: one bench_step_time.py run (3 warm-up steps, 3 blocks of 5 per arm) into
# $out/bench_NAME.{json,md,out}
bench() {
    local name=$1 limit=$2
    shift 2
    timeout "$limit" python3 scripts/bench_step_time.py --warmup 3 --steps 5 --repeats 3 "$@" \
        --out-json "$out/bench_$name.json" --out-md "$out/bench_$name.md" > "$out/bench_$name.out" 2>&1
}
for step in "$@"; do
    echo "$(date +%T) start $step"
    case "$step" in
        fla_tests) timeout 900 python3 -m pytest tests/test_gdn.py -k "fla or custom_op" -q -rs > "$out/fla_tests.out" 2>&1 ;;
        micro_steps) compare micro_steps 900 train_gpt_gdn.py --arm 8micro:GRAD_ACCUM_STEPS=8 --arm auto:GRAD_ACCUM_STEPS=0 ;;
        variants) compare variants 1200 train_gpt_gdn.py \
            --arm "$grid_arm" --arm default: --arm muon_compile:MUON_COMPILE=1 \
            --arm shift_conv:GDN_SHIFT_CONV=1 --arm op_shift:GDN_CUSTOM_OP=1,GDN_SHIFT_CONV=1 ;;
        published_kernels)
            for trainer in train_gpt train_gpt_gdn; do
                grid=(--env FUSED_PROJECTIONS=0 --env MUON_BATCHED=0)
                [[ $trainer == train_gpt_gdn ]] && grid+=(--env GDN_KEEP_STATES=0)  # the hybrid's own flag
                compare "published_kernels_$trainer" 900 "$trainer.py" "${grid[@]}" \
                    --arm grid: --arm published:SDPA_BACKEND=flash,GRAD_ACCUM_STEPS=8
            done ;;
        muon_tests) timeout 300 python3 -m pytest tests/test_muon.py -k cuda -q -rs > "$out/muon_tests.out" 2>&1 ;;
        custom_op_tests) timeout 600 python3 -m pytest tests/test_gdn.py -k custom_op -q -rs > "$out/custom_op_tests.out" 2>&1 ;;
        profile) timeout 900 python3 scripts/bench_step_time.py --contexts 32768 --warmup 3 --steps 5 --repeats 2 \
            --profile-steps 2 --profile-trace-dir "$out/traces" --out-json "$out/profile_32k.json" --out-md "$out/profile_32k.md" > "$out/profile_32k.out" 2>&1 ;;
        bench_fast) bench fast 2400 --models baseline,hybrid --contexts 8192,16384,32768 \
            --arm "$grid_arm" --arm default: ;;
        bench_order) bench order 900 --models hybrid --contexts 8192 \
            --arm default: --arm "$grid_arm" ;;
        bench_variants)
            # Shape variants from existing knobs (parameters: default 17,424,332): 4 GDN heads of 64/128 (15,383,496);
            # attention head dim 64 by 7 query heads and 1 KV head, GDN 7 x 48/96 (17,131,408); head dim 64 in both
            # mixers at the published count, 7/7 attention heads and 5 GDN heads of 64/128 (17,403,988).
            # VARIANT_CONTEXTS: which contexts (32k first: measured 2026-11-23 session 10, 16k cut off).
            bench variants 1800 --models hybrid --contexts "${VARIANT_CONTEXTS:-32768,16384}" --arm default: \
                --arm pow2:NUM_HEADS=7,NUM_KV_HEADS=7,GDN_HEADS=5,GDN_KEY_DIM=64 \
                --arm attn64:NUM_HEADS=7,NUM_KV_HEADS=1 --arm heads4:GDN_HEADS=4,GDN_KEY_DIM=64 ;;
        keep_states)
            timeout 900 python3 -m pytest tests/test_gdn.py -k keep_states -q -rs > "$out/keep_states_tests.out" 2>&1
            compare keep_states 900 train_gpt_gdn.py --arm recompute:GDN_KEEP_STATES=0 --arm default:
            bench keep_states 900 --models hybrid --contexts 32768 --arm recompute:GDN_KEEP_STATES=0 --arm default: ;;
        two_gpus)
            timeout 600 python3 -m pytest tests/test_trainers.py -k two_gpus -q -rs > "$out/two_gpus_tests.out" 2>&1
            for trainer in train_gpt_gdn train_gpt; do
                compare "two_gpus_$trainer" 900 "$trainer.py" --arm one:GRAD_ACCUM_STEPS=2 \
                    --arm two:NPROC=2,GRAD_ACCUM_STEPS=1
            done ;;
        *) echo "unknown step $step (fla_tests, custom_op_tests, muon_tests, micro_steps, variants, published_kernels, bench_fast, bench_order, bench_variants, keep_states, two_gpus, profile)"; continue ;;
    esac
    status=$?
    echo "$(date +%T) end $step rc=$status"
done
