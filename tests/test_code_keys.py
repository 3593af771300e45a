"""Keys that see the code: an edit to code a stage can run (the judge, the CD step, a loss) changes that stage's key,
so it and what lies downstream rebuild; an edit to a docstring or a comment rebuilds nothing. Edits are made in a
temporary copy of the package, run in a process of its own."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import congkit
import congkit.pipeline.methods
from congkit.models import char_tokenizer, tiny_llama
from congkit.pipeline.code_key import code_parts

PACKAGE = Path(congkit.__file__).parent

KEYS = """
import json
from congkit.pipeline.code_key import code_key
from congkit.pipeline import Setting
from congkit.pipeline.runner import NODES, stage_code
from congkit.pipeline.methods import METHODS
from congkit.pipeline.world import ExplicitReward
keys = {name: stage_code(name) for name in NODES if NODES[name].stage}
keys.update({"recipe:" + m.name: code_key(m.recipe.train) for m in METHODS.values() if m.recipe is not None})
keys["setting:world"] = code_key(Setting.from_world, ExplicitReward)
print(json.dumps(keys))
"""

PIPELINE = """
import json, sys
import torch
from datasets import Dataset
from congkit import DecodingConfig, PipelineConfig, Setting, TrainConfig
from congkit.pipeline import Pipeline

class LengthJudge:
    name = "length-judge"
    def __call__(self, prompts, responses):
        return [len(r) + 0.1 * sum(r.count(v) for v in "aeiou") for r in responses]

root, runs = sys.argv[1], sys.argv[2]
prompts = Dataset.from_dict({"prompt": ["Add 3 and 4.", "Sort: b a c", "Reverse abc", "Spell cat"]})
quick = dict(num_train_epochs=2, per_device_train_batch_size=4, warmup_steps=0.0)
config = PipelineConfig(seeds=[0], noise_levels=[0.0], n_preference_samples=3,
                        sampling=DecodingConfig.authors(plausibility_threshold=None, repetition_penalty=1.0,
                                                        max_new_tokens=6),
                        weak_dpo=TrainConfig(learning_rate=1e-3, **quick), strong_sft=TrainConfig(learning_rate=1e-3, **quick),
                        wspo=TrainConfig(learning_rate=1e-3, **quick), cong_dpo=TrainConfig(learning_rate=1e-3, **quick))
setting = Setting("tiny", f"{root}/weak", f"{root}/strong", prompts, prompts, LengthJudge(), tokenizer=f"{root}/tokenizer",
                  device="cpu", dtype=torch.float32)
cached = Pipeline(setting, config, root=runs, progress=False)
for method in ("cong", "wspo"):
    cached.strong(method, 0)
