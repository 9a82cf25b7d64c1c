#!/usr/bin/env python3
"""Download the competition's tokenized FineWeb shards and tokenizer from Hugging Face.

    python3 data/cached_challenge_fineweb.py --variant sp1024 --train-shards 10

Reads the export's manifest (REMOTE_ROOT/manifest.json in the dataset repo), then fetches every
validation shard and the first N training shards of dataset fineweb10B_<variant>, and its
tokenizer files, into this folder's layout:

    data/datasets/fineweb10B_sp1024/fineweb_val_000000.bin ...  fineweb_train_000000.bin ...
    data/tokenizers/fineweb_1024_bpe.model (and .vocab where the manifest lists it)
    data/manifest.json                      the export's manifest

Dataset repo: willdepueoai/parameter-golf (env MATCHED_FINEWEB_REPO_ID overrides); root folder in
it: datasets (env MATCHED_FINEWEB_REMOTE_ROOT_PREFIX overrides). Files already present and valid
are skipped; each shard is checked (header and size) after download and only then renamed into
place. Without network, data/prepare_local.py builds the same layout from local documents.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path, PurePosixPath
from typing import NamedTuple

try:  # imported as part of a package (data.cached_challenge_fineweb)
    from . import shard_format
except ImportError:  # run as a script, or imported with data/ on sys.path
    import shard_format

DEFAULT_REPO_ID = "willdepueoai/parameter-golf"
DEFAULT_REMOTE_ROOT = "datasets"
DATA_ROOT = Path(__file__).resolve().parent
LOCAL_HINT = "without network, data/prepare_local.py builds the same layout from local documents"
_TOKENIZER_KEYS = ("model_path", "vocab_path", "path", "model", "vocab", "file", "files")
_NOT_FOUND = {"EntryNotFoundError", "RemoteEntryNotFoundError", "RepositoryNotFoundError", "RevisionNotFoundError"}


class FetchError(Exception):
    """A problem reported as one "error: ..." line, exit status 2."""


class ManifestError(FetchError):
    """The manifest does not list what was asked for."""


class DownloadError(FetchError):
    """A file could not be fetched (no network, missing file, damaged download)."""


class Fetch(NamedTuple):
    remote: str  # path inside the dataset repo
    local: Path


# ----------------------------------------------------------------------------- manifest logic (pure)


def dataset_name(variant: str) -> str:
    return f"fineweb10B_{variant}"


def default_tokenizer_file(variant: str) -> str | None:
    match = re.fullmatch(r"sp(\d+)", variant)
    return f"fineweb_{match.group(1)}_bpe.model" if match else None


def _entries(section) -> list[dict]:
    """A manifest section (a list, or a dict keyed by name) as a list of dicts with a "name"."""
    if isinstance(section, dict):
        section = [
            {"name": key, **value} if isinstance(value, dict) else {"name": key, "path": value}
            for key, value in section.items()
        ]
    if not isinstance(section, list):
        return []
    return [e if isinstance(e, dict) else {"name": PurePosixPath(str(e)).name, "path": str(e)} for e in section]


def _safe_relative(path) -> str | None:
    """path as a clean relative POSIX path, or None when absolute, empty or climbing out with '..'."""
    if not isinstance(path, str) or not path.strip():
        return None
    p = PurePosixPath(path.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts:
        return None
    return p.as_posix()


def _join(*parts: str) -> str:
    return "/".join(part.strip("/") for part in parts if part and part.strip("/"))


def _file_name(item) -> str | None:
    if isinstance(item, dict):
        item = item.get("file") or item.get("name") or item.get("path")
    return PurePosixPath(item).name if isinstance(item, str) and item else None


def _shard_count(entry: dict, split: str) -> int | None:
    for source in (entry, entry.get("stats") if isinstance(entry.get("stats"), dict) else {}):
        for key in (f"{split}_shards", f"files_{split}", f"num_{split}_shards"):
            value = source.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


def shard_names(entry: dict, split: str) -> list[str]:
    """The split's shard file names, sorted: from explicit file lists, else from a shard count."""
    for key in (f"{split}_files", f"{split}_shards"):
        if isinstance(entry.get(key), list):
            return sorted(n for n in map(_file_name, entry[key]) if n)
    for key in ("files", "shards"):
        if isinstance(entry.get(key), list):
            prefix = shard_format.shard_prefix(split)
            return sorted(n for n in map(_file_name, entry[key]) if n and n.startswith(prefix))
    count = _shard_count(entry, split)
    if count is None:
        raise ManifestError(
            f"the manifest's entry for {entry.get('name')} gives neither {split}_shards / stats.files_{split} "
            f"nor a list of {split} files"
        )
    return [shard_format.shard_name(split, i) for i in range(count)]


