"""The light install: the library's modules import nothing from the pipeline's or the study's stacks, `import congkit`
imports nothing heavy at all, and the core dependencies say so."""

import subprocess
import sys

import tomllib

from congkit.study import REPO

# (scipy, accelerate and filelock are left out: transformers itself imports them when they are installed)
HEAVY = ("trl", "datasets", "pandas", "matplotlib", "papermill", "jupytext")


def _loaded(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(','.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.strip().split(","))


def test_import_congkit_is_lazy():
    loaded = _loaded("import congkit")
    assert "torch" not in loaded and "transformers" not in loaded


def test_library_modules_need_only_the_core():
    loaded = _loaded("import congkit; congkit.contrastive_generate, congkit.contrastive_decoding, congkit.implicit_reward;"
                     " import congkit.models, congkit.tokens")  # fmt: skip
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
    core = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {d.split(">")[0].split("<")[0].split("=")[0].strip() for d in core}
    assert names == {"torch", "transformers", "tokenizers", "numpy", "tqdm"}
