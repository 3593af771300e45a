"""The one CD step as a transformers user takes it: the engine and the `generate` strategy against the reference
sampler (`congkit.pipeline.cong.reference_cd`), prefilled caches, settings saved with the model, transformers' min_p, refused
arguments, the self-contained Hub folder."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from datasets import Dataset, load_from_disk
from transformers import GenerationConfig, MinPLogitsWarper

from congkit import (
    CUSTOM_GENERATE_DIR,
    cd_generation_config,
    contrastive_decoding,
    contrastive_generate,
    reference_cd,
    sample,
)
from congkit.hub.custom_generate.step import row_uniforms
from congkit.tokens import encode_prompt

from .conftest import PROMPTS
from .test_generation import _batch, _new_tokens

SAMPLED = dict(do_sample=True, temperature=0.9, top_k=20, top_p=0.9)
GREEDY = dict(do_sample=False)


def _reference(expert, amateur, tokenizer, prompts, settings, seed, max_new_tokens, **cd):
    """`reference_cd` of each prompt, prompt i sampling at the uniforms of row (seed, i) as both decoders do."""
    out = []
    for i, prompt in enumerate(prompts):
        uniforms = row_uniforms(seed, [i], max_new_tokens)[0].tolist() if settings["do_sample"] else None
        out.append(reference_cd(expert, amateur, encode_prompt(tokenizer, prompt), max_new_tokens=max_new_tokens,
                                uniforms=uniforms, eos=[tokenizer.eos_token_id], **settings, **cd))  # fmt: skip
    return out


@pytest.mark.parametrize("settings", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
@pytest.mark.parametrize("penalty", [1.0, 1.3])
@pytest.mark.parametrize("n_prompts", [1, 4], ids=["unpadded", "padded"])
def test_engine_and_strategy_decode_the_reference_tokens(expert, amateur, tokenizer, settings, penalty, n_prompts):
    prompts, cd = PROMPTS[:n_prompts], dict(alpha=0.3, plausibility_threshold=0.1, repetition_penalty=penalty)
    want = _reference(expert, amateur, tokenizer, prompts, settings, 5, 10, **cd)
    engine = contrastive_generate(expert, amateur, tokenizer, prompts, max_new_tokens=10, seed=5, progress=False,
                                  **settings, **cd)  # fmt: skip
    assert engine.token_ids == want
    batch = _batch(tokenizer, prompts)
    out = expert.generate(**batch, custom_generate=contrastive_decoding, amateur_model=amateur, max_new_tokens=10,
                          seed=5, **({"top_k": 0, **settings} if not settings["do_sample"] else settings), **cd)  # fmt: skip
    assert _new_tokens(out, batch, tokenizer.eos_token_id) == want
    plain = sample(expert, tokenizer, prompts, max_new_tokens=10, seed=5, progress=False, **settings,
                   repetition_penalty=penalty)  # fmt: skip
    assert plain.token_ids == _reference(expert, None, tokenizer, prompts, settings, 5, 10, plausibility_threshold=None,
                                         repetition_penalty=penalty)  # fmt: skip


def test_min_p_is_transformers_min_p_after_temperature(expert, amateur, tokenizer):
    """At alpha 1 with a head that keeps every token, the strategy's min_p keeps exactly the tokens stock sampling's
    MinP keeps at each temperature (the head alone does not move with temperature)."""
    batch, kept = _batch(tokenizer, PROMPTS[:1]), []
    for temperature in (1.0, 4.0):
        kw = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0, min_p=0.2, max_new_tokens=1,
                  return_dict_in_generate=True, output_scores=True, output_logits=True)  # fmt: skip
        out = expert.generate(**batch, custom_generate=contrastive_decoding, amateur_model=amateur, alpha=1.0,
                              plausibility_threshold=1e-30, **kw)  # fmt: skip
        stock = torch.isfinite(MinPLogitsWarper(0.2)(None, out.logits[0] / temperature))
        assert torch.equal(torch.isfinite(out.scores[0]), stock)
        kept.append(int(stock.sum()))
    assert kept[0] < kept[1] < 101  # transformers' min_p moves with temperature; the whole vocabulary never passes
    ref = reference_cd(expert, amateur, encode_prompt(tokenizer, PROMPTS[0]), alpha=1.0, plausibility_threshold=None,
                       do_sample=True, temperature=2.0, min_p=0.2, max_new_tokens=8,
                       uniforms=row_uniforms(3, [0], 8)[0].tolist())  # fmt: skip
    engine = contrastive_generate(expert, amateur, tokenizer, PROMPTS[:1], alpha=1.0, plausibility_threshold=1e-30,
                                  do_sample=True, temperature=2.0, top_k=None, min_p=0.2, max_new_tokens=8, seed=3,
                                  ignore_eos=True, progress=False)  # fmt: skip
    assert engine.token_ids[0] == ref


@pytest.mark.parametrize("settings", [GREEDY, dict(do_sample=True, temperature=1.2)], ids=["greedy", "sampled"])
@pytest.mark.parametrize("amateur_cache", [True, False])
def test_a_prefilled_cache_continues_as_a_fresh_run(expert, amateur, tokenizer, settings, amateur_cache):
    """Multi-turn reuse: the second turn decoded on top of the first call's caches gives the tokens and implicit
    rewards of a fresh run over the whole conversation (and the output carries both caches)."""
    common = dict(custom_generate=contrastive_decoding, amateur_model=amateur, alpha=0.5, max_new_tokens=6, seed=1,
                  repetition_penalty=1.2, return_dict_in_generate=True, **settings)  # fmt: skip
    first = expert.generate(**_batch(tokenizer, PROMPTS[:1]), **common)
    assert first.cache is not None and first.amateur_cache is not None
    turn = torch.tensor([encode_prompt(tokenizer, " and then?")])
    ids = torch.cat([first.sequences, turn], dim=1)
    kept = {"amateur_cache": first.amateur_cache} if amateur_cache else {}
    continued = expert.generate(input_ids=ids, attention_mask=torch.ones_like(ids), cache=first.cache, **kept, **common)
    fresh = expert.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **common)
    assert torch.equal(continued.sequences, fresh.sequences)
    torch.testing.assert_close(continued.implicit_rewards, fresh.implicit_rewards, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="cache already holds .* pass the whole conversation"):
        expert.generate(input_ids=ids[:, :3], cache=continued.cache, **common)


def test_cd_settings_persist_in_the_generation_config(expert, amateur, tokenizer, tmp_path):
    """alpha and the head's threshold saved in a checkpoint's generation_config.json are read by the strategy;
    a keyword overrides them per call."""
    batch = _batch(tokenizer, PROMPTS)
    common = dict(custom_generate=contrastive_decoding, amateur_model=amateur, do_sample=False, max_new_tokens=8,
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    want = expert.generate(**batch, alpha=0.0, plausibility_threshold=0.3, **common)
    default = expert.generate(**batch, **common)
    assert not torch.equal(want, default)  # the settings matter here
    saved = type(expert)(expert.config)
    saved.load_state_dict(expert.state_dict())
    saved.generation_config = cd_generation_config(saved.generation_config, alpha=0.0, plausibility_threshold=0.3)
    saved.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "generation_config.json").read_text())["alpha"] == 0.0
    loaded = type(expert).from_pretrained(tmp_path)
    assert torch.equal(loaded.generate(**batch, **common), want)
    assert torch.equal(loaded.generate(**batch, alpha=0.5, plausibility_threshold=0.1, **common), default)
    config = GenerationConfig(alpha=0.0, plausibility_threshold=0.3, do_sample=False, max_new_tokens=8,
                              pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    assert torch.equal(expert.generate(**batch, generation_config=config, custom_generate=contrastive_decoding,
                                       amateur_model=amateur), want)  # fmt: skip
    with pytest.raises(ValueError, match=r"alpha \(from the GenerationConfig\) must lie in"):
        cd_generation_config(alpha=2.0)


@pytest.mark.parametrize("form", ["callable", "folder"])
@pytest.mark.parametrize("argument, match", [
    (dict(synced_gpus=True), "synced_gpus"),
    ("assistant", "assistant"),
    (dict(guidance_scale=1.5), "guidance_scale"),
    (dict(penalty_alpha=0.6, top_k=4), "penalty_alpha"),
    (dict(dola_layers="high"), "dola_layers"),
    (dict(num_beams=2), "beam search"),
    (dict(prompt_lookup_num_tokens=3), "prompt_lookup_num_tokens|assist"),
])  # fmt: skip
def test_what_the_strategy_cannot_honour_is_refused(expert, amateur, tokenizer, form, argument, match):
    argument = dict(assistant_model=amateur) if argument == "assistant" else argument
    strategy = (dict(custom_generate=contrastive_decoding) if form == "callable"
                else dict(custom_generate=CUSTOM_GENERATE_DIR, trust_remote_code=True))  # fmt: skip
    with pytest.raises(ValueError, match=match):
        expert.generate(**_batch(tokenizer, PROMPTS[:1]), amateur_model=amateur, max_new_tokens=2, **strategy,
                        **argument)  # fmt: skip


HUB_USER = """
import json, sys
sys.modules["congkit"] = None  # a Hub user has no congkit: importing it fails
import torch
from transformers import LlamaConfig, LlamaForCausalLM
models = []
for seed in (1, 2):
    torch.manual_seed(seed)
    models.append(LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                               num_attention_heads=2, num_key_value_heads=2)).eval())
