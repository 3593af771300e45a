"""Datasets: saved ones loaded into memory, their content keys, and prompt sets for real checkpoints (a `datasets`
dataset from a local folder or a hub id, reduced to a prompt column)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from datasets import Dataset, DatasetDict, Features, load_dataset, load_from_disk

from congkit.pipeline.cache import fingerprint


def content_key(ds: Dataset) -> str:
    """A fingerprint of a dataset's contents (in-memory datasets get random `_fingerprint`s; this is stable)."""
    return fingerprint(ds.to_dict())


def load_saved_dataset(path: str | os.PathLike) -> Dataset:
    """`load_from_disk` of a saved dataset, into memory (nothing is ever written into its folder); a missing or
    unreadable folder raises an error that names it."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no saved dataset here (folder not found)")
    try:
        state = json.loads((path / "state.json").read_text()) if (path / "state.json").exists() else None
        if state is not None and state.get("_data_files") == []:  # a saved empty dataset: datasets' loader fails
            info = json.loads((path / "dataset_info.json").read_text())
            features = Features.from_dict(info["features"])
            return Dataset.from_dict({name: [] for name in features}, features=features)
        # in memory: a `map` or `filter` on it (TRL's tokenisation) then writes no cache-*.arrow file into the
        # folder, which may be a finished, verified artifact
        return load_from_disk(str(path), keep_in_memory=True)
    except Exception as error:  # datasets raises FileNotFoundError, JSONDecodeError, ArrowInvalid, ...
        raise ValueError(f"{path}: cannot read the saved dataset ({type(error).__name__}: {error})") from error


def load_prompts(source: str | os.PathLike, split: str, column: str = "prompt", limit: int | None = None) -> Dataset:
    """Prompts (column "prompt") from `source`: a `save_to_disk` folder, a data file/folder, or a hub dataset id.

    A chat-format column (a list of messages) is reduced to its first user message. Raises a clear error for an
    unreachable id (offline), a missing split or column, or an empty result.
    """
    path = Path(source)
    try:
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            ds = load_from_disk(str(path), keep_in_memory=True)  # the map below writes nothing into the folder
        elif path.exists():
            ds = load_dataset(str(path))
        else:
            ds = load_dataset(str(source))
    except Exception as error:  # datasets raises several types for "not reachable / not found"
        raise OSError(
            f"cannot load prompt dataset {str(source)!r}: not a local folder and not resolvable from the hub "
            f"(offline or unknown id). Save it with `save_to_disk` where the hub is reachable and pass the folder. ({error})"
        ) from error
    if isinstance(ds, DatasetDict):
        if split not in ds:
            raise ValueError(f"prompt dataset {str(source)!r} has no split {split!r}; it has {list(ds)}")
        ds = ds[split]
    if column not in ds.column_names:
        raise ValueError(f"prompt dataset {str(source)!r} has no column {column!r}; it has {ds.column_names}")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))

    def to_text(row):
        value = row[column]
        if isinstance(value, list):
            value = next((m["content"] for m in value if m.get("role") == "user"), "")
        return {"prompt": value}

    ds = ds.map(to_text, remove_columns=ds.column_names)
    ds = ds.filter(lambda row: bool(row["prompt"] and row["prompt"].strip()))
    if len(ds) == 0:
        raise ValueError(f"prompt dataset {str(source)!r} split {split!r} holds no non-empty prompt")
    return ds
