"""The cached runner: a graph of nodes that declare themselves where they are defined, run once per arguments.

    @node(stage=True)                              # an artifact on disk, keyed, verified on reuse
    def weak_aligned(pipe: Pipeline, seed: int, eps: float) -> str:
        pairs = pipe.weak_preferences(seed, eps)    # another node: computed once per run, whoever asks
        return pipe.train("weak_aligned", {...}, seed, lambda work, save: cong.dpo(...))

`pipe.<name>(*args)` calls node `name` once per arguments within a run (the memo) and returns the same object after;
a `stage=True` node's artifact also lies on disk under `root/<name>/<key>/`, written atomically and reused across
runs (`congkit.pipeline.cache.build_once`). A stage's key holds exactly what its artifact depends on: the setting, the
stage's code (`stage_code`: the node's function and every congkit function and constant it can reach, up to the
other nodes, whose outputs enter keys by their own keys and contents, `congkit.pipeline.code_key`), its settings
(`cache_view`), data by content and models by their artifact's key and digest, never by the path where they lie.

Why by hand: the graph is small and its keys must see congkit's code; a workflow engine (Snakemake, Hamilton,
Dagster) keys by file timestamps or by declared inputs, not by the code a Python function can reach.
"""

from __future__ import annotations

import functools
import inspect
import json
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset
from transformers import set_seed

from congkit.decoding import DecodingConfig
from congkit.models import load_causal_lm, load_tokenizer
from congkit.pipeline.cache import artifact_digest, build_once, fingerprint, folder_fingerprint
from congkit.pipeline.code_key import code_key, code_parts
from congkit.pipeline.data import content_key, load_saved_dataset
from congkit.rewards import check_same_vocab
from congkit.tokens import has_chat_template


@dataclass(frozen=True)
class Node:
    """One node of the graph: `fn(pipe, *args)`; `stage`: its result is an artifact on disk (then `version` enters its
    key: bump it only for a change outside congkit's code, which `stage_code` cannot see)."""

    name: str
    fn: Callable
    stage: bool = False
    version: int = 1


NODES: dict[str, Node] = {}  # the one registry of nodes, filled where each is defined


def node(fn: Callable | None = None, *, stage: bool = False, version: int = 1, name: str | None = None):
    """Declare `fn(pipe, *args)` a node named `name` (default: the function's name); as a decorator, with or without
    arguments. A second node of the same name raises."""

    def declare(f: Callable) -> Callable:
        label = name or f.__name__
        if label in NODES and NODES[label].fn.__qualname__ != f.__qualname__:
            raise ValueError(f"node {label!r} is declared twice ({NODES[label].fn.__module__} and {f.__module__})")
        NODES[label] = Node(label, f, stage, version)
        return f

    return declare(fn) if fn is not None else declare


def declared(name: str) -> Node:
    """The node named `name`; an unknown name raises, naming the declared ones."""
    if name not in NODES:
        raise KeyError(f"no node {name!r} is declared (importing congkit.pipeline.results declares the pipeline's "
                       f"nodes, as congkit.pipeline.Pipeline does); declared: {', '.join(sorted(NODES)) or 'none'}")
    return NODES[name]


def stage_code(name: str) -> str:
    """The code key of node `name` (`congkit.pipeline.code_key`): its function and every congkit function and constant it can
    reach, not following into the other nodes (their results enter a key by their own keys and contents)."""
    return _stage_code(name, declared(name).fn)


@functools.cache
def _stage_code(name: str, fn: Callable) -> str:  # keyed by the function too: a node declared anew gets a new key
    return code_key(fn, stop=_other_nodes(name))


def stage_parts(name: str) -> dict[str, str]:
    """What `stage_code` covers, by qualified name (`congkit.pipeline.code_key.code_parts`)."""
    return code_parts(declared(name).fn, stop=_other_nodes(name))


def _other_nodes(name: str) -> frozenset:
    return frozenset(n.fn for n in NODES.values() if n.name != name)


