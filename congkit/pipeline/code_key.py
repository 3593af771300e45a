"""The code a cached result depends on, as part of its key: every congkit function and class a stage can run.

    code_key(stages.weak_samples, cong.contrastive_samples)   # -> "3f9a0c1b2d4e"

Starting from the given functions, the source's own references are followed: names in a function's module (and names
imported inside it), `module.name` attributes, `self.name` / `cls.name` inside a method (looked up on its class, so
inherited methods count), `p.name` where parameter `p` is annotated with a congkit class (looked up on that class), each congkit function or class reached, transitively, and the module-level constants of
plain data (numbers, strings, tuples, dicts) they read. Each piece enters the key as its syntax tree without
docstrings (comments are not in the tree), so an edit to a comment or a docstring changes no key, while an edit to
the judge, the CD step, a loss or a trainer wrapper changes the key of every stage that can reach it: those stages
rebuild, and the stages downstream of them with them (their keys hold the upstream artifacts' keys).

Why by reading the code: a version number per stage must be remembered at every edit of every function the stage
calls, and was not (an edited judge and an edited CD step reused stale results). What static reading cannot see, a
call through data (a recipe's `train` function, the setting's scorer object), is named by the caller: the strong
stage adds its recipe's function, the setting adds its scorer's class. It over-approximates (a function reachable
from a stage counts even on paths the stage never takes), which costs a rebuild, never a stale result.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import inspect
import json
import sys
import textwrap
import types

PACKAGE = __name__.split(".")[0]  # "congkit"
PLAIN = (int, float, str, bool, bytes, type(None))


def code_key(*roots, stop: frozenset = frozenset(), length: int = 12) -> str:
    """A digest of the code of `roots` (functions, methods, classes) and of every congkit function, class and plain
    constant they reach (this module's docstring), not following into `stop` (e.g. the entry points of other cached
    stages, whose artifacts enter a key by their own keys and contents)."""
    return hashlib.sha256(json.dumps(code_parts(*roots, stop=stop), sort_keys=True).encode()).hexdigest()[:length]


def code_parts(*roots, stop: frozenset = frozenset()) -> dict[str, str]:
    """{qualified name: normalised source (or a constant's repr)} of everything `code_key` covers."""
    parts: dict[str, str] = {}
    stack = list(roots)
    while stack:
        obj = stack.pop()
        obj = inspect.unwrap(obj) if isinstance(obj, types.FunctionType) else obj
        name = _name(obj)
        if name is None or name in parts or (obj in stop and obj not in roots):
            continue
        parts[name], found = _read(obj)
        stack.extend(found)
    return parts


def _is_ours(obj) -> bool:
    module = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
    return isinstance(module, str) and (module == PACKAGE or module.startswith(PACKAGE + "."))


def _name(obj) -> str | None:
    if isinstance(obj, (types.FunctionType, type)) and _is_ours(obj):
        return f"{obj.__module__}.{obj.__qualname__}"
    return None


@functools.cache
def _read(obj) -> tuple[str, tuple]:
    """(normalised source, the objects it references) of one congkit function or class."""
    if obj.__name__ == "<lambda>":
        return _read_lambda(obj)
    source = textwrap.dedent(inspect.getsource(obj))
    try:
        tree = ast.parse(source)
        defined = tree.body[0].name
    except (SyntaxError, IndexError, AttributeError):
        defined = None
    if defined != obj.__name__:  # the file was edited after this process imported it: keys must see loaded code
        raise RuntimeError(f"the source of {obj.__module__}.{obj.__qualname__} on disk no longer matches the code this "
                           "process loaded (edited while it ran?): start the run again")  # fmt: skip
    _drop_docstrings(tree)
    module = sys.modules[obj.__module__]
    owners = _owners(tree, obj, module)
    _drop_annotations(tree)  # type hints run no code: an edited hint changes no key, a hinted class is not followed
    found, constants = [], []
    for node in ast.walk(tree):
        for target in _resolve(node, module, owners):
            if _name(target) is not None:
                found.append(target)
            elif isinstance(target, tuple) and target and target[0] == "constant":
                constants.append(target[1])
    text = ast.dump(tree, annotate_fields=False) + "".join(sorted(set(constants)))
    return text, tuple(found)


def _read_lambda(function: types.FunctionType) -> tuple[str, tuple]:
    """A lambda's source cannot be parsed alone (`inspect` gives its whole line): its bytecode, constants and names
    stand for it, and the names it reads from its module are followed."""

    def describe(code: types.CodeType) -> str:
        consts = [describe(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
        return f"{code.co_code.hex()}|{code.co_names}|{consts}"

    module = sys.modules[function.__module__]
    found = [target for name in function.__code__.co_names if name in module.__dict__
             for target in _found(module.__dict__[name], f"{module.__name__}.{name}") if _name(target) is not None]
    return describe(function.__code__), tuple(found)


def _owners(tree: ast.AST, obj, module) -> dict[str, type]:
    """{name: class} for the names whose attributes are looked up on a congkit class: `self` and `cls` in a method
    (its class), and every parameter annotated with a congkit class (`run: Pipeline`)."""
    owners = {}
    head = obj.__qualname__.split(".")[0]
    candidate = obj if isinstance(obj, type) else getattr(module, head, None)
    if isinstance(candidate, type) and (isinstance(obj, type) or "." in obj.__qualname__):
        owners = {"self": candidate, "cls": candidate}
    function = tree.body[0] if isinstance(tree, ast.Module) and tree.body else None
    if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
        for arg in [*function.args.posonlyargs, *function.args.args, *function.args.kwonlyargs]:
            note = arg.annotation
            name = note.value if isinstance(note, ast.Constant) else note.id if isinstance(note, ast.Name) else None
            cls = module.__dict__.get(name) if isinstance(name, str) else None
            if isinstance(cls, type) and _is_ours(cls):
                owners[arg.arg] = cls
    return owners


def _resolve(node: ast.AST, module, owners: dict[str, type]):
    """The congkit objects (and constants, as ("constant", "name=repr")) one syntax node refers to."""
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in module.__dict__:
        yield from _found(module.__dict__[node.id], f"{module.__name__}.{node.id}")
    elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        base = node.value.id
        if base in owners:
            owner = owners[base]
            yield from _found(inspect.getattr_static(owner, node.attr, None), f"{owner.__qualname__}.{node.attr}")
        else:
            value = module.__dict__.get(base)
            if isinstance(value, types.ModuleType) and _is_ours(value) or isinstance(value, type) and _is_ours(value):
                yield from _found(getattr(value, node.attr, None), f"{base}.{node.attr}")
    elif isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith(PACKAGE)):
        package = module.__name__ if hasattr(module, "__path__") else module.__name__.rpartition(".")[0]
        try:
            source = importlib.import_module("." * node.level + (node.module or ""), package if node.level else None)
        except ImportError:
            return
        for alias in node.names:
            yield from _found(getattr(source, alias.name, None), f"{source.__name__}.{alias.name}")


def _found(value, label: str):
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, property):
        yield from (f for f in (value.fget, value.fset) if f is not None)
    elif isinstance(value, (types.FunctionType, type)) and _is_ours(value):
        yield value
    elif _is_constant_name(label) and _plain(value):  # UPPER_CASE module constants; other globals may change
        yield ("constant", f"{label}={value!r};")  # at run time (a worker handle), which no key may see


def _is_constant_name(label: str) -> bool:
    name = label.rpartition(".")[2]
    return name.upper() == name and any(c.isalpha() for c in name)


def _plain(value) -> bool:
    if isinstance(value, PLAIN):
        return True
    if isinstance(value, (tuple, list, frozenset)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(_plain(k) and _plain(v) for k, v in value.items())
    return False


def _drop_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]


def _drop_annotations(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.arg):
            node.annotation = None
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.returns = None
        elif isinstance(node, ast.AnnAssign) and node.value is not None:  # a hinted variable keeps its value
            node.annotation = ast.Constant(None)
