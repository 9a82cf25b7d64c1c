#!/usr/bin/env bash
# For this team's sessions on the lent H100: carry the compile caches from one machine to the next, so a
# run of a shape already compiled skips most of its warm-up (inductor's compiles, fla's Triton autotuning,
# TileLang's kernels: minutes per shape). queue_runs.sh and gpu_checks.sh source this file to point
# inductor, Triton (where fla 0.6.0 also keeps its autotune results, FLA_CACHE_RESULTS=1 by default) and
# TileLang at $T/cache. `save DIR` packs that folder into DIR/caches.tgz.NN parts of at most 15 MiB (the
# device tool returns files of up to 16 MiB); `restore DIR` unpacks parts carried back in.
# Usage: bash caches.sh save OUTDIR | bash caches.sh restore INDIR
T=${DEVICE_TMP:-/tmp}
export TORCHINDUCTOR_CACHE_DIR="$T/cache/inductor" TRITON_CACHE_DIR="$T/cache/triton" TILELANG_CACHE_DIR="$T/cache/tilelang"
[[ "${BASH_SOURCE[0]}" != "$0" ]] && return 0  # sourced: the exports are all
set -euo pipefail
case "${1:-}" in
    save)
        mkdir -p "${2:?save needs an output folder}" "$T/cache"
        tar -C "$T" -czf - cache | split -b 15M -d -a 2 - "$2/caches.tgz."
        ls -l "$2"/caches.tgz.* ;;
    restore)
        parts=("${2:?restore needs the folder of the parts}"/caches.tgz.*)
        [[ -f "${parts[0]}" ]] || { echo "no caches.tgz.* parts in $2"; exit 1; }
        mkdir -p "$T"
        cat "${parts[@]}" | tar -C "$T" -xzf -
        du -sh "$T/cache" ;;
    *) echo "usage: caches.sh save OUTDIR | caches.sh restore INDIR"; exit 2 ;;
esac
