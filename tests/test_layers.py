"""The module graph: layers that only point down, no cycle, no private name taken from another module, nothing read
from disk at import. Read from the source with `ast` (lazy imports inside functions count too)."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import congkit

PACKAGE = Path(congkit.__file__).parent
# lowest first; a module may import modules of its own layer or below, never above
LAYERS = [
    ["_extras", "code_key", "inputs", "plan", "provenance"],
    ["tokens", "models"],
    ["rewards"],
    ["decoding"],
    ["generation", "cache", "data", "distributed"],
    ["world", "scorers", "training", "trainers", "runner"],
    ["world_build", "cong"],
    ["measure", "methods"],
    ["evaluation", "derivation", "settings", "stages"],
    ["pipeline"],
    ["tables", "plots", "regime", "cli", "workers", "worlds"],
    ["study"],
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def imports(module: str) -> list[tuple[str, list[str]]]:
    """(imported congkit module, names taken from it) for every `from .x import ...` / `from congkit.x import ...`."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                out.append((node.module.split(".")[0], [a.name for a in node.names]))
            elif node.level == 1:  # from . import x, y
                out += [(a.name, []) for a in node.names]
            elif node.module and node.module.startswith("congkit."):
                out.append((node.module.split(".")[1], [a.name for a in node.names]))
    return out


def test_every_module_has_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules == set(LAYER), f"assign a layer to: {sorted(modules ^ set(LAYER))}"


def test_imports_point_down_and_take_no_private_names():
    upward, private = [], []
    for module in LAYER:
        for target, names in imports(module):
            if target in LAYER and LAYER[target] > LAYER[module]:
                upward.append(f"{module} -> {target}")
            private += [f"{module} takes {target}.{n}" for n in names if n.startswith("_")]
    assert not upward, upward
    assert not private, private


def test_the_study_imports_outside_a_checkout(tmp_path):
    """The package alone (as pip installs it: no book/, no notebooks/ beside it) imports every module."""
    shutil.copytree(PACKAGE, tmp_path / "congkit", ignore=shutil.ignore_patterns("__pycache__"))
    code = "import congkit, congkit.study, congkit.regime, congkit.pipeline, congkit.cong; print(congkit.__file__)"
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(tmp_path)})  # fmt: skip
    assert run.stdout.strip() == str(tmp_path / "congkit" / "__init__.py"), run.stderr


def test_no_class_is_over_200_lines():
    long = []
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 200:
                long.append(f"{path.stem}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long, long
