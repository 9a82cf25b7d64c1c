"""Shared test set-up: the repository root on sys.path, and a tiny real-text dataset for the trainers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
for path in (REPO_ROOT, REPO_ROOT / "data", REPO_ROOT / "scripts"):  # the trainers, the data tools, the scripts
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

FIXTURE_DOCS = REPO_ROOT / "tests" / "fixtures" / "docs.jsonl"
VAL_DOCS = 4


def rel_err(a, b) -> float:
    """||a - b|| / ||b|| in fp64 (flash-linear-attention's tests' per-tensor measure)."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def write_shard(path: Path, tokens: list[int]) -> None:
    """A shard holding exactly these tokens (for tests that need a hand-made or broken one)."""
    from shard_format import shard_header

    with open(path, "wb") as f:
        f.write(shard_header(len(tokens)))
        f.write(np.asarray(tokens, dtype="<u2").tobytes())


@pytest.fixture(scope="session")
def fixture_docs() -> list[str]:
    return [json.loads(line)["text"] for line in FIXTURE_DOCS.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict:
    """Tokenizer (the competition's settings) and shards from real Wikipedia text, made by the project's
    own data tool: the first VAL_DOCS articles validate, the rest train, in shards small enough that the
    training stream crosses a file boundary."""
    import prepare_local

    root = tmp_path_factory.mktemp("tiny_data")
    status = prepare_local.main(["--input", str(FIXTURE_DOCS), "--output-root", str(root), "--name", "tiny",
                                 "--vocab-size", "1024", "--val-docs", str(VAL_DOCS), "--shard-tokens", "40000",
                                 "--workers", "1"])
    assert status == 0
    data_dir = root / "datasets" / "tiny"
    assert len(sorted(data_dir.glob("fineweb_train_*.bin"))) >= 2
    return {"data_path": data_dir, "tokenizer": root / "tokenizers" / "tiny.model", "root": root}


TINY_ENV = {
    "NUM_LAYERS": "3", "MODEL_DIM": "64", "NUM_HEADS": "4", "NUM_KV_HEADS": "2",
    "TRAIN_SEQ_LEN": "128", "TRAIN_BATCH_TOKENS": "2048", "GRAD_ACCUM_STEPS": "2",
    "ITERATIONS": "30", "WARMUP_STEPS": "2", "VAL_LOSS_EVERY": "15", "TRAIN_LOG_EVERY": "10",
    "VAL_BATCH_SIZE": "8192", "MAX_WALLCLOCK_SECONDS": "0", "MATRIX_LR": "0.05", "SCALAR_LR": "0.05",
    "TIED_EMBED_LR": "0.1", "GDN_LAYERS": "0,2",
}


def run_trainer(script: str, tiny_data: dict, workdir: Path, args: tuple[str, ...] = (),
                **overrides) -> subprocess.CompletedProcess:
    """Run a trainer as a user would (a fresh process, with command-line args if given), tiny shape, in workdir;
    overrides are environment settings (WORLD_SIZE among them, which the inherited environment loses)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(TINY_ENV)
    env.update({"DATA_PATH": str(tiny_data["data_path"]), "TOKENIZER_PATH": str(tiny_data["tokenizer"]),
                "OMP_NUM_THREADS": "2"})
    env.update({k: str(v) for k, v in overrides.items()})
    return subprocess.run([sys.executable, str(REPO_ROOT / script), *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=600)
