"""One CD algorithm on every device and through every entry point: the head on both token-choice paths, streaming
through the callable strategy, refused modes, finite-or-refused numbers, generate's argument names."""

import copy
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from transformers import GenerationConfig, T5Config, T5ForConditionalGeneration, TextIteratorStreamer, TextStreamer

from congkit import DecodingConfig, contrastive_decoding, contrastive_generate, sample
from congkit.decoding import plausibility_head
from congkit.generation import CUSTOM_GENERATE_DIR
from congkit.models import char_tokenizer
from congkit.tokens import encode_prompt

from .conftest import PROMPTS
from .test_decoding import reference_cd
from .test_generation import _batch, _cd_generate

# --- the head on every path -----------------------------------------------------------------------------------------


def test_auto_token_choice_gathers_the_head_on_a_cpu_and_masks_the_vocabulary_elsewhere():
    config = DecodingConfig()
    assert config.gathers_head(torch.device("cpu"))
    assert not config.gathers_head(torch.device("cuda"))  # what a GPU run takes: the whole vocabulary, head masked
    assert DecodingConfig(token_choice="head").gathers_head(torch.device("cuda"))
    assert not DecodingConfig(token_choice="vocabulary").gathers_head(torch.device("cpu"))
    assert not DecodingConfig(plausibility_threshold=None, token_choice="head").gathers_head(torch.device("cpu"))  # no head to gather


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_the_vocabulary_path_decodes_the_reference_tokens(expert, amateur, tokenizer, penalty):
    """The path a GPU takes, forced on a CPU: greedy CD equals the slow reference (which applies the head)."""
    for alpha, lam in [(0.0, 0.1), (0.5, 0.3)]:
        out = contrastive_generate(expert, amateur, tokenizer, PROMPTS, alpha=alpha, plausibility_threshold=lam, max_new_tokens=12,
                                   repetition_penalty=penalty, token_choice="vocabulary", progress=False)  # fmt: skip
        for prompt, got in zip(PROMPTS, out.token_ids):
            assert got == reference_cd(expert, amateur, tokenizer, prompt, alpha, lam, 12, penalty)


@pytest.mark.parametrize("release", [False, True])
def test_both_paths_sample_the_same_tokens_inside_the_head(expert, amateur, tokenizer, release):
    common = dict(alpha=0.0, max_new_tokens=16, seed=3, release_compatible=release, progress=False)
    runs = {path: contrastive_generate(expert, amateur, tokenizer, PROMPTS, DecodingConfig.authors(token_choice=path),
                                       **common)  # fmt: skip
            for path in ("head", "vocabulary")}
    assert runs["head"].token_ids == runs["vocabulary"].token_ids
    outside = 0
    for prompt, ids in zip(PROMPTS, runs["vocabulary"].token_ids):  # every chosen token lies in its step's head
        context = torch.tensor([encode_prompt(tokenizer, prompt) + ids])
        with torch.no_grad():
            logp = torch.log_softmax(expert(context).logits[0].float(), -1)
        steps = logp[context.shape[1] - len(ids) - 1 : -1]
        outside += int((~plausibility_head(steps, 0.1)[torch.arange(len(ids)), torch.tensor(ids)]).sum())
    assert outside == 0


# --- streaming through the callable strategy ------------------------------------------------------------------------


def _greedy(amateur, **kw):
    return dict(custom_generate=contrastive_decoding, amateur_model=amateur, alpha=0.5, plausibility_threshold=0.1, do_sample=False,
                max_new_tokens=12, **kw)  # fmt: skip


def _consume(streamer: TextIteratorStreamer, timeout: float = 60.0) -> tuple[threading.Thread, list[str]]:
    pieces: list[str] = []
    thread = threading.Thread(target=lambda: pieces.extend(streamer), daemon=True)
    thread.start()
    return thread, pieces


@pytest.mark.parametrize("skip_prompt", [True, False])
def test_an_iterator_streamer_receives_the_prompt_then_the_tokens_then_its_end(expert, amateur, tokenizer,
                                                                                skip_prompt):  # fmt: skip
    batch = _batch(tokenizer, PROMPTS[:1])
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=skip_prompt, timeout=60)
    thread, pieces = _consume(streamer)
    out = expert.generate(**batch, streamer=streamer, **_greedy(amateur))
    thread.join(timeout=60)
    assert not thread.is_alive()  # the consumer finished: end() reached it
    new = tokenizer.decode(out[0, batch["input_ids"].shape[1] :])
    prompt = tokenizer.decode(batch["input_ids"][0])
    assert "".join(pieces) == (new if skip_prompt else prompt + new)


def test_a_text_streamer_prints_the_prompt_and_every_token_and_cd_streamer_keeps_the_first_token(
        expert, amateur, tokenizer, capsys):  # fmt: skip
    batch = _batch(tokenizer, PROMPTS[:1])
    out = expert.generate(**batch, streamer=TextStreamer(tokenizer), **_greedy(amateur))
    new = tokenizer.decode(out[0, batch["input_ids"].shape[1] :])
    assert capsys.readouterr().out == tokenizer.decode(batch["input_ids"][0]) + new + "\n"
    ends = []
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, timeout=60)
    streamer.end = (lambda end: lambda: (ends.append(1), end())[1])(streamer.end)
    thread, pieces = _consume(streamer)
    expert.generate(**batch, **_greedy(amateur, cd_streamer=streamer))  # the loop's own streamer gets the prompt
    thread.join(timeout=60)
    assert "".join(pieces) == new and ends == [1]


