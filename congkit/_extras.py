"""Which optional extra provides which third-party package, and an import hook that says so.

Why a hook: `congkit.pipeline.stages`, `congkit.pipeline.evaluation` and a dozen other modules import packages of the `train` or `study`
extra; without them Python says only `No module named 'pandas'`. The hook (a `sys.meta_path` finder for congkit's own
submodules) re-raises that error with the extra to install, however the module was imported (`import congkit.pipeline.stages`,
`congkit.Pipeline`, `python -m congkit.pipeline.cli`). Nothing else is changed.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

EXTRA_OF = {
    **dict.fromkeys(["trl", "datasets", "accelerate", "filelock", "pandas", "scipy"], "train"),
    **dict.fromkeys(["matplotlib", "papermill", "jupytext", "ipykernel", "jupyter_book", "sphinx", "yaml"], "study"),
}


def missing_extra(error: ModuleNotFoundError, module: str) -> ModuleNotFoundError | None:
    """The error to raise when importing `module` failed because a package of an extra is missing (else None)."""
    package = (error.name or "").split(".")[0]
    if package not in EXTRA_OF or "congkit[" in str(error):
        return None
    extra = EXTRA_OF[package]
    return ModuleNotFoundError(f"{module} needs {package!r}, which is in congkit's '{extra}' extra: "
                               f"pip install 'congkit[{extra}]'", name=error.name)  # fmt: skip


class ExtrasHint(importlib.abc.MetaPathFinder):
    """Finds congkit's submodules as the normal path finder does; their execution re-raises a missing extra's
    `ModuleNotFoundError` with the extra's name (`missing_extra`)."""

    def find_spec(self, fullname, path, target=None):
        if not fullname.startswith("congkit.") or path is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec
        exec_module = spec.loader.exec_module

        def exec_with_hint(module):
            try:
                exec_module(module)
            except ModuleNotFoundError as error:
                hinted = missing_extra(error, fullname)
                if hinted is None:
                    raise
                raise hinted from error

        spec.loader.exec_module = exec_with_hint  # this module's own loader instance
        return spec


def install() -> None:
    if not any(isinstance(f, ExtrasHint) for f in sys.meta_path):
        sys.meta_path.insert(0, ExtrasHint())
