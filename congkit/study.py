"""The study: named parameter profiles, the notebooks run by papermill, and the offline Jupyter Book build.

    python -m congkit.study --profile smoke|default|real [--runs runs] [--no-book]

Each notebook takes the same parameters (`profile`, `runs_dir`, plus its own) and gets its world, setting and
pipeline from `study_objects(profile, runs_dir)`. Executed copies go to `book/notebooks/`; the book is then built
from them with execution off, into `book/_build/html`. Stages are cached under `runs_dir`, so rerunning one notebook
recomputes nothing that is already there.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .stages import Pipeline, PipelineConfig, Setting, smoke_pipeline_config
from .world_build import WorldConfig, build_world, smoke_world_config

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = [
    "01_implicit_reward_and_cd.ipynb",
    "02_weak_alignment.ipynb",
    "03_contrastive_sampling.ipynb",
    "04_strong_training.ipynb",
    "05_results.ipynb",
]


@dataclass
class RealCheckpoints:
    """The real-model profile: modelled on the paper's smallest setting. Any folder works in place of a hub id."""

    weak_model: str = "Qwen/Qwen2.5-0.5B-Instruct"
    strong_model: str = "Qwen/Qwen2.5-1.5B-Instruct"
    reward_model: str = "Skywork/Skywork-Reward-V2-Qwen3-0.6B"
    prompts: str = "HuggingFaceH4/ultrafeedback_binarized"
    train_split: str = "train_prefs"
    eval_split: str = "test_prefs"
    prompt_column: str = "prompt"
    n_train_prompts: int = 2000
    n_eval_prompts: int = 200
    multiple_choice: str | None = None  # optional: a save_to_disk folder (question, choices, answer) for retention
    max_new_tokens: int = 512
    device: str | None = None  # auto: cuda if present


@dataclass
class Profile:
    name: str
    world: WorldConfig | None = None
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    real: RealCheckpoints | None = None


def get_profile(name: str, real_overrides: dict | None = None) -> Profile:
    """A named profile; `real_overrides` set fields of `RealCheckpoints` (model ids or folders, dataset, sizes)."""
    if name == "smoke":
        return Profile("smoke", world=smoke_world_config(), pipeline=smoke_pipeline_config())
    if name == "default":
        return Profile("default", world=WorldConfig(), pipeline=PipelineConfig())
    if name == "real":
        real = RealCheckpoints(**(real_overrides or {}))
        pipeline = real_pipeline_config()
        pipeline.sampling.max_new_tokens = real.max_new_tokens
        return Profile("real", pipeline=pipeline, real=real)
    raise ValueError(f"unknown profile {name!r}; known: smoke, default, real")


def real_pipeline_config() -> PipelineConfig:
    """The paper's optimiser settings (PAPER.md) for 0.5-8B models; one seed, two noise levels by default."""
    from .decoding import DecodingConfig
    from .training import TrainConfig

    return PipelineConfig(
        seeds=[0],
        noise_levels=[0.0, 0.2],
        n_preference_samples=5,
        sampling=DecodingConfig(
            lam=None, temperature=0.8, top_p=0.95, repetition_penalty=1.2, max_new_tokens=512, batch_size=16
        ),  # fmt: skip
        alpha_sweep=[0.0, 0.25, 0.5, 0.75, 1.0],
        weak_dpo=TrainConfig(
            learning_rate=8e-7, beta=0.1, per_device_train_batch_size=4, gradient_accumulation_steps=8
        ),
        strong_sft=TrainConfig(
            learning_rate=1e-5, num_train_epochs=2, per_device_train_batch_size=4, gradient_accumulation_steps=8
        ),  # fmt: skip
        wspo=TrainConfig(learning_rate=1e-6, beta=0.1, per_device_train_batch_size=4, gradient_accumulation_steps=8),
        cong_dpo=TrainConfig(
            learning_rate=6e-7, beta=0.5, per_device_train_batch_size=4, gradient_accumulation_steps=8
        ),
        gold_dpo=TrainConfig(
            learning_rate=8e-7, beta=0.1, per_device_train_batch_size=4, gradient_accumulation_steps=8
        ),
        eval_samples=1,
    )