def test_the_folder_form_streams_once(expert, amateur, tokenizer):
    batch = _batch(tokenizer, PROMPTS[:1])
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, timeout=60)
    thread, pieces = _consume(streamer)
    out = expert.generate(**batch, streamer=streamer, custom_generate=CUSTOM_GENERATE_DIR, trust_remote_code=True,
                          amateur_model=amateur, do_sample=False, max_new_tokens=12)  # fmt: skip
    thread.join(timeout=60)
    assert "".join(pieces) == tokenizer.decode(out[0, batch["input_ids"].shape[1] :])


# --- what is not supported is refused -------------------------------------------------------------------------------


def test_unsupported_modes_are_refused_by_name(expert, amateur, tokenizer):
    batch = _batch(tokenizer, PROMPTS[:2])
    cases = [
        (dict(num_beams=3), ValueError, "does not do beam search: num_beams=3"),
        (dict(output_attentions=True, return_dict_in_generate=True), ValueError, "output_attentions=True"),
        (dict(output_hidden_states=True, return_dict_in_generate=True), ValueError, "output_hidden_states=True"),
    ]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            expert.generate(**batch, **_greedy(amateur, **kwargs))
    with pytest.raises(TypeError, match=r"amateur_model \(pre-alignment\) must be a loaded transformers model"):
        expert.generate(**batch, **{**_greedy(amateur), "amateur_model": "gpt2"})
    embeds = expert.get_input_embeddings()(batch["input_ids"])
    with pytest.raises(ValueError, match="inputs_embeds is not supported"):
        expert.generate(inputs_embeds=embeds, attention_mask=batch["attention_mask"], **_greedy(amateur))


def test_an_encoder_decoder_model_is_refused(expert, amateur, tokenizer):
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=len(tokenizer), d_model=16, d_ff=32, num_layers=1, num_heads=2,
                                             d_kv=8, decoder_start_token_id=0, pad_token_id=0))  # fmt: skip
    with pytest.raises(ValueError, match=r"amateur \(pre-alignment model pi_ref\) is an encoder-decoder model"):
        contrastive_generate(expert, t5, tokenizer, PROMPTS, max_new_tokens=2, progress=False)
    with pytest.raises(ValueError, match=r"model \(post-alignment\) is an encoder-decoder model"):
        t5.generate(**_batch(tokenizer, PROMPTS[:1]), **_greedy(amateur))


# --- finite or refused ----------------------------------------------------------------------------------------------


def _with_nan(model):
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.lm_head.weight[3, 0] = float("nan")
    return broken


def test_non_finite_scores_name_the_model_and_the_step(expert, amateur, tokenizer):
    batch = _batch(tokenizer, PROMPTS[:2])
    for expert_, amateur_, who in [(_with_nan(expert), amateur, "expert"), (expert, _with_nan(amateur), "amateur")]:
        with pytest.raises(FloatingPointError, match=rf"the {who} .* non-finite log-probabilities at generated token 0"):
            contrastive_generate(expert_, amateur_, tokenizer, PROMPTS, max_new_tokens=4, progress=False)
        with pytest.raises(FloatingPointError, match=rf"the {who} .* at generated token 0"):
            expert_.generate(**batch, **_greedy(amateur_))
    with pytest.raises(FloatingPointError, match="the model gave non-finite"):
        sample(_with_nan(expert), tokenizer, PROMPTS, max_new_tokens=4, progress=False)


@pytest.mark.parametrize("name", ["alpha", "plausibility_threshold", "min_p", "top_p", "temperature",
                                  "repetition_penalty", "beta"])
def test_nan_arguments_are_refused_by_the_generate_strategy(expert, amateur, tokenizer, name):
    short = name.split("_")[-1]  # transformers' own checks catch NaN temperature and penalty first, naming them
    with pytest.raises(ValueError, match=rf"{short}.*(must be a finite number, got nan|has to be a strictly positive|has to be a float)"):
        _cd_generate(expert, amateur, _batch(tokenizer, PROMPTS[:1]), max_new_tokens=2, do_sample=True,
                     **{name: float("nan")})  # fmt: skip


def test_an_invalid_inherited_cd_setting_is_named_as_inherited(expert, amateur, tokenizer):
    with pytest.raises(ValueError, match=r"plausibility_threshold \(from the GenerationConfig\).* must lie in"):
        _cd_generate(expert, amateur, _batch(tokenizer, PROMPTS[:1]),
                     generation_config=GenerationConfig(plausibility_threshold=0.0, max_new_tokens=2))  # fmt: skip


