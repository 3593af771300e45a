"""Fingerprinted, atomically written artifacts: what makes every stage resumable.

An artifact lives in a folder named by a fingerprint of everything it depends on. It is built in a temporary sibling
folder and renamed into place only when complete (a rename within one filesystem is atomic), so a killed run leaves
at most a `*.tmp-*` folder that nothing reads, and a rerun with the same inputs finds the finished folder and reuses it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMPLETE = "_COMPLETE"


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in sorted(obj.items())}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    raise TypeError(f"cannot fingerprint a {type(obj).__name__}: {obj!r}")


def fingerprint(*parts: Any, length: int = 12) -> str:
    """Stable hex digest of JSON-able parts (dataclasses, dicts, lists, paths, scalars)."""
    blob = json.dumps([_jsonable(p) for p in parts], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def is_complete(path: str | os.PathLike) -> bool:
    return (Path(path) / COMPLETE).exists()


def build_once(path: str | os.PathLike, build: Callable[[Path], None], meta: dict | None = None) -> Path:
    """Run `build(tmp_dir)` unless `path` already holds a complete artifact; then move tmp_dir to `path` atomically.

    `meta` is written as `meta.json` beside the artifact (its configuration, for people reading the cache).
    """
    path = Path(path)
    if is_complete(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        build(tmp)
        if meta is not None:
            (tmp / "meta.json").write_text(json.dumps(_jsonable(meta), indent=2, sort_keys=True))
        (tmp / COMPLETE).write_text("")
        if path.exists():  # an incomplete leftover from an older layout: never trusted, replaced
            shutil.rmtree(path)
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
