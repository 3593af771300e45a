"""The default profile's committed reference results (`results/reference`): read, compared with a fresh run beyond
float noise, replaced only when asked (`--accept-new-reference`)."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from congkit.study.paths import REPO

REFERENCE = REPO / "results" / "reference"  # the committed results of the default profile: what the book shows


# each of them must be there; results.csv is every model's evaluation per seed, what claims 3-5 are computed from
REFERENCE_FILES = ("preconditions.csv", "verdicts.csv", "decomposition.csv", "results.csv")


def read_reference(reference: Path | None = None) -> dict:
    """The committed reference tables, {file name: DataFrame}. A missing, unreadable or empty one is an error naming
    it (checked before a run, so a run never ends in "matches" against tables that are not there)."""
    import pandas as pd

    tables, reference = {}, REFERENCE if reference is None else reference
    for name in REFERENCE_FILES:
        path = Path(reference) / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: reference table missing (restore it from git, or write a new reference "
                                    "with --accept-new-reference)")  # fmt: skip
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: not a readable CSV table ({str(error).splitlines()[0]})") from None
        if frame.empty:
            raise ValueError(f"{path}: the reference table has no rows")
        tables[name] = frame
    return tables


def compare_with_reference(run_dir: Path, reference: Path | None = None, tolerance: float = 1e-6) -> list[str]:
    """Each difference between a fresh run's result tables and the committed reference ones (`read_reference`) beyond
    float noise (numbers differing by more than `tolerance`, relative or absolute; any text or shape difference): []
    when the run matches. A table the run lacks is a difference."""
    import pandas as pd

    differences = []
    for name, want in read_reference(reference).items():
        got_file = Path(run_dir) / name
        if not got_file.exists():
            differences.append(f"{name}: missing from the run")
            continue
        got = pd.read_csv(got_file)
        if list(want.columns) != list(got.columns) or len(want) != len(got):
            differences.append(f"{name}: columns or rows differ ({list(got.columns)} x {len(got)} vs "
                               f"{list(want.columns)} x {len(want)})")  # fmt: skip
            continue
        for column in want.columns:
            a, b = want[column], got[column]
            if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
                close = np.isclose(a, b, rtol=tolerance, atol=tolerance, equal_nan=True)
            else:
                close = (a.astype(str) == b.astype(str)).to_numpy()
            for row in np.flatnonzero(~close):
                want_value, got_value = (x.iloc[row] for x in (a, b))
                differences.append(f"{name} row {row} {column}: reference {_plain(want_value)}, this run {_plain(got_value)}")
    return differences


def accept_new_reference(run_dir: Path, reference: Path | None = None) -> None:
    """Write the run's result tables as the new reference (each file atomically)."""
    reference = REFERENCE if reference is None else reference
    for name in REFERENCE_FILES:
        source = Path(run_dir) / name
        if not source.is_file():
            raise FileNotFoundError(f"{source}: the run wrote no such table; nothing was accepted")
    for name in REFERENCE_FILES:
        tmp = Path(reference) / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
        shutil.copyfile(Path(run_dir) / name, tmp)
        os.replace(tmp, Path(reference) / name)


def _plain(value) -> str:
    return repr(value.item() if hasattr(value, "item") else value)