print(json.dumps(sorted(f"{t['stage']}:{t['method']}" for t in cached.timings)))
"""


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(PACKAGE, root / "congkit", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _run(copy: Path, code: str, *args: str) -> object:
    env = {**os.environ, "PYTHONPATH": str(copy), "CONGKIT_QUIET": "1"}
    run = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600, env=env,
                         cwd=copy)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _edit(copy: Path, file: str, old: str, new: str) -> None:
    path = copy / "congkit" / file
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not once in {file}"
    path.write_text(text.replace(old, new))


def test_a_stage_key_covers_the_code_it_reaches_up_to_the_other_stages():
    import congkit.pipeline.results  # noqa: F401  (declares the nodes)
    from congkit.pipeline.runner import stage_parts

    parts = stage_parts("weak_samples")
    for reached in ("congkit.hub.custom_generate.step.cd_step", "congkit.hub.custom_generate.step.contrast",
                    "congkit.decoding.engine._decode_batch", "congkit.pipeline.cong.contrastive_samples"):  # fmt: skip
        assert reached in parts
    assert "congkit.pipeline.trainers.wspo_loss" not in parts  # sampling never reaches a loss
    assert "congkit.pipeline.stages.weak_aligned" not in parts  # pi_r enters by its artifact's key and bytes
    assert "congkit.pipeline.runner.Pipeline.sampling" in parts  # a helper reached through the annotated `pipe` parameter
    aligned = stage_parts("weak_aligned")
    assert "congkit.pipeline.cong.dpo" in aligned and "congkit.pipeline.cong.preference_pairs" not in aligned  # pairs: by content
    assert "congkit.pipeline.trainers.wspo_loss" in code_parts(congkit.pipeline.methods.recipe("wspo").train)
    for method in ("weaksft", "cong_s", "auxconf", "wspo"):  # the TRL wrapper (completion-only loss) and the warm-up
        parts = code_parts(congkit.pipeline.methods.recipe(method).train)
        assert "congkit.pipeline.training.train_sft" in parts, method
    assert "congkit.pipeline.trainers.auxconf_weight" in code_parts(congkit.pipeline.methods.recipe("auxconf").train)


@pytest.mark.slow
def test_edits_change_exactly_the_keys_of_the_code_they_touch(tmp_path):
    copy = _copy(tmp_path)
    before = _run(copy, KEYS)
    _edit(copy, "pipeline/world.py", '"""Score `response` to `task` on both channels (module docstring); never raises on any string."""',
          '"""Score a response (edited docstring)."""\n    # an added comment')  # fmt: skip
    _edit(copy, "pipeline/trainers.py", "i.e. the strong model's scaled log-ratio", "that is, the strong model's scaled log-ratio")
    assert _run(copy, KEYS) == before  # docstrings and comments change no key
    _edit(copy, "pipeline/world.py", "score = round(0.8 * r_pref + 0.2 * correct, 6)", "score = round(0.7 * r_pref + 0.3 * correct, 6)")
    judged = _run(copy, KEYS)
    assert {k for k in before if judged[k] != before[k]} == {"setting:world"}  # the judge enters every key via the setting
    _edit(copy, "hub/custom_generate/step.py", "expert_logp - (1.0 - alpha) * amateur_logp",
          "expert_logp - (1.0 - alpha) * amateur_logp * 1.0")  # fmt: skip
    stepped = _run(copy, KEYS)
    changed = {k for k in judged if stepped[k] != judged[k]}
    assert {"weak_pool", "weak_samples", "alpha_sweep", "evaluate", "cong_pairs"} <= changed  # everything that decodes
    assert "weak_aligned" not in changed and not any(k.startswith("recipe:") for k in changed)  # training alone: not


@pytest.mark.slow
def test_a_changed_loss_or_cd_step_rebuilds_exactly_the_stages_downstream_of_it(tmp_path):
    copy, checkpoints, runs = _copy(tmp_path), tmp_path / "checkpoints", str(tmp_path / "runs")
    tok = char_tokenizer()
    tok.save_pretrained(checkpoints / "tokenizer")
    for name, seed, size in (("weak", 1, 32), ("strong", 3, 48)):
        tiny_llama(len(tok), hidden_size=size, num_layers=2, num_heads=2, seed=seed, init_std=0.3).save_pretrained(
            checkpoints / name)  # fmt: skip
    first = _run(copy, PIPELINE, str(checkpoints), runs)
    assert first == ["cong_pairs:", "strong:cong", "strong:cong_s", "strong:wspo", "weak_aligned:", "weak_pool:",
                     "weak_samples:"]  # fmt: skip
    _edit(copy, "pipeline/trainers.py", '"""WSPO (Zhu et al., 2024), per response token', '"""WSPO (Zhu et al., 2024) (edited), per token')
    assert _run(copy, PIPELINE, str(checkpoints), runs) == []  # a docstring: nothing rebuilt
    source = (copy / "congkit" / "pipeline" / "trainers.py").read_text()
    body = source[source.index("def wspo_loss") :]
    returned = body[body.index("    return ") :].splitlines()[0]
    _edit(copy, "pipeline/trainers.py", returned, returned.replace("return ", "return -(", 1) + ")")  # the loss's sign flipped
    assert _run(copy, PIPELINE, str(checkpoints), runs) == ["strong:wspo"]
    _edit(copy, "hub/custom_generate/step.py", "expert_logp - (1.0 - alpha) * amateur_logp",
          "expert_logp - 2.0 * (1.0 - alpha) * amateur_logp")  # the CD step changed: CD samples change
    # every stage that decodes rebuilds; plain samples come out the same, so pi_r and WSPO (trained on them) are
    # reused, while ConG-S, ConG's pairs and ConG, downstream of the new CD samples, rebuild
    assert _run(copy, PIPELINE, str(checkpoints), runs) == ["cong_pairs:", "strong:cong", "strong:cong_s", "weak_pool:",
                                                            "weak_samples:"]  # fmt: skip
