"""The competition's token shard format and file names, shared by prepare_local.py and
cached_challenge_fineweb.py.

A shard is a header of 256 little-endian int32 (header[0] = 20240520 magic, header[1] = 1 version,
header[2] = number of tokens, the rest 0) followed by the tokens as little-endian uint16.
Standard library only, so the downloader needs neither numpy nor sentencepiece.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_BYTES = 2
MAX_TOKENS = 2**31 - 1  # header[2] is an int32

_HEADER = struct.Struct(f"<{HEADER_INTS}i")


def shard_prefix(split: str) -> str:
    """What every shard file of a split ("train" or "val") starts with: the trainers glob PREFIX*.bin."""
    return f"fineweb_{split}_"


def shard_name(split: str, index: int) -> str:
    """The file name of a split's index-th shard, e.g. fineweb_val_000000.bin."""
    return f"{shard_prefix(split)}{index:06d}.bin"


def shard_bytes(num_tokens: int) -> int:
    """The size of a shard holding num_tokens tokens."""
    return HEADER_BYTES + TOKEN_BYTES * num_tokens


def temp_path(final: Path, pid: int | str | None = None) -> Path:
    """A hidden temporary name beside final, which no glob for finished files matches (both data tools
    write under it and rename into place); of this process unless pid is given ("*": a glob pattern for any)."""
    return final.with_name(f".{final.name}.tmp-{os.getpid() if pid is None else pid}")


class ShardError(ValueError):
    """A file that is not a well-formed token shard."""


def shard_header(num_tokens: int) -> bytes:
    """The 1024-byte header of a shard holding num_tokens tokens."""
    if not 0 <= num_tokens <= MAX_TOKENS:
        raise ValueError(f"a shard holds 0..{MAX_TOKENS} tokens, not {num_tokens}")
    return _HEADER.pack(MAGIC, VERSION, num_tokens, *([0] * (HEADER_INTS - 3)))


def check_shard(path: str | os.PathLike, label: str | None = None) -> int:
    """Check a shard's header against its size; return its number of tokens or raise ShardError.

    The rule: magic 20240520, version 1, and file size == 1024 + 2 * header[2]. Messages name
    the file as label (default: path).
    """
    name = path if label is None else label
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
    except OSError as exc:
        raise ShardError(f"{name}: cannot read ({exc.strerror or exc})") from None
    if len(head) < HEADER_BYTES:
        raise ShardError(f"{name}: {size} bytes, shorter than the {HEADER_BYTES}-byte shard header")
    magic, version, num_tokens = _HEADER.unpack(head)[:3]
    if magic != MAGIC:
        raise ShardError(f"{name}: magic {magic}, expected {MAGIC} (not a token shard)")
    if version != VERSION:
        raise ShardError(f"{name}: version {version}, expected {VERSION}")
    expected = shard_bytes(num_tokens)
    if num_tokens < 0 or size != expected:
        raise ShardError(
            f"{name}: {size} bytes, but its header says {num_tokens} tokens ({expected} bytes): "
            "truncated or damaged"
        )
    return num_tokens
