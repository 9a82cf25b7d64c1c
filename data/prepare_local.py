#!/usr/bin/env python3
"""Build Parameter Golf token shards from local documents.

    python3 data/prepare_local.py --input /work/shared/corpus --output-root data \\
        --name corpus_sp1024 --vocab-size 1024 --val-docs 5000

Documents come from .jsonl, .jsonl.gz or .jsonl.xz files (one JSON object per line with a string
field "text") and from .txt files (one document per file); folders are walked in sorted order and
documents keep their input order. The first --val-docs documents are the validation split and the
rest the training split, as the FineWeb export holds out its first 50,000 documents.

A SentencePiece BPE tokenizer is trained with the competition's settings on an evenly spaced,
deterministic sample of training documents only (or --tokenizer MODEL is reused). Each document
is encoded as BOS (id 1) followed by its tokens. Outputs, under --output-root:

    tokenizers/NAME.model, tokenizers/NAME.vocab
    datasets/NAME/fineweb_val_000000.bin ...     at most --shard-tokens tokens per shard
    datasets/NAME/fineweb_train_000000.bin ...
    datasets/NAME/manifest.json                  counts, bytes per token, sha256s, settings

Shards use the competition's format (see shard_format.py). Every file is written under a
temporary hidden name in its folder and renamed when complete, manifest.json last, so an
interrupted run leaves nothing that looks finished; a run stopped by SIGKILL cannot clean up, so the
next run of the same dataset removes the temporary files it left. SIGINT exits 130, SIGTERM 143. The
same inputs and settings give byte-identical outputs whatever --workers is. Bad input stops the run
with one "error: ..." line on stderr and exit status 2 before anything is written.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import lzma
import math
import multiprocessing
import os
import signal
import sys
import time
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import sentencepiece as spm

try:  # imported as part of a package (data.prepare_local)
    from . import shard_format
except ImportError:  # run as a script, or imported with data/ on sys.path
    import shard_format

BUILDER_VERSION = 1  # bump when a change here changes the outputs for the same inputs and settings
DOC_SUFFIXES = (".jsonl.xz", ".jsonl.gz", ".jsonl", ".txt")
SUFFIX_TEXT = ".jsonl, .jsonl.gz, .jsonl.xz or .txt"
BOS_ID = 1
SPECIAL_IDS = 4  # pad, bos, eos, unk
MIN_VOCAB = SPECIAL_IDS + 256 + 1  # byte fallback: 256 byte pieces, plus at least one character
MAX_VOCAB = 2**16  # ids 0..65535 fit in uint16
DEFAULT_SHARD_TOKENS = 100_000_000
TOKENIZER_SAMPLE_BYTES = 50_000_000  # default size of the tokenizer's training sample
BATCH_BYTES = 1 << 20  # encoding work unit: about 1 MB of text ...
BATCH_DOCS = 1024  # ... or this many documents


def trainer_settings(vocab_size: int) -> dict:
    """SentencePiece trainer options: the competition's settings plus fixed, deterministic extras."""
    return {
        "model_type": "bpe",
        "vocab_size": vocab_size,
        "byte_fallback": True,
        "split_digits": True,
        "normalization_rule_name": "nmt_nfkc",
        "add_dummy_prefix": False,
        "pad_id": 0,
        "bos_id": BOS_ID,
        "eos_id": 2,
        "unk_id": 3,
        "character_coverage": 0.999,
        # Deterministic: every sampled line is used, in order, on one thread.
        "input_sentence_size": 0,
        "shuffle_input_sentence": False,
        "num_threads": 1,
        # Lines (paragraphs) are the trainer's sentences; keep long ones instead of dropping them.
        "max_sentence_length": 1 << 20,
    }


class InputError(Exception):
    """Bad input or options: reported as one "error: ..." line, exit status 2."""


# ----------------------------------------------------------------------------- reading documents


def doc_suffix(name: str) -> str | None:
    lower = name.lower()
    return next((s for s in DOC_SUFFIXES if lower.endswith(s)), None)