ids = torch.tensor([[5, 9, 11, 3], [0, 7, 8, 2]])
mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
out = models[0].generate(input_ids=ids, attention_mask=mask, custom_generate=sys.argv[1], trust_remote_code=True,
                         amateur_model=models[1], alpha=0.3, do_sample=False, max_new_tokens=6, pad_token_id=0,
                         return_dict_in_generate=True)
print(json.dumps({"sequences": out.sequences.tolist(), "rewards": out.implicit_rewards.sum(-1).tolist()}))
"""


def test_the_hub_folder_runs_without_congkit(tmp_path):
    """The folder as transformers loads it from the Hub: copied on its own, in a process where congkit cannot be
    imported; its tokens equal congkit's engine on the same models."""
    folder = tmp_path / "cd-hub"
    shutil.copytree(CUSTOM_GENERATE_DIR, folder, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    run = subprocess.run([sys.executable, "-c", HUB_USER, str(folder)], capture_output=True, text=True, timeout=300,
                         env=env, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    from transformers import LlamaConfig, LlamaForCausalLM

    models = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        models.append(LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                                   num_hidden_layers=2, num_attention_heads=2,
                                                   num_key_value_heads=2)).eval())  # fmt: skip
    ids, mask = torch.tensor([[5, 9, 11, 3], [0, 7, 8, 2]]), torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    here = models[0].generate(input_ids=ids, attention_mask=mask, custom_generate=contrastive_decoding,
                              amateur_model=models[1], alpha=0.3, do_sample=False, max_new_tokens=6, pad_token_id=0)  # fmt: skip
    assert got["sequences"] == here.tolist()


