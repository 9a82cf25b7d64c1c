#!/usr/bin/env bash
# For this team's sessions on the lent H100: waits up to MAXSEC (or until WANT runs have written
# their final round-trip line), then copies the logs (and gpu_checks.sh's JSON results, if any) into $OUT
# and prints where each run is.
# The machine is given back 30 s after a call ends: call this again at once, every time.
# Usage: bash /tmp/q/poll_logs.sh MAXSEC [WANT]
set -uo pipefail
T=${DEVICE_TMP:-/tmp}  # where the data, logs and ready flag live on the device (tests point it elsewhere)
end=$((SECONDS + $1))
want=${2:-0}
while (( SECONDS < end )); do
    done_runs=$(cat "$T"/logs/*.txt 2> /dev/null | grep -c '^final_int8_zlib_roundtrip_exact')
    (( want > 0 && done_runs >= want )) && break
    sleep 10
done
cp "$T"/logs/*.txt $T/logs/*.out "$OUT"/ 2> /dev/null
# gpu_checks.sh results chained after a run: each step's JSON (a bench rewrites its JSON after every
# configuration, so a machine given back mid-step still returns what was measured) and the steps' log.
# Only these: a call returns at most 8 files.
if [[ -d "$T/checks" ]]; then
    mkdir -p "$OUT/checks"
    cp "$T"/checks/*.json "$OUT/checks/" 2> /dev/null
    cp "$T/checks.out" "$OUT/checks/" 2> /dev/null
    tail -3 "$T/checks.out" 2> /dev/null
fi
cat $T/logs/queue.out 2> /dev/null
for f in $T/logs/*.txt; do
    echo "== $f"
    grep -E '^(step|warmup_time|grad_accum_probe|stopping|peak|final|Total)' "$f" | tail -4
    # Unfinished: how long it still needs, so the last call before the 30-minute mark can outlast it.
    if ! grep -q '^final_int8_zlib_roundtrip_exact' "$f"; then
        budget=$(sed -n 's/^config max_wallclock_seconds:\([0-9]*\).*/\1/p' "$f" | head -1)
        trained=$(sed -n 's/^step:[0-9]*\/[0-9]* .*train_time:\([0-9]*\)ms.*/\1/p' "$f" | tail -1)
        if [[ -n "$budget" && -n "$trained" ]]; then
            echo "left: ~$(( budget - trained / 1000 )) s of training, then the final validation and round trip (~1 min)"
        else
            echo "left: not training yet (warm-up): the whole budget, then ~1 min"
        fi
    fi
done
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader
