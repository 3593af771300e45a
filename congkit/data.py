"""Prompt sets for real checkpoints: a `datasets` dataset from a local folder or a hub id, reduced to a prompt column."""

from __future__ import annotations

import os
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk


def load_prompts(source: str | os.PathLike, split: str, column: str = "prompt", limit: int | None = None) -> Dataset:
    """Prompts (column "prompt") from `source`: a `save_to_disk` folder, a data file/folder, or a hub dataset id.

    A chat-format column (a list of messages) is reduced to its first user message. Raises a clear error for an
    unreachable id (offline), a missing split or column, or an empty result.
    """
    path = Path(source)
    try:
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            ds = load_from_disk(str(path))
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