def real_setting(real: RealCheckpoints) -> Setting:
    """A `Setting` on real checkpoints: prompts from a dataset (hub id or local folder), a reward model as judge."""
    from datasets import load_from_disk

    from .data import load_prompts
    from .scorers import RewardModelScorer

    train = load_prompts(real.prompts, real.train_split, real.prompt_column, real.n_train_prompts)
    evaluation = load_prompts(real.prompts, real.eval_split, real.prompt_column, real.n_eval_prompts)
    return Setting(
        name="real",
        weak_base=real.weak_model,
        strong_base=real.strong_model,
        train_prompts=train,
        eval_prompts=evaluation,
        scorer=RewardModelScorer(real.reward_model, device=real.device),
        multiple_choice=load_from_disk(real.multiple_choice) if real.multiple_choice else None,
        device=real.device,
    )


def study_objects(profile: str = "default", runs_dir: str | Path = "runs", progress: bool = True,
                  real: dict | None = None):  # fmt: skip
    """(world or None, setting, pipeline) for a profile; building the world on first use. `real`: overrides of
    `RealCheckpoints` for the real profile (e.g. {"weak_model": "/models/qwen-0.5b"})."""
    prof = get_profile(profile, real)
    runs_dir = Path(runs_dir)
    if prof.real is not None:
        return None, *_pipeline(real_setting(prof.real), prof.pipeline, runs_dir / "real", progress)
    world = build_world(prof.world, root=runs_dir, progress=progress)
    return world, *_pipeline(Setting.from_world(world), prof.pipeline, runs_dir / f"pipeline-{profile}", progress)


def _pipeline(setting: Setting, config: PipelineConfig, root: Path, progress: bool):
    return setting, Pipeline(setting, config, root=root, progress=progress)


def run_notebooks(
    profile: str, runs_dir: Path, out_dir: Path, only: list[str] | None = None, real: dict | None = None
) -> dict[str, float]:
    import papermill

    out_dir.mkdir(parents=True, exist_ok=True)
    seconds = {}
    names = [n for n in NOTEBOOKS if not only or any(n.startswith(o) for o in only)]
    for i, name in enumerate(names, 1):
        print(f"[study] notebook {i}/{len(names)}: {name} (profile={profile})", flush=True)
        start = time.perf_counter()
        papermill.execute_notebook(
            str(REPO / "notebooks" / name),
            str(out_dir / name),
            parameters={"profile": profile, "runs_dir": str(runs_dir.resolve()), "real": real or {}},
            kernel_name="python3",
            progress_bar=False,
            stdout_file=sys.stdout,  # the kernel's prints, e.g. "[congkit] <stage> ...", show which stage runs
            cwd=str(REPO / "notebooks"),
        )
        seconds[name] = time.perf_counter() - start
        print(f"[study]   done in {seconds[name]:.0f} s", flush=True)
    return seconds


def build_book(book_dir: Path = REPO / "book") -> Path:
    """Jupyter Book 1.x (Sphinx) build of the already executed notebooks: works offline (2.x fetches its theme)."""
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(book_dir), "--quiet"]
    print("[study] building the book:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return book_dir / "_build" / "html"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the ConG study notebooks and build the book.")
    parser.add_argument("--profile", default="default", choices=["smoke", "default", "real"])
    parser.add_argument("--runs", default=str(REPO / "runs"), help="cache folder for every stage")
    parser.add_argument("--only", nargs="*", help="notebook name prefixes to run, e.g. 05")
    parser.add_argument("--no-book", action="store_true", help="execute the notebooks, skip the book build")
    parser.add_argument("--real", default="{}", help='profile real: JSON of RealCheckpoints fields, e.g. '
                        '\'{"weak_model": "/models/Qwen2.5-0.5B-Instruct"}\'')  # fmt: skip
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out_dir = REPO / "book" / "notebooks"
    if not args.only and out_dir.exists():
        shutil.rmtree(out_dir)
    run_notebooks(args.profile, Path(args.runs), out_dir, args.only, real=json.loads(args.real))
    if not args.no_book:
        html = build_book()
        print(f"[study] book: {html / 'index.html'}")
    print(f"[study] total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