def find_input_files(inputs: Iterable[str]) -> list[Path]:
    """The document files named by --input, folders walked recursively in sorted order."""
    inputs = list(inputs)
    files: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                files.extend(
                    Path(dirpath) / name
                    for name in sorted(filenames)
                    if not name.startswith(".") and doc_suffix(name)
                )
        elif path.is_file():
            if not doc_suffix(path.name):
                raise InputError(f"--input {raw}: unsupported file type; expected {SUFFIX_TEXT}")
            files.append(path)
        else:
            raise InputError(f"--input {raw}: no such file or folder")
    if not files:
        raise InputError(f"no documents found in --input {', '.join(inputs)}: expected {SUFFIX_TEXT} files")
    return files


def _utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{where}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "expected UTF-8 encoded documents"
        ) from None


def _text_bytes(text: str, where: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InputError(
            f"{where}: the text holds an unpaired surrogate escape ({text[exc.start]!r}), "
            "which is not valid Unicode text"
        ) from None


def _jsonl_text(line: bytes, where: str) -> str:
    try:
        obj = json.loads(_utf8(line, where))
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); "
            'expected one JSON object per line with a string field "text"'
        ) from None
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        raise InputError(f'{where}: no string field "text"; expected one JSON object per line like {{"text": "..."}}')
    return obj["text"]


def iter_file_documents(path: Path) -> Iterator[tuple[str, int]]:
    """(text, UTF-8 byte length) of each document of one file; blank .jsonl lines are skipped."""
    suffix = doc_suffix(path.name)
    try:
        if suffix == ".txt":
            text = _utf8(path.read_bytes(), str(path))
            yield text, _text_bytes(text, str(path))
            return
        opener = {".jsonl": open, ".jsonl.gz": gzip.open, ".jsonl.xz": lzma.open}[suffix]
        with opener(path, "rb") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    where = f"{path} line {lineno}"
                    text = _jsonl_text(line, where)
                    yield text, _text_bytes(text, where)
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:
        raise InputError(f"{path}: cannot be read as a {suffix} file ({exc})") from None


def iter_documents(files: Iterable[Path]) -> Iterator[tuple[str, int]]:
    for path in files:
        yield from iter_file_documents(path)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- progress


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, label: str, total: int | None = None, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.label, self.total = label, total
        self.docs = self.nbytes = 0
        self.start = self.last = time.monotonic()

    def update(self, docs: int, nbytes: int) -> None:
        self.docs += docs
        self.nbytes += nbytes
        now = time.monotonic()
        if self.enabled and now - self.last >= 0.2:
            self.last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        line = f"{self.label} {self.docs:,} docs {self.nbytes / 1e6:,.1f} MB {self.nbytes / 1e6 / elapsed:.1f} MB/s"
        if self.total:
            frac = min(self.docs / self.total, 1.0)
            bar = "#" * int(frac * 24)
            eta = elapsed * (1 - frac) / frac if frac > 0 else 0.0
            line = f"{self.label} {frac:6.1%} |{bar:<24}| {self.docs:,}/{self.total:,} docs ETA {eta:.0f}s"
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()


# ----------------------------------------------------------------------------- scanning


@dataclass
class Scan:
    documents: int
    docs_per_file: list[int]
    train_bytes: int


def scan_documents(files: list[Path], val_docs: int) -> Scan:
    """Read every document once, so that bad input stops the run before anything is written."""
    per_file = []
    total = train_bytes = 0
    progress = Progress("reading")
    for path in files:
        count = 0
        for _, nbytes in iter_file_documents(path):
            if total >= val_docs:
                train_bytes += nbytes
            total += 1
            count += 1
            progress.update(1, nbytes)
        per_file.append(count)
    progress.close()
    return Scan(total, per_file, train_bytes)


# ----------------------------------------------------------------------------- tokenizer


