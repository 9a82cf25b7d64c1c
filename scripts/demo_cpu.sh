#!/usr/bin/env bash
# A tiny CPU demo of both trainers: build a 1024-token tokenizer and shards from the 33 Wikipedia
# articles in tests/fixtures, then train each model for 40 steps at a 128-token context.
# Same code path as a real run; only the shapes are small. About a minute on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 data/prepare_local.py --input tests/fixtures/docs.jsonl --output-root data --name demo_sp1024 \
    --vocab-size 1024 --val-docs 4

export DATA_PATH=data/datasets/demo_sp1024 TOKENIZER_PATH=data/tokenizers/demo_sp1024.model
# Tiny shapes so it runs in seconds; the launchers hold the real settings.
export NUM_LAYERS=3 MODEL_DIM=64 NUM_HEADS=4 NUM_KV_HEADS=2 GDN_LAYERS=0,2
export TRAIN_SEQ_LEN=128 TRAIN_BATCH_TOKENS=2048 GRAD_ACCUM_STEPS=2 VAL_BATCH_SIZE=8192
export ITERATIONS=40 WARMUP_STEPS=2 VAL_LOSS_EVERY=20 TRAIN_LOG_EVERY=10 MAX_WALLCLOCK_SECONDS=0
stamp=$(date +%Y%m%d_%H%M%S)
RUN_ID=demo_baseline_$stamp python3 train_gpt.py
RUN_ID=demo_hybrid_$stamp python3 train_gpt_gdn.py
echo "logs: logs/demo_baseline_$stamp.txt logs/demo_hybrid_$stamp.txt"
