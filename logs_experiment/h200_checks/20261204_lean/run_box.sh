#!/usr/bin/env bash
# On the GPU box, started with setsid once the code is in /tmp/g: waits for the checked shards, then
# (1) the first 20 losses at 8k of the trainers before and after the slim-down, same data and seed, one
#     process each (eager: COMPILE=0, so no compile warm-up), through compare_losses.py;
# (2) one 600 s launcher run. Everything it writes is under /tmp/logs and /tmp/checks.
set -uo pipefail
export PYTHONPATH=/tmp/site
source /tmp/q/caches.sh
D=/tmp/data/datasets/corpus_sp1024; TOK=/tmp/data/tokenizers/corpus_sp1024.model
mkdir -p /tmp/logs /tmp/checks/logs
while [[ ! -f /tmp/data/ready ]]; do sleep 2; done
echo "$(date +%T) data ready"
common=(--steps 20 --data-path "$D" --tokenizer-path "$TOK" --log-dir /tmp/checks/logs --timeout 900
  --env TRAIN_SEQ_LEN=8192 --env TRAIN_BATCH_TOKENS=393216 --env GRAD_ACCUM_STEPS=2 --env COMPILE=0
  --env WARMUP_STEPS=0 --env SEED=1337 --env TIED_EMBED_LR=0.030 --env MATRIX_LR=0.020 --env SCALAR_LR=0.020
  --env MUON_MOMENTUM=0.99 --env MUON_MOMENTUM_WARMUP_START=0.92 --env MUON_MOMENTUM_WARMUP_FRAC=0.18
  --env WARMDOWN_FRAC=0.36)
cd /tmp/g
for model in train_gpt_gdn train_gpt; do
  for arm in old repo; do
    echo "$(date +%T) compare $model $arm"
    python3 scripts/compare_losses.py --trainer "/tmp/g/$arm/$model.py" --arm "$arm:" "${common[@]}" \
      --out-json "/tmp/checks/${model}_$arm.json" > "/tmp/checks/logs/${model}_$arm.out" 2>&1
    echo "$(date +%T) rc=$?"; tail -3 "/tmp/checks/logs/${model}_$arm.out"
  done
done
python3 - <<'PY' > /tmp/checks/compare_summary.txt 2>&1
import json
for model in ("train_gpt_gdn", "train_gpt"):
    old, new = (json.load(open(f"/tmp/checks/{model}_{arm}.json"))["arms"][0] for arm in ("old", "repo"))
    diffs = [abs(a - b) for a, b in zip(old["losses"], new["losses"])]
    print(model, "steps", len(diffs), "max_abs_diff %.4f" % max(diffs), "mean_abs_diff %.5f" % (sum(diffs) / len(diffs)))
    print("  old", " ".join("%.4f" % x for x in old["losses"]))
    print("  new", " ".join("%.4f" % x for x in new["losses"]))
    print("  ms/step old", old.get("ms_per_step"), "new", new.get("ms_per_step"))
PY
cat /tmp/checks/compare_summary.txt
for job in "$@"; do
  read -r model seq_len seed <<< "$job"
  run_id=${model}_${seq_len}_seed${seed}_$(date +%Y%m%d_%H%M%S)
  echo "$(date +%T) start $run_id"
  nvidia-smi --query-gpu=timestamp,utilization.gpu,clocks.sm,power.draw,clocks_throttle_reasons.active \
    --format=csv,nounits -l 5 -i 0 > "/tmp/logs/$run_id.gpu.csv" 2>&1 &
  sampler=$!
  (cd /tmp/g/repo && DATA_PATH="$D" TOKENIZER_PATH="$TOK" LOG_DIR=/tmp/logs SEED="$seed" RUN_ID="$run_id" \
    bash "run_${model}_long_context_single_h100.sh" "$seq_len" > "/tmp/checks/logs/$run_id.out" 2>&1)
  echo "$(date +%T) end $run_id rc=$?"
  kill "$sampler"
done