# --- implicit rewards that agree with decoding ----------------------------------------------------------------------


def test_implicit_reward_raises_on_non_finite_scores_and_warns_on_text_that_does_not_round_trip(expert, amateur,
                                                                                                tokenizer):  # fmt: skip
    from congkit import implicit_reward

    from .test_one_algorithm import _with_nan

    for policy, reference, who in [(_with_nan(expert), amateur, "policy"), (expert, _with_nan(amateur), "reference")]:
        with pytest.raises(FloatingPointError, match=rf"the {who} .* non-finite log-probabilities on completion"):
            implicit_reward(policy, reference, tokenizer, PROMPTS[:2], ["abc", "de"])
    with pytest.warns(UserWarning, match=r"1 of 2 responses \(first: 1\) do not round-trip .* score token ids"):
        implicit_reward(expert, amateur, tokenizer, PROMPTS[:2], ["abc", "caf\u00e9"])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # text that round-trips is scored without a word
        implicit_reward(expert, amateur, tokenizer, PROMPTS[:2], ["abc", "cafe"])


# --- the CLI --------------------------------------------------------------------------------------------------------


def test_the_cli_shows_every_default_and_names_what_it_cannot_load(capsys, tmp_path, tokenizer):
    from congkit.pipeline import cli

    for command in ("generate", "train"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        options = [line for line in capsys.readouterr().out.splitlines() if line.lstrip().startswith("--")]
        text = "\n".join(options)
        for flag in ("--seed", "--batch-size", "--device", "--tokenizer"):
            assert flag in text
    with pytest.raises(SystemExit) as stop:
        cli.main(["generate", "--help"])
    shown = capsys.readouterr().out
    for default in ("(default: 0.8)", "(default: 0.95)", "(default: 1.2)", "(default: 0.1)", "(default: 512)"):
        assert default in shown
    prompts = tmp_path / "prompts"
    Dataset.from_dict({"prompt": ["hi"]}).save_to_disk(str(prompts))
    tokenizer.save_pretrained(tmp_path / "tok")
    with pytest.raises(SystemExit, match=r"^error: --expert '.*nowhere' cannot be loaded: [^\n]*$") as stop:
        cli.main(["generate", "--expert", str(tmp_path / "nowhere"), "--tokenizer", str(tmp_path / "tok"),
                  "--prompts", str(prompts), "--output", str(tmp_path / "out")])  # fmt: skip
    assert "\n" not in str(stop.value)


def test_the_cli_decodes_greedy_top_k_and_several_samples_per_prompt(expert, amateur, tokenizer, tmp_path):
    from congkit.pipeline import cli

    for name, model in (("expert", expert), ("amateur", amateur)):
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    Dataset.from_dict({"prompt": PROMPTS[:2]}).save_to_disk(str(tmp_path / "prompts"))
    common = ["generate", "--expert", str(tmp_path / "expert"), "--amateur", str(tmp_path / "amateur"), "--prompts",
              str(tmp_path / "prompts"), "--max-new-tokens", "6", "--samples-per-prompt", "2", "--device", "cpu"]
    cli.main([*common, "--greedy", "--output", str(tmp_path / "greedy")])
    greedy = load_from_disk(str(tmp_path / "greedy"))
    assert greedy["prompt"] == [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2
    assert greedy["completion"][0] == greedy["completion"][1]  # greedy: both samples of a prompt agree
    want = contrastive_generate(expert, amateur, tokenizer, PROMPTS[:2], max_new_tokens=6, repetition_penalty=1.2,
                                apply_chat_template=True, progress=False)  # fmt: skip
    assert greedy["completion"][::2] == want.texts
    cli.main([*common, "--top-k", "1", "--output", str(tmp_path / "top1")])  # top-k 1 samples the argmax
    assert load_from_disk(str(tmp_path / "top1"))["completion"] == greedy["completion"]


def test_a_core_install_names_the_extra_the_cli_needs():
    code = ("import sys, runpy; sys.modules['datasets'] = None; sys.argv = ['congkit.pipeline.cli', '--help']; "
            "runpy.run_module('congkit.pipeline.cli', run_name='__main__')")  # fmt: skip
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "pip install 'congkit[train]'" in run.stderr and "Traceback" not in run.stderr


def test_decoded_texts_that_would_score_other_tokens_are_named_when_decoding(expert, amateur, tokenizer):
    """Rows whose text re-encodes to the generated tokens get the same implicit reward from text and from ids; the
    others are named by a warning when decoding (random tiny models emit special tokens mid-row)."""
    import warnings

    from congkit import implicit_reward
    from congkit.rewards import warn_unless_texts_reencode

    prompts = PROMPTS * 2
    with pytest.warns(UserWarning, match="re-encode to other tokens than were generated") as caught:
        out = contrastive_generate(expert, amateur, tokenizer, prompts, max_new_tokens=12, do_sample=True, seed=2,
                                   progress=False)  # fmt: skip
    assert caught[0].filename == __file__  # the warning points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        failing = warn_unless_texts_reencode(tokenizer, out.texts, out.token_ids, {tokenizer.eos_token_id})
        from_text = implicit_reward(expert, amateur, tokenizer, prompts, out.texts).total
    from_ids = out.implicit_reward().total
    exact = [i for i in range(len(prompts)) if i not in failing]
    assert failing and exact
    ended = [i for i in exact if out.token_ids[i][-1:] == [tokenizer.eos_token_id]]  # (text of a cut answer gains
    assert ended  # an EOS when scored)
    for i in ended:
        assert from_text[i] == pytest.approx(from_ids[i], abs=1e-4)