def tokenizer_sample_plan(train_docs: int, train_bytes: int, max_docs: int | None) -> tuple[int, int]:
    """(stride, limit): train on every stride-th training document, at most limit of them.

    With max_docs, max_docs documents spread evenly; otherwise a stride that makes the sample
    about TOKENIZER_SAMPLE_BYTES of text.
    """
    if max_docs is not None:
        return max(1, train_docs // max_docs), max_docs
    return max(1, math.ceil(train_bytes / TOKENIZER_SAMPLE_BYTES)), train_docs


def collect_tokenizer_sample(files: list[Path], val_docs: int, stride: int, limit: int) -> tuple[list[str], dict]:
    """The non-blank lines of the sampled training documents, in input order."""
    lines: list[str] = []
    docs = nbytes = 0
    progress = Progress("sampling")
    for index, (text, size) in enumerate(iter_documents(files)):
        j = index - val_docs
        if j < 0 or j % stride:
            continue
        if docs >= limit:
            break
        docs += 1
        nbytes += size
        lines.extend(line for line in text.replace("\x00", " ").split("\n") if line.strip())
        progress.update(1, size)
    progress.close()
    return lines, {"documents": docs, "stride": stride, "text_bytes": nbytes, "lines": len(lines)}


def train_tokenizer(lines: list[str], vocab_size: int) -> bytes:
    """Train the BPE tokenizer on lines; return the serialized model."""
    writer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=writer, minloglevel=2, **trainer_settings(vocab_size)
        )
    except RuntimeError as exc:
        reason = " ".join(str(exc).split()).split("] ")[-1] or type(exc).__name__  # drop the source location
        raise InputError(
            f"--vocab-size {vocab_size}: SentencePiece could not train on the training documents: {reason}"
        ) from None
    return writer.getvalue()


