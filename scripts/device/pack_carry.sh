#!/usr/bin/env bash
# For this team's sessions on the lent H100 (not for users): fills the ignored folders that the
# device calls carry, each under the 64 MiB a call may take with the working tree.
#   .gpu-wheels/a, .gpu-wheels/b   fla-core + tilelang and their needs (../shared/gpu/wheels.sh)
#   .carry/tok                     the tokenizer built here, the local manifest (shard sha256s), these scripts
#   .carry/p01, .carry/p234, .carry/p5   the six corpus parts, to tokenise on the device
# Usage (repository root): bash scripts/device/pack_carry.sh [SHARED_DIR]
set -euo pipefail
SHARED=${1:-../shared}
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
grep -qx '.carry/' .gitignore || { echo "error: .carry/ must be git-ignored (see .gitignore)" >&2; exit 1; }
for f in data/tokenizers/corpus_sp1024.model data/datasets/corpus_sp1024/manifest.json; do
    [[ -f $f ]] || { echo "error: $f missing; build it first: python3 data/prepare_local.py --input $SHARED/corpus --output-root data --name corpus_sp1024 --vocab-size 1024 --val-docs 5500" >&2; exit 1; }
done
[[ -d .gpu-wheels/a && -d .gpu-wheels/b ]] || { mkdir -p .git/info; touch .git/info/exclude; bash "$SHARED/gpu/wheels.sh"; }
rm -rf .carry/tok .carry/p01 .carry/p234 .carry/p5
mkdir -p .carry/tok .carry/p01 .carry/p234 .carry/p5
cp data/tokenizers/corpus_sp1024.model .carry/tok/
cp data/datasets/corpus_sp1024/manifest.json .carry/tok/local_manifest.json
cp scripts/device/*.sh .carry/tok/
cp "$SHARED"/corpus/part-0000{0,1}.jsonl.xz .carry/p01/
cp "$SHARED"/corpus/part-0000{2,3,4}.jsonl.xz .carry/p234/
cp "$SHARED"/corpus/part-00005.jsonl.xz .carry/p5/
du -sb .gpu-wheels/a .gpu-wheels/b .carry/tok .carry/p01 .carry/p234 .carry/p5
