"""Tests of the data pipeline: data/prepare_local.py, data/cached_challenge_fineweb.py, data/shard_format.py.

CPU only and fast. Real text comes from tests/fixtures/docs.jsonl (33 Wikipedia articles, see
tests/fixtures/README.md) and, where it exists, from the shared corpus beside the checkout.
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

import cached_challenge_fineweb as ccf  # data/ is on sys.path (conftest)
import prepare_local
import shard_format
import train_gpt
from conftest import FIXTURE_DOCS as FIXTURE
from conftest import REPO_ROOT as REPO

DATA = REPO / "data"
SHARED_CORPUS = REPO.parent / "shared" / "corpus"
VAL_DOCS = 5
SHARD_TOKENS = 20_000


def prepare_argv(root: Path, *extra: str, inputs=(FIXTURE,), name="fx", val_docs=VAL_DOCS, vocab=1024) -> list[str]:
    argv = [a for path in inputs for a in ("--input", str(path))]
    return argv + ["--output-root", str(root), "--name", name, "--vocab-size", str(vocab), "--val-docs",
                   str(val_docs), *extra]


def run_prepare(root: Path, *extra: str, **options) -> int:
    return prepare_local.main(prepare_argv(root, *extra, **options))


def shard_paths(root: Path, name: str = "fx", split: str = "*") -> list[Path]:
    return sorted((root / "datasets" / name).glob(f"fineweb_{split}_*.bin"))


def read_shard(path: Path) -> np.ndarray:
    count = shard_format.check_shard(path)
    return np.fromfile(path, dtype="<u2", offset=shard_format.HEADER_BYTES, count=count)


def split_documents(tokens: np.ndarray) -> list[np.ndarray]:
    """Token runs that start at each BOS (id 1), without the BOS."""
    starts = np.flatnonzero(tokens == prepare_local.BOS_ID)
    assert starts.size and starts[0] == 0, "the token stream must start with BOS"
    return [doc[1:] for doc in np.split(tokens, starts[1:])]


def normalized(sp: spm.SentencePieceProcessor, text: str) -> str:
    """The text as the tokenizer sees it (nmt_nfkc, whitespace collapsed), as decode() returns it."""
    return sp.normalize(text).replace("\u2581", " ")


def all_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The fixture documents built once: 5 validation documents, shards of at most 20,000 tokens."""
    root = tmp_path_factory.mktemp("built")
    assert run_prepare(root, "--shard-tokens", str(SHARD_TOKENS), "--workers", "2") == 0
    return root


@pytest.fixture(scope="module")
def model_path(built) -> Path:
    return built / "tokenizers" / "fx.model"


# ----------------------------------------------------------------------------- prepare_local: good input


def test_shards_decode_back_to_the_documents(built, model_path, fixture_docs):
    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    docs = fixture_docs
    val = split_documents(np.concatenate([read_shard(p) for p in shard_paths(built, split="val")]))
    train = split_documents(np.concatenate([read_shard(p) for p in shard_paths(built, split="train")]))
    assert len(val) == VAL_DOCS and len(train) == len(docs) - VAL_DOCS
    for ids, text in zip(val + train, docs):
        assert sp.decode(ids.tolist()) == normalized(sp, text)


def test_manifest_counts_match_the_shards(built, fixture_docs):
    manifest = json.loads((built / "datasets" / "fx" / "manifest.json").read_text(encoding="utf-8"))
    docs = fixture_docs
    expected_docs = {"val": docs[:VAL_DOCS], "train": docs[VAL_DOCS:]}
    for split, info in manifest["splits"].items():
        tokens = np.concatenate([read_shard(built / "datasets" / "fx" / s["file"]) for s in info["shards"]])
        assert info["documents"] == len(expected_docs[split])
        assert info["tokens"] == tokens.size == sum(s["tokens"] for s in info["shards"])
        assert info["text_tokens"] == tokens.size - info["documents"]
        assert info["text_bytes"] == sum(len(d.encode("utf-8")) for d in expected_docs[split])
        assert info["bytes_per_token"] == pytest.approx(info["text_bytes"] / info["text_tokens"], rel=1e-6)
        for shard in info["shards"]:
            path = built / "datasets" / "fx" / shard["file"]
            assert shard["sha256"] == prepare_local.sha256_file(path) and shard["bytes"] == path.stat().st_size
    assert [s["file"] for s in manifest["splits"]["val"]["shards"]] == ["fineweb_val_000000.bin"]
    assert [p.name for p in shard_paths(built)] == sorted(
        s["file"] for info in manifest["splits"].values() for s in info["shards"]
    )
    assert manifest["inputs"] == [
        {"path": str(FIXTURE), "bytes": FIXTURE.stat().st_size, "sha256": prepare_local.sha256_file(FIXTURE),
         "documents": len(docs)}
    ]
    tok = manifest["tokenizer"]
    assert tok["sha256"] == prepare_local.sha256_file(built / tok["model"])
    assert tok["source"] == "trained" and tok["training_sample"]["documents"] == len(docs) - VAL_DOCS
    assert manifest["settings"]["tokenizer"]["trainer"]["normalization_rule_name"] == "nmt_nfkc"
    assert manifest["sentencepiece_version"] == spm.__version__