def load_given_tokenizer(path: str, vocab_size: int) -> bytes:
    """The bytes of --tokenizer MODEL, checked to be a SentencePiece model of vocab_size pieces."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"--tokenizer {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        if not data:
            raise RuntimeError("empty file")
        sp = spm.SentencePieceProcessor(model_proto=data)
    except RuntimeError:
        raise InputError(f"--tokenizer {path}: not a SentencePiece model file") from None
    if sp.get_piece_size() != vocab_size:
        raise InputError(
            f"--tokenizer {path}: has {sp.get_piece_size()} pieces, but --vocab-size is {vocab_size}"
        )
    if sp.bos_id() != BOS_ID:
        raise InputError(f"--tokenizer {path}: its BOS id is {sp.bos_id()}; the shard format expects {BOS_ID}")
    return data


def vocab_text(sp: spm.SentencePieceProcessor) -> str:
    """The .vocab file SentencePiece writes beside a model: piece, tab, score per line."""
    return "".join(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(sp.get_piece_size()))


# ----------------------------------------------------------------------------- encoding

_encoder: spm.SentencePieceProcessor | None = None


def _init_encoder(model_proto: bytes) -> None:
    global _encoder
    _encoder = spm.SentencePieceProcessor(model_proto=model_proto)


def _init_worker(model_proto: bytes) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it ends the pool
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _init_encoder(model_proto)


def _encode_batch(texts: list[str]) -> np.ndarray:
    """BOS + tokens of each text, concatenated, as uint16."""
    flat: list[int] = []
    for ids in _encoder.encode(texts, out_type=int, num_threads=1):
        flat.append(BOS_ID)
        flat.extend(ids)
    return np.array(flat, dtype=np.uint16)


def iter_batches(files: list[Path], val_docs: int) -> Iterator[tuple[str, list[str], int]]:
    """(split, texts, text bytes) work units in document order; none spans the two splits."""
    batch: list[str] = []
    nbytes = 0
    split = "val"
    for index, (text, size) in enumerate(iter_documents(files)):
        doc_split = "val" if index < val_docs else "train"
        if batch and (doc_split != split or nbytes >= BATCH_BYTES or len(batch) >= BATCH_DOCS):
            yield split, batch, nbytes
            batch, nbytes = [], 0
        split = doc_split
        batch.append(text)
        nbytes += size
    if batch:
        yield split, batch, nbytes


def encode_in_order(batches: Iterable[tuple[str, list[str], int]], model_proto: bytes, workers: int):
    """Yield (split, documents, text bytes, tokens) per batch, in input order, on `workers` processes."""
    if workers == 1:
        _init_encoder(model_proto)
        for split, texts, nbytes in batches:
            yield split, len(texts), nbytes, _encode_batch(texts)
        return
    with multiprocessing.get_context().Pool(workers, initializer=_init_worker, initargs=(model_proto,)) as pool:
        pending: deque = deque()
        for split, texts, nbytes in batches:
            pending.append((split, len(texts), nbytes, pool.apply_async(_encode_batch, (texts,))))
            if len(pending) > 2 * workers:  # bounded read-ahead keeps memory flat
                split_, docs, nb, result = pending.popleft()
                yield split_, docs, nb, result.get()
        while pending:
            split_, docs, nb, result = pending.popleft()
            yield split_, docs, nb, result.get()


# ----------------------------------------------------------------------------- writing


class Staging:
    """Files written under temporary names, renamed into place together by commit()."""

    def __init__(self) -> None:
        self.pairs: list[tuple[Path, Path]] = []
        self.created_dirs: list[Path] = []

    def makedirs(self, folder: Path) -> None:
        missing = []
        for parent in [folder, *folder.parents]:
            if parent.exists():
                break
            missing.append(parent)
        folder.mkdir(parents=True, exist_ok=True)
        self.created_dirs.extend(missing)

    def new(self, final: Path) -> Path:
        temp = shard_format.temp_path(final)
        self.pairs.append((temp, final))
        return temp

    def write_bytes(self, final: Path, data: bytes) -> None:
        with open(self.new(final), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def commit(self) -> None:
        for temp, final in self.pairs:
            os.replace(temp, final)
        for folder in {final.parent for _, final in self.pairs}:
            _fsync_dir(folder)
        self.pairs.clear()
        self.created_dirs.clear()

    def discard(self) -> None:
        for temp, _ in self.pairs:
            try:
                temp.unlink()
            except FileNotFoundError:
                pass
        for folder in sorted(self.created_dirs, key=lambda d: len(d.parts), reverse=True):  # deepest first
            try:
                folder.rmdir()
            except OSError:
                pass
        self.pairs.clear()
        self.created_dirs.clear()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ShardWriter:
    """Streams one split's tokens into fineweb_{split}_NNNNNN.bin shards of at most shard_tokens."""

    def __init__(self, folder: Path, split: str, shard_tokens: int, staging: Staging):
        self.folder, self.split, self.shard_tokens, self.staging = folder, split, shard_tokens, staging
        self.shards: list[dict] = []
        self._file = None
        self._final: Path | None = None  # the open shard's name once committed
        self._temp: Path | None = None  # where it is written until then
        self._count = 0

    def write(self, tokens: np.ndarray) -> None:
        tokens = tokens.astype("<u2", copy=False)
        pos = 0
        while pos < len(tokens):
            if self._file is None:
                self._open()
            take = min(self.shard_tokens - self._count, len(tokens) - pos)
            self._file.write(tokens[pos : pos + take].tobytes())
            self._count += take
            pos += take
            if self._count == self.shard_tokens:
                self._close()

    def finish(self) -> list[dict]:
        if self._file is not None:
            self._close()
        return self.shards

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self) -> None:
        self._final = self.folder / shard_format.shard_name(self.split, len(self.shards))
        self._temp = self.staging.new(self._final)
        self._file = open(self._temp, "wb")
        self._file.write(shard_format.shard_header(0))  # rewritten with the count on close
        self._count = 0

    def _close(self) -> None:
        f, self._file = self._file, None
        f.seek(0)
        f.write(shard_format.shard_header(self._count))
        f.flush()
        os.fsync(f.fileno())
        f.close()
        self.shards.append(
            {
                "file": self._final.name,
                "tokens": self._count,
                "bytes": shard_format.shard_bytes(self._count),
                "sha256": sha256_file(self._temp),
            }
        )


# ----------------------------------------------------------------------------- existing output


def _input_identity(inputs) -> list:
    return [entry.get("sha256") for entry in inputs] if isinstance(inputs, list) else []