class Pipeline:
    """The graph's state for one setting and config: the memo (`calls` counts each node's executions), the cache on
    disk (`artifact`, `train`), how models enter keys (`ref`), and the helpers every node shares (`load`, `sampling`,
    `prompts`). `Pipeline(setting, config, root).<node>(*args)` runs a declared node (`congkit.pipeline.stages`,
    `congkit.pipeline.results`). Within one `Pipeline` a node's result is looked up once; an artifact altered on
    disk meanwhile is verified, and rebuilt, by the next `Pipeline` over the same folder."""

    def __init__(self, setting, config, root: str | Path = "runs", progress: bool = True):
        self.setting, self.root, self.progress = setting, Path(root).resolve(), progress
        self.config = config
        self.config.validate()
        for name in NODES:  # read now from the code this process loaded: an edit on disk mid-run changes no key
            if NODES[name].stage:
                stage_code(name)
        self.timings: list[dict] = []  # one row per artifact built: stage, artifact, seed, method, eps, seconds
        self.calls: Counter = Counter()  # node name -> how many times its function ran in this run
        self._memo: dict[tuple, object] = {}
        self._content: dict[int, tuple] = {}  # id(dataset) -> (dataset, content key) for datasets nodes returned

    @functools.cached_property
    def tokenizer(self):
        return load_tokenizer(self.setting.tokenizer or self.setting.weak_base)

    @functools.cached_property
    def chat(self) -> bool:
        """String prompts are one user turn when the tokenizer has a chat template (as `to_trl_format` gives them)."""
        return has_chat_template(self.tokenizer)

    def __getattr__(self, name: str):
        if name.startswith("_") or name not in NODES:
            raise AttributeError(f"{type(self).__name__!r} has no attribute or node {name!r}; nodes: "
                                 f"{', '.join(sorted(NODES))}")  # fmt: skip
        return functools.partial(self.call, name)

    def call(self, name: str, *args, **kwargs):
        """Node `name` on these arguments, run once per run (defaults filled, so `f(0)` and `f(0, 0.0)` are one)."""
        fn = NODES[name].fn
        bound = inspect.signature(fn).bind(self, *args, **kwargs)
        bound.apply_defaults()
        key = (name, *(_hashable(v) for v in list(bound.arguments.values())[1:]))
        if key not in self._memo:
            self.calls[name] += 1
            value = fn(*bound.args, **bound.kwargs)
            if isinstance(value, Dataset):
                self._content[id(value)] = (value, content_key(value))
            self._memo[key] = value
        return self._memo[key]

    # --- the cache on disk ------------------------------------------------------------------------------------------

    def artifact(self, stage: str, key: dict, build: Callable[[Path], None]) -> Path:
        """The artifact of `stage` for `key`: reused when intact, else built (once, under a lock) and verified. Its
        `meta.json` says in words what it is (stage, code version, setting, seed, method, settings)."""
        version = declared(stage).version
        path = self.root / stage / fingerprint(self.setting.key, stage, version, stage_code(stage), key)
        summary = " ".join(f"{k}={key[k]}" for k in ("method", "seed", "eps") if k in key)

        def timed_build(tmp: Path) -> None:
            if self.progress:  # stage progress on stderr: the terminal shows it, the published notebooks drop it
                print(f"[congkit] {stage} {summary}", file=sys.stderr, flush=True)
            start = time.perf_counter()
            build(tmp)
            self.timings.append({"stage": stage, "artifact": path.name, "seed": key.get("seed"),
                                 "method": key.get("method", ""), "eps": key.get("eps"),
                                 "seconds": time.perf_counter() - start})  # fmt: skip

        meta = {"stage": stage, "version": version, "setting": self.setting.name, "setting_key": self.setting.key,
                "summary": f"{stage} {summary} ({self.setting.name})".replace("  ", " "), "key": key}  # fmt: skip
        return build_once(path, timed_build, meta=meta, label=f"stage {stage!r} ({path.relative_to(self.root)})")

    def dataset(self, stage: str, key: dict, make: Callable[[], Dataset], name: str) -> Dataset:
        """A stage whose artifact is one dataset, saved as `<artifact>/<name>`."""
        return load_saved_dataset(self.artifact(stage, key, lambda tmp: make().save_to_disk(str(tmp / name))) / name)

    def train(self, stage: str, key: dict, seed: int, train: Callable[[str, str], tuple]) -> str:
        """A training stage: `train(work_dir, save_to)` under `seed`, the model saved with its training history."""

        def build(tmp: Path) -> None:
            set_seed(seed)
            _, history = train(str(tmp / "_trainer"), str(tmp))
            shutil.rmtree(tmp / "_trainer", ignore_errors=True)  # the trainer's scratch is not part of the artifact,
            (tmp / "training_args.bin").unlink(missing_ok=True)  # nor its pickled arguments (with this tmp folder's
            # name in them): a model retrained with the same seed is then byte-identical, and so are the keys after it
            (tmp / "train_history.json").write_text(json.dumps(history))

        return str(self.artifact(stage, {**key, "seed": seed}, build))

    def data_key(self, data: Dataset) -> str:
        """`content_key(data)`, known without hashing again for a dataset a node returned."""
        known = self._content.get(id(data))
        return known[1] if known is not None and known[0] is data else content_key(data)

    def ref(self, model: str | Path) -> str:
        """How a model enters cache keys, never by where it lies: the setting's role for its base models (the
        setting's key holds their content); an artifact of this runner by its stage key and content digest; another
        local folder by its content (`folder_fingerprint`); a hub id as given."""
        roles = {self.setting.weak_base: "setting:weak_base", self.setting.strong_base: "setting:strong_base"}
        if str(model) in roles:
            return roles[str(model)]
        path = Path(model)
        if not path.is_dir():
            return str(model)
        path = path.resolve()
        if path.is_relative_to(self.root) and (digest := artifact_digest(path)) is not None:
            return f"{path.relative_to(self.root)}@{digest}"
        return f"folder:{folder_fingerprint(path)}"

    # --- what every node shares -------------------------------------------------------------------------------------

    def load(self, path: str | Path):
        return load_causal_lm(path, device=self.setting.device, dtype=self.setting.dtype)

    def weak_pair(self, pi_r_path: str):
        """(pi_r, pi_ref) loaded, checked to share one vocabulary."""
        pi_r, pi_ref = self.load(pi_r_path), self.load(self.setting.weak_base)
        check_same_vocab(pi_r, pi_ref, ("post-alignment weak", "pre-alignment weak"))
        return pi_r, pi_ref

    def sampling(self, **overrides) -> DecodingConfig:
        """The config's sampling settings with `overrides` (a stream's seed, CD's alpha)."""
        return DecodingConfig(**{**vars(self.config.sampling), **overrides})

    def prompts(self, split: str) -> list[str]:
        """The setting's prompts of `split` ("train", "eval" or "valid")."""
        data = {"train": self.setting.train_prompts, "eval": self.setting.eval_prompts,
                "valid": self.setting.valid_prompts}[split]  # fmt: skip
        if data is None:
            raise ValueError(f"setting {self.setting.name!r} has no {split} prompts")
        return list(data["prompt"])


def _hashable(value):
    """A memo key's part: the value itself, or its repr where it cannot be hashed (a `TrainConfig`)."""
    try:
        hash(value)
        return value
    except TypeError:
        return (type(value).__qualname__, repr(value))