def test_the_cli_and_the_chapters_refuse_nan(tmp_path):
    from congkit import study
    from congkit.pipeline import cli

    with pytest.raises(SystemExit, match="alpha must be a finite number"):
        cli.main(["generate", "--expert", str(tmp_path / "m"), "--amateur", str(tmp_path / "a"), "--prompts",
                  str(tmp_path / "p"), "--output", str(tmp_path / "o"), "--alpha", "nan"])  # fmt: skip
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="parameter alpha must be a finite number"):
        study.check_notebook_parameters("smoke", "runs", None, {}, alpha=float("nan"))


# --- generate's names and defaults ----------------------------------------------------------------------------------


def test_the_engine_takes_generates_names_and_defaults(expert, amateur, tokenizer):
    defaults, hf = DecodingConfig(), GenerationConfig._get_default_generation_params()
    assert (defaults.do_sample, defaults.top_k, defaults.top_p, defaults.temperature, defaults.num_return_sequences,
            defaults.repetition_penalty) == (hf["do_sample"], hf["top_k"], hf["top_p"], hf["temperature"],
                                             hf["num_return_sequences"], hf["repetition_penalty"])  # fmt: skip
    common = dict(max_new_tokens=10, seed=4, progress=False, do_sample=True, temperature=1.5)
    three = contrastive_generate(expert, amateur, tokenizer, PROMPTS[:2], num_return_sequences=3, **common)
    one = contrastive_generate(expert, amateur, tokenizer, PROMPTS[:2], **common)
    assert len(three) == 6 and three.prompts == [PROMPTS[0]] * 3 + [PROMPTS[1]] * 3
    assert [three.token_ids[0], three.token_ids[3]] == one.token_ids  # the first sample of each prompt is unchanged
    assert len({tuple(t) for t in three.token_ids[:3]}) > 1  # the others are new draws
    with pytest.raises(TypeError, match="`lam` was removed: .* `plausibility_threshold`"):
        contrastive_generate(expert, amateur, tokenizer, PROMPTS[:2], lam=0.3, **common)
    with pytest.raises(TypeError, match="`lam` was removed"):
        DecodingConfig(lam=0.2)
    top1 = contrastive_generate(expert, amateur, tokenizer, PROMPTS[:2], top_k=1, **common)
    greedy = contrastive_generate(expert, amateur, tokenizer, PROMPTS[:2], max_new_tokens=10, progress=False)
    assert top1.token_ids == greedy.token_ids  # top_k=1 samples the argmax


# --- smaller: extras, the README's system prompt, the folder's model card ------------------------------------------


def test_a_missing_extra_names_the_extra_to_install():
    code = ("import sys; sys.modules['pandas'] = None\nimport congkit\ntry:\n    import congkit.pipeline.evaluation\n"
            "except ModuleNotFoundError as e:\n    print(e)\n")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "needs 'pandas', which is in congkit's 'train' extra: pip install 'congkit[train]'" in out


def test_a_system_prompt_reaches_the_model():
    tok = char_tokenizer()
    ids = encode_prompt(tok, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sort: b a c"}])
    assert "Be brief." in tok.decode(ids)


def test_the_custom_generate_folder_carries_its_model_card():
    card = (Path(CUSTOM_GENERATE_DIR) / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\ntags:\n  - custom_generate\n---")
    for section in ("## Base model", "## Model compatibility", "## Additional arguments", "## Output type(s)",
                    "## Example usage"):  # fmt: skip
        assert section in card


# --- every device branch runs here: each decision is selectable and forced both ways ------------------------------


def test_the_device_and_precision_rule_on_either_branch():
    from congkit.models import default_device, default_dtype

    assert default_device(cuda=True) == "cuda" and default_device(cuda=False) == "cpu"
    assert default_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    assert default_dtype("cuda", bf16_supported=True) == torch.bfloat16
    assert default_dtype("cuda:1", bf16_supported=False) == torch.float32
    assert default_dtype("cpu", bf16_supported=True) == torch.float32


def test_training_arguments_on_either_device(tmp_path):
    from congkit.pipeline.training import TrainConfig, _common_args

    gpu = _common_args(TrainConfig(), str(tmp_path), device="cuda", bf16_supported=True)
    old_gpu = _common_args(TrainConfig(), str(tmp_path), device="cuda", bf16_supported=False)
    cpu = _common_args(TrainConfig(), str(tmp_path), device="cpu", bf16_supported=True)
    assert (gpu["use_cpu"], gpu["bf16"]) == (False, True) and (old_gpu["use_cpu"], old_gpu["bf16"]) == (False, False)
    assert (cpu["use_cpu"], cpu["bf16"]) == (True, False)
    assert _common_args(TrainConfig(), str(tmp_path))["use_cpu"] == (not torch.cuda.is_available())


def test_the_process_group_on_either_device(monkeypatch):
    from congkit.pipeline import distributed

    made = []
    monkeypatch.setattr(distributed, "PartialState", lambda **kwargs: made.append(kwargs) or kwargs)
    distributed.process_state("cuda"), distributed.process_state("cpu"), distributed.process_state()
    assert made == [{"cpu": False}, {"cpu": True}, {"cpu": not torch.cuda.is_available()}]