def test_shard_headers_and_sizes(built):
    paths = shard_paths(built)
    assert len(paths) > 2  # the small --shard-tokens splits the training split
    for split in ("val", "train"):
        counts = []
        for path in shard_paths(built, split=split):
            header = np.fromfile(path, dtype="<i4", count=256)
            assert header[0] == 20240520 and header[1] == 1 and not header[3:].any()
            assert path.stat().st_size == 1024 + 2 * int(header[2])
            counts.append(int(header[2]))
        assert all(c == SHARD_TOKENS for c in counts[:-1]) and 0 < counts[-1] <= SHARD_TOKENS


def test_tokenizer_has_the_competition_layout(built, model_path):
    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    assert sp.get_piece_size() == 1024
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)
    assert sp.id_to_piece(4) == "<0x00>" and sp.id_to_piece(259) == "<0xFF>"  # byte fallback
    assert sp.encode("2024", out_type=str) == ["2", "0", "2", "4"]  # split_digits
    assert sp.encode("\U0001F600", out_type=str) == ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]  # byte fallback
    assert not sp.encode("the", out_type=str)[0].startswith("\u2581")  # no dummy prefix
    vocab = (built / "tokenizers" / "fx.vocab").read_text(encoding="utf-8").splitlines()
    assert len(vocab) == 1024 and vocab[1] == "<s>\t0"


def test_tokenizer_sample_is_training_documents_only(tmp_path):
    docs = [f"validation{i} only" for i in range(3)] + [f"train{i} line one\ntrain{i} line two" for i in range(6)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    lines, info = prepare_local.collect_tokenizer_sample([path], val_docs=3, stride=2, limit=10)
    assert lines == ["train0 line one", "train0 line two", "train2 line one", "train2 line two",
                     "train4 line one", "train4 line two"]
    assert info["documents"] == 3
    assert prepare_local.tokenizer_sample_plan(600, 10**6, 100) == (6, 100)
    assert prepare_local.tokenizer_sample_plan(600, 3 * prepare_local.TOKENIZER_SAMPLE_BYTES + 1, None) == (4, 600)


def test_same_input_gives_byte_identical_output_whatever_the_workers(built, tmp_path):
    assert run_prepare(tmp_path, "--shard-tokens", str(SHARD_TOKENS), "--workers", "1") == 0
    assert all_files(tmp_path) == all_files(built)


def test_rerun_with_same_input_and_settings_is_a_no_op(built, capsys):
    before = {p: p.stat().st_mtime_ns for p in built.rglob("*")}
    assert run_prepare(built, "--shard-tokens", str(SHARD_TOKENS), "--workers", "2") == 0
    assert "already holds this dataset" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in built.rglob("*")} == before


def test_reused_tokenizer_gives_the_same_shards(built, model_path, tmp_path):
    args = ("--shard-tokens", str(SHARD_TOKENS), "--tokenizer", str(model_path), "--workers", "1")
    assert run_prepare(tmp_path, *args) == 0
    ours, theirs = all_files(tmp_path), all_files(built)
    assert {k: v for k, v in ours.items() if k.endswith((".bin", ".model", ".vocab"))} == {
        k: v for k, v in theirs.items() if k.endswith((".bin", ".model", ".vocab"))
    }
    manifest = json.loads(ours["datasets/fx/manifest.json"])
    assert manifest["tokenizer"]["source"] == "given"