def existing_dataset_is_identical(out_dir: Path, root: Path, settings: dict, inputs: list[dict]) -> bool:
    """True when out_dir already holds this dataset; InputError when it holds anything else."""
    manifest_path = out_dir / "manifest.json"
    if manifest_path.exists():
        try:
            old = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise InputError(
                f"{manifest_path} cannot be read as JSON; remove {out_dir} or choose another --name"
            ) from None
        if not (
            isinstance(old, dict)
            and old.get("settings") == settings
            and _input_identity(old.get("inputs")) == _input_identity(inputs)
        ):
            raise InputError(
                f"{out_dir} already holds a different dataset (its manifest.json has other inputs or "
                "settings); remove it or choose another --name"
            )
        _verify_existing(out_dir, root, old)
        return True
    if out_dir.exists():
        if not out_dir.is_dir():
            raise InputError(f"{out_dir} exists and is not a folder; choose another --name")
        names = sorted(p.name for p in out_dir.iterdir() if not p.name.startswith("."))
        if names:
            raise InputError(
                f"{out_dir} holds files ({names[0]}{', ...' if len(names) > 1 else ''}) but no manifest.json "
                "(downloaded shards or an unfinished build); remove them or choose another --name"
            )
    return False


def _verify_existing(out_dir: Path, root: Path, manifest: dict) -> None:
    """Cheap checks that a matching manifest's files are all there: shard headers and sizes, tokenizer sha256."""
    hint = f"remove {out_dir} and run again"
    try:
        for split in manifest["splits"].values():
            for shard in split["shards"]:
                path = out_dir / shard["file"]
                try:
                    tokens = shard_format.check_shard(path)
                except shard_format.ShardError as exc:
                    raise InputError(f"{out_dir} matches these inputs and settings, but {exc}; {hint}") from None
                if tokens != shard["tokens"]:
                    raise InputError(f"{path} holds {tokens} tokens, its manifest says {shard['tokens']}; {hint}")
        model = root / manifest["tokenizer"]["model"]
        sha = manifest["tokenizer"]["sha256"]
    except (KeyError, TypeError):
        raise InputError(f"{out_dir / 'manifest.json'} is incomplete; {hint}") from None
    if not model.is_file() or sha256_file(model) != sha:
        raise InputError(f"{model} is missing or differs from {out_dir / 'manifest.json'}; {hint}")


def remove_stale_temporaries(out_dir: Path, model_path: Path, vocab_path: Path) -> int:
    """Remove the hidden temporary files of this dataset (shards, manifest, tokenizer) whose writing
    process is gone, e.g. killed by SIGKILL, which leaves no chance to clean up; a live process's files
    (another build of the same name) are left alone. Returns how many were removed."""
    patterns = [shard_format.temp_path(final, "*") for final in
                (out_dir / "fineweb_*.bin", out_dir / "manifest.json", model_path, vocab_path)]
    removed = 0
    for pattern in patterns:
        for path in pattern.parent.glob(pattern.name):
            pid = path.name.rpartition(".tmp-")[2]
            if pid.isdigit() and _process_alive(int(pid)):
                continue
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this run has written nothing yet: the file is an old run's whose pid came back
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _stage_tokenizer_file(staging: Staging, path: Path, data: bytes) -> None:
    if path.exists():
        if path.read_bytes() == data:
            return  # already there, identical
        raise InputError(f"{path} already exists with different content; remove it or choose another --name")
    staging.write_bytes(path, data)


# ----------------------------------------------------------------------------- the build


def check_options(args: argparse.Namespace) -> None:
    if not MIN_VOCAB <= args.vocab_size <= MAX_VOCAB:
        if args.vocab_size > MAX_VOCAB:
            raise InputError(f"--vocab-size {args.vocab_size}: at most {MAX_VOCAB}, so that token ids fit in uint16")
        raise InputError(
            f"--vocab-size {args.vocab_size}: at least {MIN_VOCAB}, as byte fallback reserves 256 byte pieces "
            f"and ids 0-3 for pad/bos/eos/unk, and the text's characters need room too"
        )
    if args.val_docs < 1:
        raise InputError(f"--val-docs {args.val_docs}: at least 1 document must form the validation split")
    if not 1 <= args.shard_tokens <= shard_format.MAX_TOKENS:
        raise InputError(f"--shard-tokens {args.shard_tokens}: expected 1 to {shard_format.MAX_TOKENS} (int32 header)")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers {args.workers}: expected at least 1")
    if args.tokenizer_train_docs is not None:
        if args.tokenizer is not None:
            raise InputError("--tokenizer-train-docs: has no effect with --tokenizer (nothing is trained)")
        if args.tokenizer_train_docs < 1:
            raise InputError(f"--tokenizer-train-docs {args.tokenizer_train_docs}: expected at least 1")
    name = args.name
    if not name or name.startswith(".") or "/" in name or "\\" in name:
        raise InputError(f"--name {name!r}: expected a plain folder name (no path separators, not starting with '.')")


