"""Where the checkout's folders are (the repository root, the default runs folder) and its chapters, in book order."""

from __future__ import annotations

import functools
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


DEFAULT_RUNS = REPO / "runs"


@functools.cache
def chapters(toc: Path = REPO / "book" / "_toc.yml") -> tuple[str, ...]:
    """The notebook chapters in book order (`notebooks/<name>` entries of the book's table of contents), read on
    first use (not at import: `import congkit.study` works outside a checkout)."""
    import yaml

    if not toc.exists():
        raise FileNotFoundError(f"{toc}: the book's table of contents is not here; the study runs from a checkout "
                                "of the congkit repository")  # fmt: skip
    data = yaml.safe_load(toc.read_text())
    files = [data["root"]] + [c["file"] for c in data.get("chapters", [])]
    return tuple(f"{Path(f).name}.md" for f in files if f.startswith("notebooks/"))