def test_folders_txt_and_compressed_files_keep_input_order(model_path, tmp_path, fixture_docs):
    docs = fixture_docs[:6]
    src = tmp_path / "src"
    (src / "b_sub").mkdir(parents=True)
    with gzip.open(src / "a.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"text": docs[0]}) + "\n\n" + json.dumps({"text": docs[1], "id": 7}) + "\n")
    with lzma.open(src / "c.jsonl.xz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"text": docs[2]}) + "\n")
    (src / "d.txt").write_text(docs[3], encoding="utf-8")
    (src / "README.md").write_text("not a document", encoding="utf-8")
    (src / "b_sub" / "e.jsonl").write_text(json.dumps({"text": docs[4]}) + "\n", encoding="utf-8")
    single = tmp_path / "z.txt"
    single.write_text(docs[5], encoding="utf-8")
    out = tmp_path / "out"
    rc = run_prepare(out, "--tokenizer", str(model_path), "--workers", "1", inputs=(src, single), val_docs=2)
    assert rc == 0
    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    tokens = np.concatenate([read_shard(p) for p in shard_paths(out, split="val") + shard_paths(out, split="train")])
    decoded = [sp.decode(ids.tolist()) for ids in split_documents(tokens)]
    assert decoded == [normalized(sp, d) for d in docs]


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def interrupted(texts):
        calls.append(len(texts))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(texts)

    real = prepare_local._encode_batch
    monkeypatch.setattr(prepare_local, "_encode_batch", interrupted)
    monkeypatch.setattr(prepare_local, "BATCH_DOCS", 4)
    out = tmp_path / "out"
    assert run_prepare(out, "--workers", "1", "--shard-tokens", "5000") == 130
    assert len(calls) == 2
    assert not out.exists()  # no temporary files, no folders left behind


def dead_pid() -> int:
    """The id of a process that has ended (a child started and waited for)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_rerun_removes_temporary_files_a_killed_run_left(built, tmp_path):
    """SIGKILL leaves hidden temporary shards; the next run of that dataset removes them and writes the same
    dataset as a clean run."""
    out_dir = tmp_path / "datasets" / "fx"
    pid = dead_pid()
    stale = [_write(out_dir / f".fineweb_train_000000.bin.tmp-{pid}", shard_format.shard_header(0)),
             _write(out_dir / f".manifest.json.tmp-{pid}", "{"),
             _write(tmp_path / "tokenizers" / f".fx.model.tmp-{pid}", b"partial")]
    live = _write(out_dir / f".fineweb_val_000000.bin.tmp-{os.getppid()}", b"another build still writing")
    assert run_prepare(tmp_path, "--shard-tokens", str(SHARD_TOKENS)) == 0
    assert not any(path.exists() for path in stale)
    live.unlink()  # a live process's file is left alone; without it the output is the clean run's
    assert all_files(tmp_path) == all_files(built)


SLOW_PREPARE = """
import sys, time
sys.path.insert(0, sys.argv[1])
import prepare_local
real = prepare_local._encode_batch
calls = []
def slow(texts):
    calls.append(1)
    if len(calls) == 2:  # the first batch is in its temporary shard by now
        print("working", flush=True)
    time.sleep(0.2)
    return real(texts)
prepare_local._encode_batch = slow
prepare_local.BATCH_DOCS = 2
sys.exit(prepare_local.main(sys.argv[2:]))
"""


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_run_exits_128_plus_signal_and_leaves_nothing(signum, status, tmp_path):
    out = tmp_path / "out"
    argv = prepare_argv(out, "--workers", "1", "--shard-tokens", "5000")
    proc = subprocess.Popen([sys.executable, "-c", SLOW_PREPARE, str(DATA), *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "working\n"
        assert [p.name for p in (out / "datasets" / "fx").glob(".fineweb_val_*.tmp-*")]  # mid-write
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == status, err
    assert not out.exists()  # no temporary or half-written files, no folders left behind


def test_temporary_names_are_hidden_until_the_final_rename(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((Path(src).name, Path(dst).name, sorted(p.name for p in Path(dst).parent.iterdir())))
        return real_replace(src, dst)

    monkeypatch.setattr(prepare_local.os, "replace", spy)
    assert run_prepare(tmp_path, "--workers", "1", "--shard-tokens", str(SHARD_TOKENS)) == 0
    assert all(src.startswith(".") and ".tmp-" in src for src, _, _ in seen)
    assert seen[-1][1] == "manifest.json"  # the manifest lands last
    finished_before_manifest = [names for _, dst, names in seen[:-1] if dst.endswith(".bin")]
    assert all("manifest.json" not in names for names in finished_before_manifest)


def test_progress_bar_only_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        bar = prepare_local.Progress("encoding", total=10, stream=stream)
        bar.update(5, 1000)
        bar.close()
    assert "encoding" in tty.getvalue() and "50.0%" in tty.getvalue()
    assert pipe.getvalue() == ""


# ----------------------------------------------------------------------------- prepare_local: bad input


def _write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


GOOD_LINE = json.dumps({"text": "A document."}) + "\n"

BAD_INPUTS = {
    "empty folder": (lambda d: (d / "in").mkdir() or d / "in", {}, "no documents found in --input"),
    "folder without document files": (lambda d: _write(d / "in" / "README.md", "x").parent, {},
                                      "no documents found in --input"),
    "only blank lines": (lambda d: _write(d / "a.jsonl", "\n  \n"), {}, "the files hold no documents"),
    "missing path": (lambda d: d / "nope.jsonl", {}, "no such file or folder"),
    "unsupported file": (lambda d: _write(d / "a.csv", "x"), {}, "unsupported file type; expected .jsonl"),
    "txt not utf-8": (lambda d: _write(d / "a.txt", b"caf\xe9 au lait"), {}, "a.txt: not UTF-8 text (byte 0xe9"),
    "jsonl not utf-8": (lambda d: _write(d / "a.jsonl", GOOD_LINE.encode() + b'{"text": "\xff"}\n'), {},
                        "a.jsonl line 2: not UTF-8 text"),
    "invalid json": (lambda d: _write(d / "a.jsonl", GOOD_LINE + GOOD_LINE + '{"text": "cut\n'), {},
                     "a.jsonl line 3: not valid JSON"),
    "no text field": (lambda d: _write(d / "a.jsonl", GOOD_LINE + '{"body": "x"}\n'), {},
                      'a.jsonl line 2: no string field "text"'),
    "text not a string": (lambda d: _write(d / "a.jsonl", GOOD_LINE + '{"text": 5}\n'), {},
                          'line 2: no string field "text"'),
    "json not an object": (lambda d: _write(d / "a.jsonl", '["text"]\n'), {}, 'line 1: no string field "text"'),
    "unpaired surrogate": (lambda d: _write(d / "a.jsonl", '{"text": "a \\ud800 b"}\n'), {}, "unpaired surrogate"),
    "damaged xz": (lambda d: _write(d / "a.jsonl.xz", lzma.compress(GOOD_LINE.encode() * 50)[:-20]), {},
                   "cannot be read as a .jsonl.xz file"),
    "damaged gz": (lambda d: _write(d / "a.jsonl.gz", b"\x1f\x8b not really gzip"), {},
                   "cannot be read as a .jsonl.gz file"),
    "vocab over uint16": (lambda d: FIXTURE, {"vocab": 70000}, "--vocab-size 70000: at most 65536"),
    "vocab below byte fallback": (lambda d: FIXTURE, {"vocab": 200}, "--vocab-size 200: at least 261"),
    "vocab too small for the text": (lambda d: FIXTURE, {"vocab": 262}, "--vocab-size 262: SentencePiece could not"),
    "val docs = all docs": (lambda d: FIXTURE, {"val_docs": 33}, "--val-docs 33: the input holds only 33 documents"),
    "val docs zero": (lambda d: FIXTURE, {"val_docs": 0}, "--val-docs 0: at least 1"),
    "shard tokens zero": (lambda d: FIXTURE, {"extra": ("--shard-tokens", "0")}, "--shard-tokens 0"),
    "workers zero": (lambda d: FIXTURE, {"extra": ("--workers", "0")}, "--workers 0"),
    "name with a slash": (lambda d: FIXTURE, {"name": "a/b"}, "--name 'a/b': expected a plain folder name"),
    "tokenizer missing": (lambda d: FIXTURE, {"extra": ("--tokenizer", "/nonexistent.model")},
                          "--tokenizer /nonexistent.model: cannot read it"),
    "tokenizer not a model": (lambda d: FIXTURE, {"extra": ("--tokenizer", str(FIXTURE))},
                              "not a SentencePiece model file"),
    "argument not an integer": (lambda d: FIXTURE, {"extra": ("--workers", "many")},
                                "argument --workers: invalid int value"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gets_one_message_and_writes_nothing(case, tmp_path, capsys):
    make, opts, message = BAD_INPUTS[case]
    src = make(tmp_path)
    out = tmp_path / "out"
    kwargs = {k: opts[k] for k in ("vocab", "val_docs", "name") if k in opts}
    rc = run_prepare(out, *opts.get("extra", ()), inputs=(src,), **kwargs)
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2
    assert message in line
    assert not out.exists()


def test_tokenizer_of_another_size_is_refused(model_path, tmp_path, capsys):
    rc = run_prepare(tmp_path / "out", "--tokenizer", str(model_path), vocab=512)
    assert rc == 2 and "has 1024 pieces, but --vocab-size is 512" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_folder_holding_a_different_dataset_is_left_alone(built, capsys):
    before = all_files(built)
    rc = run_prepare(built, "--shard-tokens", str(SHARD_TOKENS), val_docs=6)
    assert rc == 2 and "already holds a different dataset" in one_error_line(capsys.readouterr().err)
    assert all_files(built) == before


def test_folder_with_shards_but_no_manifest_is_left_alone(tmp_path, capsys):
    stray = _write(tmp_path / "datasets" / "fx" / "fineweb_train_000000.bin", shard_format.shard_header(0))
    rc = run_prepare(tmp_path)
    assert rc == 2 and "but no manifest.json" in one_error_line(capsys.readouterr().err)
    assert all_files(tmp_path) == {"datasets/fx/fineweb_train_000000.bin": stray.read_bytes()}


def test_script_runs_from_the_command_line(tmp_path):
    cmd = [sys.executable, str(DATA / "prepare_local.py"), "--input", str(tmp_path / "none.jsonl"),
           "--output-root", str(tmp_path), "--name", "x", "--vocab-size", "1024", "--val-docs", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "no such file or folder" in one_error_line(proc.stderr)


# ----------------------------------------------------------------------------- real text from the shared corpus


@pytest.mark.skipif(not SHARED_CORPUS.is_dir(), reason=f"shared corpus not found at {SHARED_CORPUS}")
def test_first_documents_of_the_shared_corpus_round_trip(tmp_path):
    docs = []
    with lzma.open(SHARED_CORPUS / "part-00000.jsonl.xz", "rt", encoding="utf-8") as f:
        for line in f:
            docs.append(json.loads(line)["text"])
            if len(docs) == 300:
                break
    src = _write(tmp_path / "first300.jsonl", "".join(json.dumps({"text": d}) + "\n" for d in docs))
    assert run_prepare(tmp_path / "out", "--workers", "2", inputs=(src,), val_docs=30) == 0
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "out" / "tokenizers" / "fx.model"))
    out = tmp_path / "out"
    tokens = np.concatenate([read_shard(p) for p in shard_paths(out, split="val") + shard_paths(out, split="train")])
    decoded = [sp.decode(ids.tolist()) for ids in split_documents(tokens)]
    assert decoded == [normalized(sp, d) for d in docs]


# ----------------------------------------------------------------------------- the trainer reads these shards


def test_trainer_loads_the_shards(built, model_path, tmp_path, fixture_docs):
    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    paths = shard_paths(built, split="val") + shard_paths(built, split="train")
    tokens = np.concatenate([train_gpt.load_data_shard(p).numpy() for p in paths])
    assert np.array_equal(tokens, np.concatenate([read_shard(p) for p in paths]))
    decoded = [sp.decode(ids.tolist()) for ids in split_documents(tokens)]
    assert decoded == [normalized(sp, d) for d in fixture_docs]

    bad = tmp_path / "bad.bin"
    good = paths[0].read_bytes()
    for data in (good[:-2], b"\0" * 4 + good[4:], good[:4] + b"\2\0\0\0" + good[8:], good[:100]):
        bad.write_bytes(data)
        with pytest.raises(train_gpt.ConfigError):
            train_gpt.load_data_shard(bad)


# ----------------------------------------------------------------------------- shard_format


def test_check_shard_rules(tmp_path):
    good = shard_format.shard_header(3) + np.array([1, 2, 3], dtype="<u2").tobytes()
    path = _write(tmp_path / "s.bin", good)
    assert shard_format.check_shard(path) == 3
    cases = {
        "truncated or damaged": good[:-1],
        "magic 0": b"\0" * 4 + good[4:],
        "version 2": good[:4] + (2).to_bytes(4, "little") + good[8:],
        "shorter than the 1024-byte": good[:10],
    }
    for message, data in cases.items():
        path.write_bytes(data)
        with pytest.raises(shard_format.ShardError, match=message):
            shard_format.check_shard(path, "label")


# ----------------------------------------------------------------------------- the downloader

# The layout the published export's manifest uses (datasets with stats, tokenizers with paths).
EXPORT_MANIFEST = {
    "version": "10B",
    "datasets": [
        {"name": "fineweb10B_sp512", "tokenizer_name": "sp_bpe_512", "path": "datasets/fineweb10B_sp512",
         "stats": {"files_train": 9, "files_val": 1}},
        {"name": "fineweb10B_sp1024", "tokenizer_name": "sp_bpe_1024", "path": "datasets/fineweb10B_sp1024",
         "stats": {"files_train": 4, "files_val": 2, "tokens_train": 1234}},
    ],
    "tokenizers": [
        {"name": "sp_bpe_512", "model_path": "tokenizers/fineweb_512_bpe.model"},
        {"name": "sp_bpe_1024", "kind": "sentencepiece_bpe", "vocab_size": 1024,
         "model_path": "tokenizers/fineweb_1024_bpe.model", "vocab_path": "tokenizers/fineweb_1024_bpe.vocab"},
    ],
}


def test_plan_for_the_export_manifest(tmp_path):
    plan = ccf.plan_downloads(EXPORT_MANIFEST, "sp1024", 2, "datasets", tmp_path)
    d = tmp_path / "datasets" / "fineweb10B_sp1024"
    assert plan == [
        ("datasets/datasets/fineweb10B_sp1024/fineweb_val_000000.bin", d / "fineweb_val_000000.bin"),
        ("datasets/datasets/fineweb10B_sp1024/fineweb_val_000001.bin", d / "fineweb_val_000001.bin"),
        ("datasets/datasets/fineweb10B_sp1024/fineweb_train_000000.bin", d / "fineweb_train_000000.bin"),
        ("datasets/datasets/fineweb10B_sp1024/fineweb_train_000001.bin", d / "fineweb_train_000001.bin"),
        ("datasets/tokenizers/fineweb_1024_bpe.model", tmp_path / "tokenizers" / "fineweb_1024_bpe.model"),
        ("datasets/tokenizers/fineweb_1024_bpe.vocab", tmp_path / "tokenizers" / "fineweb_1024_bpe.vocab"),
    ]
    assert ccf.plan_downloads(EXPORT_MANIFEST, "sp1024", 0, "", tmp_path)[0].remote == (
        "datasets/fineweb10B_sp1024/fineweb_val_000000.bin"
    )


def test_plan_from_shard_counts_or_file_lists(tmp_path):
    counts = {"datasets": {"fineweb10B_sp1024": {"train_shards": 3, "val_shards": 1}}}
    plan = ccf.plan_downloads(counts, "sp1024", 3, "root", tmp_path)
    assert [p.remote for p in plan] == [
        "root/datasets/fineweb10B_sp1024/fineweb_val_000000.bin",
        "root/datasets/fineweb10B_sp1024/fineweb_train_000000.bin",
        "root/datasets/fineweb10B_sp1024/fineweb_train_000001.bin",
        "root/datasets/fineweb10B_sp1024/fineweb_train_000002.bin",
        "root/tokenizers/fineweb_1024_bpe.model",  # the variant's default tokenizer file
    ]
    lists = {
        "datasets": [{"name": "fineweb10B_sp1024", "tokenizer": "fineweb_1024_bpe.model",
                      "files": [{"file": "fineweb_train_000001.bin", "sha256": "x"}, "fineweb_train_000000.bin",
                                "datasets/fineweb10B_sp1024/fineweb_val_000000.bin", "fineweb_train_000002.bin"]}],
    }
    plan = ccf.plan_downloads(lists, "sp1024", 2, "datasets", tmp_path)
    assert [p.local.name for p in plan] == ["fineweb_val_000000.bin", "fineweb_train_000000.bin",
                                            "fineweb_train_000001.bin", "fineweb_1024_bpe.model"]
    explicit = {"datasets": [{"name": "fineweb10B_sp1024", "val_files": ["fineweb_val_000000.bin"],
                              "train_files": ["fineweb_train_000000.bin"]}],
                "tokenizers": {"sp_bpe_1024": {"path": "/abs/where/fineweb_1024_bpe.model"}}}
    plan = ccf.plan_downloads(explicit, "sp1024", 1, "datasets", tmp_path)
    assert plan[-1] == ("datasets/tokenizers/fineweb_1024_bpe.model",
                        tmp_path / "tokenizers" / "fineweb_1024_bpe.model")


@pytest.mark.parametrize("manifest,variant,n,message", [
    (EXPORT_MANIFEST, "sp4096", 1, "lists no dataset fineweb10B_sp4096 for --variant sp4096 (it lists: "
                                   "fineweb10B_sp512, fineweb10B_sp1024)"),
    (EXPORT_MANIFEST, "sp1024", 5, "--train-shards 5: the manifest lists only 4 train shards"),
    (EXPORT_MANIFEST, "sp1024", -1, "--train-shards -1"),
    ({"datasets": [{"name": "fineweb10B_sp1024"}]}, "sp1024", 1, "gives neither val_shards"),
    ({"datasets": [{"name": "fineweb10B_sp1024", "train_shards": 1, "val_shards": 0}]}, "sp1024", 1,
     "no validation shards"),
    ([], "sp1024", 1, "not a JSON object"),
])
def test_plan_errors(manifest, variant, n, message, tmp_path):
    with pytest.raises(ccf.ManifestError) as info:
        ccf.plan_downloads(manifest, variant, n, "datasets", tmp_path)
    assert message in str(info.value)


@pytest.fixture
def fake_remote(tmp_path, monkeypatch, model_path):
    """A local stand-in for the dataset repo, and a download_file that copies from it."""
    remote = tmp_path / "remote"
    rng = np.random.default_rng(0)
    for split, count in (("val", 2), ("train", 4)):
        for i in range(count):
            tokens = rng.integers(0, 1024, size=100 + i, dtype=np.uint16)
            _write(remote / "datasets" / "datasets" / "fineweb10B_sp1024" / f"fineweb_{split}_{i:06d}.bin",
                   shard_format.shard_header(tokens.size) + tokens.astype("<u2").tobytes())
    _write(remote / "datasets" / "tokenizers" / "fineweb_1024_bpe.model", model_path.read_bytes())
    _write(remote / "datasets" / "tokenizers" / "fineweb_1024_bpe.vocab", "<pad>\t0\n")
    _write(remote / "datasets" / "manifest.json", json.dumps(EXPORT_MANIFEST))
    calls = []

    def download_file(repo_id, path, dest):
        calls.append((repo_id, path))
        source = remote / path
        if not source.is_file():
            raise ccf.DownloadError(f"{path} was not found in Hugging Face dataset {repo_id}")
        shutil.copyfile(source, dest)

    monkeypatch.setattr(ccf, "download_file", download_file)
    monkeypatch.delenv("MATCHED_FINEWEB_REPO_ID", raising=False)
    monkeypatch.delenv("MATCHED_FINEWEB_REMOTE_ROOT_PREFIX", raising=False)
    return remote, calls


def test_download_places_files_and_skips_valid_ones(fake_remote, tmp_path, capsys):
    remote, calls = fake_remote
    local = tmp_path / "data"
    assert ccf.main(["--variant", "sp1024", "--train-shards", "3", "--data-root", str(local)]) == 0
    assert {repo for repo, _ in calls} == {"willdepueoai/parameter-golf"}
    assert [p for _, p in calls] == [
        "datasets/manifest.json",
        "datasets/datasets/fineweb10B_sp1024/fineweb_val_000000.bin",
        "datasets/datasets/fineweb10B_sp1024/fineweb_val_000001.bin",
        "datasets/datasets/fineweb10B_sp1024/fineweb_train_000000.bin",
        "datasets/datasets/fineweb10B_sp1024/fineweb_train_000001.bin",
        "datasets/datasets/fineweb10B_sp1024/fineweb_train_000002.bin",
        "datasets/tokenizers/fineweb_1024_bpe.model",
        "datasets/tokenizers/fineweb_1024_bpe.vocab",
    ]
    for _, path in calls:
        rel = Path(path).relative_to("datasets")
        assert (local / rel).read_bytes() == (remote / path).read_bytes()
    assert not [p for p in local.rglob(".*")]  # no temporary files left
    assert "2 val + 3 train shards" in capsys.readouterr().out

    calls.clear()
    assert ccf.main(["--variant", "sp1024", "--train-shards", "3", "--data-root", str(local)]) == 0
    assert calls == []  # everything present and valid

    damaged = local / "datasets" / "fineweb10B_sp1024" / "fineweb_train_000001.bin"
    damaged.write_bytes(damaged.read_bytes()[:-2])
    assert ccf.main(["--variant", "sp1024", "--train-shards", "4", "--data-root", str(local)]) == 0
    assert [p for _, p in calls] == [
        "datasets/datasets/fineweb10B_sp1024/fineweb_train_000001.bin",
        "datasets/datasets/fineweb10B_sp1024/fineweb_train_000003.bin",
    ]
    assert shard_format.check_shard(damaged) == 101


def test_download_env_overrides(fake_remote, tmp_path, monkeypatch):
    remote, calls = fake_remote
    shutil.copytree(remote / "datasets", remote / "other_root")
    monkeypatch.setenv("MATCHED_FINEWEB_REPO_ID", "someone/else")
    monkeypatch.setenv("MATCHED_FINEWEB_REMOTE_ROOT_PREFIX", "other_root")
    assert ccf.main(["--variant", "sp1024", "--train-shards", "0", "--data-root", str(tmp_path / "data")]) == 0
    assert calls[0] == ("someone/else", "other_root/manifest.json")
    assert all(path.startswith("other_root/") for _, path in calls)


def test_damaged_download_is_not_kept(fake_remote, tmp_path, capsys):
    remote, _ = fake_remote
    shard = remote / "datasets" / "datasets" / "fineweb10B_sp1024" / "fineweb_train_000000.bin"
    shard.write_bytes(shard.read_bytes()[:-1])
    local = tmp_path / "data"
    assert ccf.main(["--variant", "sp1024", "--train-shards", "1", "--data-root", str(local)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "downloaded datasets/datasets/fineweb10B_sp1024/fineweb_train_000000.bin" in line
    assert "truncated or damaged" in line
    folder = local / "datasets" / "fineweb10B_sp1024"
    assert sorted(p.name for p in folder.iterdir()) == ["fineweb_val_000000.bin", "fineweb_val_000001.bin"]


def test_unreachable_repo_gives_one_line_pointing_to_prepare_local(fake_remote, tmp_path, capsys, monkeypatch):
    def offline(repo_id, path, dest):
        raise ccf.DownloadError(f"could not reach Hugging Face dataset {repo_id} to fetch {path} (ConnectError)")

    monkeypatch.setattr(ccf, "download_file", offline)
    assert ccf.main(["--variant", "sp1024", "--data-root", str(tmp_path / "data")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "could not reach Hugging Face dataset willdepueoai/parameter-golf to fetch datasets/manifest.json" in line
    assert "data/prepare_local.py builds the same layout" in line


def test_script_without_network_fails_with_one_line(tmp_path):
    """The real download path, offline: huggingface_hub (if installed) must fail fast and clearly."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env.pop("MATCHED_FINEWEB_REPO_ID", None)
    env.pop("MATCHED_FINEWEB_REMOTE_ROOT_PREFIX", None)
    cmd = [sys.executable, str(DATA / "cached_challenge_fineweb.py"), "--variant", "sp1024", "--train-shards", "1",
           "--data-root", str(tmp_path / "data")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert "datasets/manifest.json" in line or "huggingface_hub is not installed" in line
    assert "data/prepare_local.py builds the same layout" in line
    assert not [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