def make_settings(args: argparse.Namespace, given_sha256: str | None) -> dict:
    """Everything besides the inputs that decides the outputs (compared to spot an identical dataset)."""
    if given_sha256 is not None:
        tokenizer = {"source": "given", "sha256": given_sha256}
    else:
        tokenizer = {
            "source": "trained",
            "train_docs": args.tokenizer_train_docs,
            "sample_bytes": None if args.tokenizer_train_docs is not None else TOKENIZER_SAMPLE_BYTES,
            "trainer": trainer_settings(args.vocab_size),
        }
    return {
        "builder_version": BUILDER_VERSION,
        "vocab_size": args.vocab_size,
        "val_docs": args.val_docs,
        "shard_tokens": args.shard_tokens,
        "bos_id": BOS_ID,
        "tokenizer": tokenizer,
    }


def build(args: argparse.Namespace) -> int:
    started = time.monotonic()
    check_options(args)
    files = find_input_files(args.input)
    root = Path(args.output_root)
    out_dir = root / "datasets" / args.name
    model_path = root / "tokenizers" / f"{args.name}.model"
    vocab_path = model_path.with_suffix(".vocab")
    workers = args.workers or os.cpu_count() or 1

    given = load_given_tokenizer(args.tokenizer, args.vocab_size) if args.tokenizer else None
    inputs = [{"path": str(p), "bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in files]
    settings = make_settings(args, hashlib.sha256(given).hexdigest() if given is not None else None)
    identical = existing_dataset_is_identical(out_dir, root, settings, inputs)
    stale = remove_stale_temporaries(out_dir, model_path, vocab_path)
    if stale:
        print(f"removed {stale} temporary file(s) left by an interrupted run of {args.name}")
    if identical:
        print(f"{out_dir} already holds this dataset (same inputs and settings): nothing to do")
        return 0

    scan = scan_documents(files, args.val_docs)
    if scan.documents == 0:
        raise InputError(f"no documents found in --input {', '.join(args.input)}: the files hold no documents")
    if args.val_docs >= scan.documents:
        raise InputError(
            f"--val-docs {args.val_docs}: the input holds only {scan.documents} documents; expected fewer "
            "validation documents than that, so that the rest form the training split"
        )
    for entry, count in zip(inputs, scan.docs_per_file):
        entry["documents"] = count

    train_docs = scan.documents - args.val_docs
    if given is not None:
        model_proto = given
        tokenizer_info = {"source": "given", "given_path": str(args.tokenizer)}
    else:
        stride, limit = tokenizer_sample_plan(train_docs, scan.train_bytes, args.tokenizer_train_docs)
        lines, sample = collect_tokenizer_sample(files, args.val_docs, stride, limit)
        model_proto = train_tokenizer(lines, args.vocab_size)
        del lines
        tokenizer_info = {"source": "trained", "training_sample": sample}
    sp = spm.SentencePieceProcessor(model_proto=model_proto)

    staging = Staging()
    writers: dict[str, ShardWriter] = {}
    try:
        staging.makedirs(model_path.parent)
        staging.makedirs(out_dir)
        _stage_tokenizer_file(staging, model_path, model_proto)
        _stage_tokenizer_file(staging, vocab_path, vocab_text(sp).encode("utf-8"))

        stats = {split: {"documents": 0, "tokens": 0, "text_bytes": 0} for split in ("val", "train")}
        progress = Progress("encoding", total=scan.documents)
        for split, docs, nbytes, tokens in encode_in_order(iter_batches(files, args.val_docs), model_proto, workers):
            if split not in writers:
                if split == "train" and "val" in writers:
                    writers["val"].finish()
                writers[split] = ShardWriter(out_dir, split, args.shard_tokens, staging)
            writers[split].write(tokens)
            stats[split]["documents"] += docs
            stats[split]["tokens"] += len(tokens)
            stats[split]["text_bytes"] += nbytes
            progress.update(docs, nbytes)
        progress.close()
        if stats["val"]["documents"] + stats["train"]["documents"] != scan.documents:
            raise InputError("the input files changed while they were being read; run again")

        splits = {}
        for split, s in stats.items():
            text_tokens = s["tokens"] - s["documents"]  # without the BOS of each document
            splits[split] = {
                **s,
                "text_tokens": text_tokens,
                "bytes_per_token": round(s["text_bytes"] / text_tokens, 6) if text_tokens else None,
                "shards": writers[split].finish(),
            }
        manifest = {
            "name": args.name,
            "format": {
                "header": "256 little-endian int32: magic, version, number of tokens, then zeros",
                "magic": shard_format.MAGIC,
                "version": shard_format.VERSION,
                "tokens": "little-endian uint16",
                "documents": f"each document is BOS (id {BOS_ID}) followed by its tokens; no EOS",
            },
            "settings": settings,
            "inputs": inputs,
            "tokenizer": {
                "model": model_path.relative_to(root).as_posix(),
                "vocab": vocab_path.relative_to(root).as_posix(),
                "sha256": hashlib.sha256(model_proto).hexdigest(),
                "vocab_size": sp.get_piece_size(),
                **tokenizer_info,
            },
            "sentencepiece_version": spm.__version__,
            "splits": splits,
        }
        staging.write_bytes(out_dir / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
        staging.commit()  # renames: tokenizer files, shards, manifest.json last
    except BaseException:
        for writer in writers.values():
            writer.abort()
        staging.discard()
        raise

    for split, s in splits.items():
        print(
            f"{split}: {s['documents']:,} documents, {s['tokens']:,} tokens ({s['text_tokens']:,} without BOS), "
            f"{s['text_bytes']:,} bytes of text, {s['bytes_per_token']} bytes/token, {len(s['shards'])} shard(s)"
        )
    print(f"tokenizer: {model_path} sha256 {manifest['tokenizer']['sha256']}")
    print(f"wrote {out_dir} in {time.monotonic() - started:.1f} s with {workers} worker(s)")
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, same exit status as every other input error
        raise InputError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", action="append", required=True, metavar="PATH",
                   help=f"a {SUFFIX_TEXT} file, or a folder walked in sorted order; repeatable")
    p.add_argument("--output-root", required=True, metavar="DIR", help="writes DIR/datasets/NAME and DIR/tokenizers")
    p.add_argument("--name", required=True, help="dataset and tokenizer name, e.g. corpus_sp1024")
    p.add_argument("--vocab-size", type=int, required=True, help="tokenizer vocabulary size, e.g. 1024")
    p.add_argument("--val-docs", type=int, required=True, metavar="N",
                   help="the first N documents form the validation split")
    p.add_argument("--tokenizer", metavar="MODEL", help="reuse this SentencePiece model instead of training one")
    p.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS, help="tokens per shard at most")
    p.add_argument("--workers", type=int, default=None, help="encoding processes (default: all CPUs)")
    p.add_argument("--tokenizer-train-docs", type=int, default=None, metavar="M",
                   help=f"train the tokenizer on M evenly spaced training documents "
                        f"(default: every k-th, about {TOKENIZER_SAMPLE_BYTES // 1_000_000} MB of text)")
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the run is so that it cleans up as Ctrl-C does; exits 128 + the signal."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _terminate(signum, frame):
    raise Terminated(signum)


def main(argv: list[str] | None = None) -> int:
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return build(build_parser().parse_args(argv))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("interrupted: no output was finished", file=sys.stderr)
        return 128 + (exc.signum if isinstance(exc, Terminated) else signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