def find_dataset(manifest: dict, variant: str) -> dict:
    entries = _entries(manifest.get("datasets"))
    name = dataset_name(variant)
    found = [e for e in entries if e.get("name") == name] or [e for e in entries if e.get("variant") == variant]
    if len(found) != 1:
        listed = ", ".join(str(e.get("name")) for e in entries) or "none"
        raise ManifestError(f"the manifest lists no dataset {name} for --variant {variant} (it lists: {listed})")
    return found[0]


def tokenizer_paths(manifest: dict, entry: dict, variant: str) -> list[str]:
    """Repo-relative paths (under the remote root) of the dataset's tokenizer files."""
    tokenizers = _entries(manifest.get("tokenizers"))
    wanted = entry.get("tokenizer_name") or entry.get("tokenizer")
    default = default_tokenizer_file(variant)

    def files_of(tok: dict) -> list[str]:
        values = []
        for key in _TOKENIZER_KEYS:
            value = tok.get(key)
            values.extend(value if isinstance(value, list) else [value])
        return list(dict.fromkeys(v for v in values if isinstance(v, str) and v))

    tok = next((t for t in tokenizers if isinstance(wanted, str) and t.get("name") == wanted), None)
    if tok is None and default:
        tok = next((t for t in tokenizers if default in {PurePosixPath(p).name for p in files_of(t)}), None)
    paths = files_of(tok) if tok is not None else []
    if not paths:
        if isinstance(wanted, str) and PurePosixPath(wanted).suffix in {".model", ".json"}:
            paths = [wanted]
        elif default:
            paths = [default]
        else:
            raise ManifestError(f"the manifest names no tokenizer file for {dataset_name(variant)}")
    # Keep a listed relative folder ("tokenizers/x.model"); a bare or absolute name goes under tokenizers/.
    return [
        rel if rel and len(PurePosixPath(rel).parts) > 1 else _join("tokenizers", PurePosixPath(p).name)
        for p, rel in ((p, _safe_relative(p)) for p in paths)
    ]


def plan_downloads(manifest: dict, variant: str, train_shards: int, remote_root: str, data_root: Path) -> list[Fetch]:
    """What to fetch for a variant: every val shard, the first train_shards train shards, the tokenizer."""
    if not isinstance(manifest, dict):
        raise ManifestError("the manifest is not a JSON object")
    if train_shards < 0:
        raise ManifestError(f"--train-shards {train_shards}: expected 0 or more")
    entry = find_dataset(manifest, variant)
    name = entry["name"]
    folder = _safe_relative(entry.get("path"))
    if folder is None or PurePosixPath(folder).name != name:
        folder = _join("datasets", name)
    val = shard_names(entry, "val")
    train = shard_names(entry, "train")
    if not val:
        raise ManifestError(f"the manifest lists no validation shards for {name}")
    if train_shards > len(train):
        raise ManifestError(f"--train-shards {train_shards}: the manifest lists only {len(train)} train shards for {name}")
    local_dir = Path(data_root) / "datasets" / name
    plan = [Fetch(_join(remote_root, folder, f), local_dir / f) for f in val + train[:train_shards]]
    for rel in tokenizer_paths(manifest, entry, variant):
        plan.append(Fetch(_join(remote_root, rel), Path(data_root) / "tokenizers" / PurePosixPath(rel).name))
    return plan


# ----------------------------------------------------------------------------- fetching


