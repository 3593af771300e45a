"""Content-addressed, verified, concurrency-safe artifacts: what makes every stage resumable and trustworthy.

An artifact lives in a folder named by a fingerprint of what it depends on: the fingerprints (keys) of its upstream
artifacts, data hashes and settings, never the place where any of them lies, so a copied or moved runs folder reuses
everything. It is built in a temporary sibling folder and renamed into place only when complete (a rename within one
filesystem is atomic); a killed run leaves at most a `*.tmp-*` folder that nothing reads.

- **Verified.** Completing an artifact writes a manifest (`_COMPLETE`: every file's size and SHA-256); from then on the
  artifact is immutable: a file missing, changed or present but not in the manifest is a problem. Each time a
  cached artifact is reused, every file's size is checked and every file up to `HASH_LIMIT` bytes is hashed (the tiny
  world's models and every dataset, JSON and table: milliseconds); larger files (real checkpoints) are hashed by
  `python -m congkit.pipeline.cache verify RUNS`. A mismatch names the artifact and the file, and the artifact is rebuilt,
  never trusted.
- **Concurrency-safe.** Building takes a lock per artifact (`filelock`, a `.<name>.lock` file beside it): a second run
  that needs the same artifact waits, then reuses the first run's result. A completed, intact artifact is never
  deleted. Whoever holds the lock removes the `*.tmp-*` folders that dead runs left for that artifact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

COMPLETE = "_COMPLETE"  # the manifest; its presence marks a finished artifact
HASH_LIMIT = 64 * 2**20  # files up to this size are hashed every time the artifact is reused


class CorruptArtifactWarning(UserWarning):
    """A cached artifact failed verification and is being rebuilt."""


def _counts(field: dataclasses.Field, value: Any) -> bool:
    """Whether a dataclass field is part of a key: not when marked {"cache": False}; when marked {"cache":
    "unless default"}, only at a value other than its default (a field added later leaves older keys as they were)."""
    rule = field.metadata.get("cache", True)
    return rule is True or (rule == "unless default" and value != field.default)


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if _counts(f, getattr(obj, f.name))}  # fmt: skip
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in sorted(obj.items())}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    raise TypeError(f"cannot fingerprint a {type(obj).__name__}: {obj!r}")


def cache_view(obj: Any) -> Any:
    """`obj` as the JSON-able value a cache key holds (dataclass fields marked `metadata={"cache": False}`, which do
    not change an artifact, left out; those marked {"cache": "unless default"} left out at their default)."""
    return _jsonable(obj)


def fingerprint(*parts: Any, length: int = 12) -> str:
    """Stable hex digest of JSON-able parts (dataclasses, dicts, lists, paths, scalars)."""
    blob = json.dumps([_jsonable(p) for p in parts], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def file_sha256(path: str | os.PathLike, chunk: int = 2**20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != COMPLETE)


def write_manifest(folder: str | os.PathLike) -> dict:
    """Record every file's size and SHA-256 in `folder/_COMPLETE` (marks the artifact complete)."""
    folder = Path(folder)
    files = {str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": file_sha256(p)} for p in _files(folder)}
    manifest = {"version": 1, "files": files}
    (folder / COMPLETE).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def is_complete(path: str | os.PathLike) -> bool:
    """True when `path` holds a finished artifact (a manifest is present; see `verify` for whether it is intact)."""
    return (Path(path) / COMPLETE).exists()


_VERIFIED: dict[str, tuple] = {}  # artifact -> the (name, size, mtime) of its files when this process last hashed them


def _stat_signature(path: Path, files: dict) -> tuple:
    return tuple((rel, st.st_size, st.st_mtime_ns) for rel in sorted(files) if (st := _stat(path / rel)) is not None)


def _stat(file: Path):
    try:
        return file.stat()
    except OSError:
        return None


def verify(path: str | os.PathLike, full: bool = False) -> list[str]:
    """Problems found in a complete artifact, one line each naming the file ([] = intact).

    Sizes are always checked; hashes for files up to `HASH_LIMIT` bytes, or for every file when `full`. An artifact
    that this process hashed before is not hashed again while no file's size or modification time has changed.
    """
    path = Path(path)
    try:
        manifest = json.loads((path / COMPLETE).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return [f"{path / COMPLETE}: unreadable manifest ({error})"]
    present = {str(p.relative_to(path)) for p in _files(path)}
    signature = _stat_signature(path, files)
    if not full and present == set(files) and len(signature) == len(files) and _VERIFIED.get(str(path)) == signature:
        return []
    # a finished artifact is immutable: a file that appeared after its manifest was written is a problem too
    problems = [f"{path / rel}: not in the manifest (written after the artifact was finished)"
                for rel in sorted(present - set(files))]  # fmt: skip
    for rel, want in files.items():
        file = path / rel
        if not file.is_file():
            problems.append(f"{file}: missing")
            continue
        size = file.stat().st_size
        if size != want["size"]:
            problems.append(f"{file}: {size} bytes, the manifest says {want['size']}")
        elif (full or size <= HASH_LIMIT) and file_sha256(file) != want["sha256"]:
            problems.append(f"{file}: contents changed (SHA-256 differs from the manifest)")
    if not problems:
        _VERIFIED[str(path)] = signature
    return problems


def artifact_digest(path: str | os.PathLike, length: int = 12) -> str | None:
    """A digest of a complete artifact's contents (its manifest's file hashes), or None if `path` is not one: how
    a downstream key names an upstream artifact's bytes, so a rebuilt artifact with other bytes changes the keys
    that depend on it, while a copied or moved one does not."""
    try:
        files = json.loads((Path(path) / COMPLETE).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return fingerprint({rel: entry["sha256"] for rel, entry in files.items()}, length=length)


def folder_fingerprint(path: str | os.PathLike, length: int = 12) -> str:
    """A digest of a folder's contents, not of where it lies (e.g. a checkpoint folder given by path): every file's
    relative name and size, the SHA-256 of files up to `HASH_LIMIT` bytes and, for larger ones (multi-GB weights),
    of their first and last MiB. Read from the files themselves: a manifest found there is not trusted."""
    path = Path(path)
    parts = []
    for file in _files(path):
        size = file.stat().st_size
        if size <= HASH_LIMIT:
            content = file_sha256(file)
        else:
            with open(file, "rb") as f:
                head = f.read(2**20)
                f.seek(size - 2**20)
                content = hashlib.sha256(head + f.read()).hexdigest()
        parts.append((str(file.relative_to(path)), size, content))
    return fingerprint(parts, length=length)


def lock_for(path: str | os.PathLike) -> FileLock:
    path = Path(path)
    return FileLock(str(path.parent / f".{path.name}.lock"))


def _remove(folder: Path) -> None:
    """Move `folder` aside (atomic), then delete it: no reader ever sees a half-deleted artifact at `folder`."""
    trash = folder.parent / f"{folder.name}.tmp-trash-{uuid.uuid4().hex[:8]}"
    os.replace(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def build_once(
    path: str | os.PathLike, build: Callable[[Path], None], meta: dict | None = None, label: str | None = None
) -> Path:
    """Reuse the intact artifact at `path`, or run `build(tmp_dir)` and move tmp_dir to `path` atomically.

    `meta` is written as `meta.json` beside the artifact's files (its configuration, for people reading the cache);
    `label` names the artifact in messages (default: its path). A corrupt artifact is rebuilt with a warning that
    names it and the files that failed.
    """
    path = Path(path)
    label = label or str(path)
    if is_complete(path) and not verify(path):
        return path
    if path.is_symlink() and not path.exists():  # a link to nothing holds no artifact (and would fail the final rename)
        warnings.warn(f"{label}: {path} is a symbolic link to nothing ({os.readlink(path)}); removing the link and "
                      "building the artifact", CorruptArtifactWarning, stacklevel=2)  # fmt: skip
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    with lock_for(path):
        for stale in path.parent.glob(f"{path.name}.tmp-*"):  # we hold the lock: these belong to dead runs
            shutil.rmtree(stale, ignore_errors=True)
        if path.exists():
            if is_complete(path):
                problems = verify(path)
                if not problems:  # another run finished it while we waited for the lock
                    return path
                warnings.warn(f"{label}: cached artifact is corrupt, rebuilding it: {'; '.join(problems)}",
                              CorruptArtifactWarning, stacklevel=2)  # fmt: skip
            _remove(path)  # corrupt, or an unfinished leftover from an older layout: never trusted
        tmp = path.parent / f"{path.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir()
            build(tmp)
            if meta is not None:
                (tmp / "meta.json").write_text(json.dumps(_jsonable(meta), indent=2, sort_keys=True))
            write_manifest(tmp)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(_jsonable(obj), indent=2))
    os.replace(tmp, path)


def write_csv_atomic(frame, path: str | os.PathLike) -> None:
    """A pandas DataFrame as CSV, written to a temporary sibling and renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def swap_in(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Replace the folder `target` by `new` with two renames; the old one is deleted only once `new` is in place."""
    new, target = Path(new), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def read_json(path: str | os.PathLike) -> Any:
    """json.load of a file; an unreadable or malformed file raises an error that names it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


def manifests(root: str | os.PathLike) -> list[Path]:
    """The manifest of every complete artifact below `root`: a `_COMPLETE` file inside an artifact's own files (a
    stray copy) marks no artifact of its own."""
    found = sorted(Path(root).rglob(COMPLETE))
    artifacts = {m.parent for m in found}
    return [m for m in found if m.is_file() and not any(parent in artifacts for parent in m.parent.parents)]


def verify_tree(root: str | os.PathLike, full: bool = True) -> dict[str, list[str]]:
    """Verify every complete artifact below `root`: {artifact folder: problems} for the ones that fail."""
    bad = {}
    for manifest in manifests(root):
        problems = verify(manifest.parent, full=full)
        if problems:
            bad[str(manifest.parent)] = problems
    return bad


def artifacts(root: str | os.PathLike) -> list[dict]:
    """Every complete artifact below `root`, as {folder, stage, summary, files, bytes, intact}: what
    `python -m congkit.pipeline.cache ls` prints (the summary comes from the artifact's meta.json)."""
    rows = []
    for manifest in manifests(root):
        folder = manifest.parent
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except (OSError, ValueError):
            meta = {}
        meta = meta if isinstance(meta, dict) else {}  # e.g. a JSON list: no summary, still listed
        files = _files(folder)
        rows.append({"folder": str(folder.relative_to(root)), "stage": meta.get("stage", folder.parent.name),
                     "summary": meta.get("summary", ""), "files": len(files),
                     "bytes": sum(f.stat().st_size for f in files), "intact": not verify(folder)})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    """`python -m congkit.pipeline.cache verify RUNS`: hash every file of every artifact (and find files no manifest lists);
    exit 1 if any fails. `python -m congkit.pipeline.cache ls RUNS`: every artifact, what it is, its size."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m congkit.pipeline.cache", description=main.__doc__)
    parser.add_argument("command", choices=["verify", "ls"])
    parser.add_argument("root", help="a runs folder")
    args = parser.parse_args(argv)
    if not Path(args.root).is_dir():
        parser.error(f"{args.root!r} is not a folder")
    if args.command == "ls":
        for row in artifacts(args.root):
            flag = "" if row["intact"] else "  CORRUPT"
            print(f"{row['folder']}  {row['summary'] or row['stage']}  ({row['files']} files, "
                  f"{row['bytes'] / 2**20:.1f} MiB){flag}")  # fmt: skip
        return 0
    n = len(manifests(args.root))
    bad = verify_tree(args.root)
    for folder, problems in bad.items():
        print(f"CORRUPT {folder}", *(f"  {p}" for p in problems), sep="\n")
    print(f"{n - len(bad)} of {n} artifacts intact")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
