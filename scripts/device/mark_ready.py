#!/usr/bin/env python3
"""For this team's sessions on the lent H100: after the device has tokenised the corpus, check that its
shards are the ones built here (each file's sha256 against the manifest carried from this machine) and
only then create the flag file the queued runs wait for. Exit status 1, and no flag, on any difference.

Usage: python3 mark_ready.py BUILT_DATASET_DIR LOCAL_MANIFEST.json READY_FLAG
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path


def expected_shards(manifest: dict) -> dict[str, str]:
    """file name -> sha256 of every shard the manifest lists (all splits)."""
    return {shard["file"]: shard["sha256"] for split in manifest["splits"].values() for shard in split["shards"]}


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    dataset, local_manifest, flag = Path(argv[0]), Path(argv[1]), Path(argv[2])
    want = expected_shards(json.loads(local_manifest.read_text(encoding="utf-8")))
    have = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(dataset.glob("*.bin"))}
    problems = [f"{name}: missing" for name in sorted(want.keys() - have.keys())]
    problems += [f"{name}: not in the local manifest" for name in sorted(have.keys() - want.keys())]
    problems += [f"{name}: sha256 {have[name][:12]}... != {want[name][:12]}..."
                 for name in sorted(want.keys() & have.keys()) if have[name] != want[name]]
    if problems:
        print(f"NOT READY: the shards in {dataset} differ from {local_manifest}:", *problems, sep="\n  ")
        return 1
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.touch()
    print(f"READY: {len(have)} shards match {local_manifest}; created {flag}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