def download_file(repo_id: str, remote: str, dest: Path) -> None:
    """The one network call: fetch `remote` from the Hugging Face dataset repo_id into dest."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise DownloadError("huggingface_hub is not installed (pip install huggingface_hub)") from None
    try:  # the hub logs each retry as a warning; the error below says it once
        from huggingface_hub.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except (ImportError, AttributeError):
        pass
    try:
        cached = Path(hf_hub_download(repo_id=repo_id, filename=remote, repo_type="dataset")).resolve()
    except Exception as exc:  # network, authentication, missing file: all end the run the same way
        kind = type(exc).__name__
        if kind in _NOT_FOUND:
            raise DownloadError(f"{remote} was not found in Hugging Face dataset {repo_id} ({kind})") from None
        reason = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:160]
        raise DownloadError(
            f"could not reach Hugging Face dataset {repo_id} to fetch {remote} ({kind}: {reason})"
        ) from None
    try:
        os.link(cached, dest)  # the hub's cache holds the blob; a hard link costs no space
    except OSError:
        shutil.copyfile(cached, dest)


def is_shard(path: Path) -> bool:
    return path.suffix == ".bin"


def check_file(path: Path, final: Path, label: str) -> None:
    """Raise when path is not a usable copy of final: shards by header and size, others non-empty."""
    if is_shard(final):
        shard_format.check_shard(path, label)
    elif path.stat().st_size == 0:
        raise shard_format.ShardError(f"{label}: empty file")
    elif final.suffix == ".json":
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise shard_format.ShardError(f"{label}: not valid JSON") from None


def is_present(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        check_file(path, path, str(path))
    except (shard_format.ShardError, OSError):
        return False
    return True


def fetch(repo_id: str, item: Fetch) -> None:
    """Download item into place: a temporary name, checked, then renamed."""
    item.local.parent.mkdir(parents=True, exist_ok=True)
    temp = shard_format.temp_path(item.local)
    try:
        download_file(repo_id, item.remote, temp)
        try:
            check_file(temp, item.local, f"downloaded {item.remote}")
        except shard_format.ShardError as exc:
            raise DownloadError(f"{exc}: a damaged or incomplete download, run again") from None
        os.replace(temp, item.local)
    finally:
        temp.unlink(missing_ok=True)


def run(variant: str, train_shards: int, data_root: Path, repo_id: str, remote_root: str) -> int:
    data_root = Path(data_root)
    manifest_item = Fetch(_join(remote_root, "manifest.json"), data_root / "manifest.json")
    if not is_present(manifest_item.local):
        fetch(repo_id, manifest_item)
    try:
        manifest = json.loads(manifest_item.local.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{manifest_item.local}: cannot read the manifest ({exc})") from None
    plan = plan_downloads(manifest, variant, train_shards, remote_root, data_root)
    fetched = 0
    for item in plan:
        if is_present(item.local):
            continue
        fetch(repo_id, item)
        fetched += 1
        print(f"fetched {item.remote} -> {item.local}", flush=True)
    shards = sum(is_shard(item.local) for item in plan)
    print(
        f"{dataset_name(variant)}: {shards - train_shards} val + {train_shards} train shards and "
        f"{len(plan) - shards} tokenizer file(s) in {data_root} ({fetched} downloaded, {len(plan) - fetched} already present)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="sp1024", help="tokenizer variant: dataset fineweb10B_<variant> (default sp1024)")
    p.add_argument("--train-shards", type=int, default=1, metavar="N", help="fetch the first N train shards (default 1)")
    p.add_argument("--data-root", type=Path, default=DATA_ROOT, help="local data folder (default: this script's folder)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    repo_id = os.environ.get("MATCHED_FINEWEB_REPO_ID") or DEFAULT_REPO_ID
    remote_root = os.environ.get("MATCHED_FINEWEB_REMOTE_ROOT_PREFIX", DEFAULT_REMOTE_ROOT)
    try:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", args.variant):
            raise ManifestError(f"--variant {args.variant!r}: expected a name such as sp1024")
        return run(args.variant, args.train_shards, args.data_root, repo_id, remote_root)
    except DownloadError as exc:
        print(f"error: {exc}; {LOCAL_HINT}", file=sys.stderr)
        return 2
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
