"""Shared test set-up: the repository root on sys.path, and a tiny real-text dataset for the trainers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

FIXTURE_DOCS = REPO_ROOT / "tests" / "fixtures" / "docs.jsonl"
VAL_DOCS = 4


def write_shard(path: Path, tokens: list[int]) -> None:
    header = np.zeros(256, dtype="<i4")
    header[:3] = (20240520, 1, len(tokens))
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype="<u2").tobytes())


@pytest.fixture(scope="session")
def fixture_docs() -> list[str]:
    return [json.loads(line)["text"] for line in FIXTURE_DOCS.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, fixture_docs) -> dict:
    """A 1024-token SentencePiece BPE (the competition's settings) and shards, from real Wikipedia text."""
    import sentencepiece as spm

    root = tmp_path_factory.mktemp("tiny_data")
    train_text = root / "train.txt"
    train_text.write_text("\n".join(fixture_docs[VAL_DOCS:]), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(train_text), model_prefix=str(root / "tok"), model_type="bpe", vocab_size=1024,
        byte_fallback=True, split_digits=True, normalization_rule_name="nmt_nfkc", add_dummy_prefix=False,
        pad_id=0, bos_id=1, eos_id=2, unk_id=3, character_coverage=0.999, num_threads=1, minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=str(root / "tok.model"))
    data_dir = root / "shards"
    data_dir.mkdir()

    def encode(docs):
        return [t for doc in docs for t in [sp.bos_id()] + sp.encode(doc)]

    write_shard(data_dir / "fineweb_val_000000.bin", encode(fixture_docs[:VAL_DOCS]))
    train_docs = fixture_docs[VAL_DOCS:]
    half = len(train_docs) // 2  # two shards, so the stream crosses a file boundary
    write_shard(data_dir / "fineweb_train_000000.bin", encode(train_docs[:half]))
    write_shard(data_dir / "fineweb_train_000001.bin", encode(train_docs[half:]))
    return {"data_path": data_dir, "tokenizer": root / "tok.model", "root": root}


TINY_ENV = {
    "NUM_LAYERS": "3", "MODEL_DIM": "64", "NUM_HEADS": "4", "NUM_KV_HEADS": "2",
    "TRAIN_SEQ_LEN": "128", "TRAIN_BATCH_TOKENS": "2048", "GRAD_ACCUM_STEPS": "2",
    "ITERATIONS": "30", "WARMUP_STEPS": "2", "VAL_LOSS_EVERY": "15", "TRAIN_LOG_EVERY": "10",
    "VAL_BATCH_SIZE": "8192", "MAX_WALLCLOCK_SECONDS": "0", "MATRIX_LR": "0.05", "SCALAR_LR": "0.05",
    "TIED_EMBED_LR": "0.1", "GDN_LAYERS": "0,2",
}


def run_trainer(script: str, tiny_data: dict, workdir: Path, **overrides) -> subprocess.CompletedProcess:
    """Run a trainer as a user would (a fresh process), tiny shape, in workdir."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(TINY_ENV)
    env.update({"DATA_PATH": str(tiny_data["data_path"]), "TOKENIZER_PATH": str(tiny_data["tokenizer"]),
                "OMP_NUM_THREADS": "2"})
    env.update({k: str(v) for k, v in overrides.items()})
    return subprocess.run([sys.executable, str(REPO_ROOT / script)], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=600)
