"""Probes of the library, CLI, study and cache as a new user and a hostile one would try them.

Each case asserts the documented behaviour: a one-line error naming the argument or file and what was expected, or
the correct result. None may lose data or return a silently wrong result. (Cases checked elsewhere: the moved runs
folder and corrupt stages on the smoke world in test_stages.py; two concurrent processes in test_cache.py; the
release-compatible CD step in test_decoding.py.)
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from datasets import Dataset

from congkit import contrastive_generate, implicit_reward, sample, study
from congkit.models import char_tokenizer, load_causal_lm, load_tokenizer, tiny_llama
from congkit.pipeline import cli
from congkit.pipeline.cache import build_once, read_json, verify
from congkit.pipeline.data import load_saved_dataset

from .conftest import PROMPTS

# --- prompts and sizes at the door ----------------------------------------------------------------------------------


def test_a_plain_string_is_one_prompt_everywhere(expert, amateur, tokenizer):
    kwargs = dict(max_new_tokens=6, seed=0, progress=False)
    one = contrastive_generate(expert, amateur, tokenizer, PROMPTS[0], **kwargs)
    listed = contrastive_generate(expert, amateur, tokenizer, [PROMPTS[0]], **kwargs)
    assert len(one) == 1 and one.token_ids == listed.token_ids  # not one prompt per character
    assert len(sample(expert, tokenizer, PROMPTS[0], **kwargs)) == 1
    scored = implicit_reward(expert, amateur, tokenizer, PROMPTS[0], "Answer: 7")
    assert len(scored.total) == 1
    assert scored.total == implicit_reward(expert, amateur, tokenizer, [PROMPTS[0]], ["Answer: 7"]).total


def _cd(expert, amateur, tokenizer, prompts=PROMPTS, **kw):
    amateur = kw.pop("amateur_model", amateur)
    return contrastive_generate(expert, amateur, tokenizer, prompts, progress=False, **{"max_new_tokens": 4, **kw})


BAD_CALLS = [
    ("None prompt", dict(prompts=[None, "x"]), TypeError, r"prompts\[0\] must be a str, got NoneType"),
    ("int prompt", dict(prompts=["ok", 3]), TypeError, r"prompts\[1\] must be a str, got int"),
    ("blank prompt", dict(prompts=["ok", " "]), ValueError, r"prompts\[1\] is empty"),
    ("float tensor prompts", dict(prompts=torch.tensor([[1.0, 2.0]])), TypeError, r"integer tensor"),
    ("all-padding row", dict(prompts=torch.tensor([[0, 0]])), ValueError, r"row 0 has no tokens"),
    ("dict prompts", dict(prompts={"a": 1}), TypeError, r"single message dict is not a prompt"),
    ("message without content", dict(prompts=[[{"role": "user"}]]), ValueError, r"prompts\[0\]\[0\] must be a message"),
    ("conversation ending with the assistant",
     dict(prompts=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]), ValueError,
     r"ends with an assistant turn"),
    ("max_new_tokens 2.5", dict(max_new_tokens=2.5), TypeError, r"max_new_tokens must be an int, got float 2.5"),
    ("max_new_tokens 0", dict(max_new_tokens=0), ValueError, r"max_new_tokens must be >= 1"),
    ("seed -1", dict(seed=-1), ValueError, r"seed must be >= 0, got -1"),
    ("seed '1'", dict(seed="1"), TypeError, r"seed must be an int, got str"),
    ("batch_size 0", dict(batch_size=0), ValueError, r"batch_size must be >= 1, got 0"),
    ("alpha 1.5", dict(alpha=1.5), ValueError, r"alpha must lie in \[0.0, 1.0\], got 1.5"),
    ("alpha '0.5'", dict(alpha="0.5"), TypeError, r"alpha must be a number, got str"),
    ("min_p 0", dict(min_p=0.0), ValueError, r"min_p .* must lie in \(0.0, 1.0\]"),
    ("temperature 0", dict(temperature=0), ValueError, r"temperature must lie in \(0.0, inf\]"),
    ("do_sample 'yes'", dict(do_sample="yes"), TypeError, r"do_sample must be a bool"),
    ("unknown option", dict(top_q=5), TypeError, r"unknown decoding option\(s\) \['top_q'\]"),
    ("alpha nan", dict(alpha=float("nan")), ValueError, r"alpha must be a finite number, got nan"),
    ("min_p nan", dict(min_p=float("nan")), ValueError, r"min_p .* must be a finite number, got nan"),
    ("top_p nan", dict(top_p=float("nan")), ValueError, r"top_p must be a finite number, got nan"),
    ("temperature inf", dict(temperature=float("inf")), ValueError, r"temperature must be a finite number, got inf"),
    ("penalty nan", dict(repetition_penalty=float("nan")), ValueError, r"repetition_penalty must be a finite number"),
    ("top_k -1", dict(top_k=-1), ValueError, r"top_k must be >= 0"),
    ("num_return_sequences 0", dict(num_return_sequences=0), ValueError, r"num_return_sequences must be >= 1"),
    ("token_choice", dict(token_choice="gpu"), ValueError, r"token_choice must be 'auto', 'head' or 'vocabulary'"),
    ("amateur a string", dict(amateur_model="gpt2"), TypeError, r"amateur \(pre-alignment model pi_ref\) must be a loaded"),
    ("negative index_offset", dict(index_offset=-2), ValueError, r"index_offset must be >= 0"),
]


@pytest.mark.parametrize("name, kwargs, error, match", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_decoding_arguments_give_one_line_errors(expert, amateur, tokenizer, name, kwargs, error, match):
    with pytest.raises(error, match=match):
        _cd(expert, amateur, tokenizer, **kwargs)


def test_bad_scoring_arguments(expert, amateur, tokenizer):
    with pytest.raises(TypeError, match=r"responses\[0\] must be a str, got int"):
        implicit_reward(expert, amateur, tokenizer, ["p"], [42])  # was scored as the text "42"
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        implicit_reward(expert, amateur, tokenizer, ["p", "q"], ["r"])
    with pytest.raises(ValueError, match=r"batch_size must be >= 1"):
        implicit_reward(expert, amateur, tokenizer, ["p"], ["r"], batch_size=0)
    with pytest.raises(ValueError, match=r"beta must lie in \(0.0, inf\]"):
        implicit_reward(expert, amateur, tokenizer, ["p"], ["r"], beta=0)


def test_a_tokenizer_larger_than_the_model_is_named(tokenizer):
    small = tiny_llama(40, hidden_size=16, num_layers=1, num_heads=2)  # the char tokenizer has 101 tokens
    with pytest.raises(ValueError, match=r"token id \d+, but the model's embedding has only 40 rows"):
        sample(small, tokenizer, PROMPTS, max_new_tokens=2, progress=False)


def test_models_on_different_devices_are_named(expert, tokenizer):
    elsewhere = tiny_llama(len(tokenizer), hidden_size=32, num_layers=2, num_heads=2, seed=2).to("meta")
    with pytest.raises(ValueError, match=r"expert .* is on cpu but amateur .* is on meta"):
        _cd(expert, elsewhere, tokenizer)


# --- artifacts: files named, corruption never trusted -------------------------------------------------------------


@pytest.fixture
def saved_model(tmp_path, tokenizer):
    folder = tmp_path / "model"
    tiny_llama(len(tokenizer), hidden_size=16, num_layers=1, num_heads=2).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_truncated_checkpoint_names_the_folder_and_file(saved_model):
    weights = saved_model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(OSError, match=r"cannot load the model in .*model'.*\['model.safetensors'\]"):
        load_causal_lm(saved_model, device="cpu")


def test_a_truncated_checkpoint_in_a_completed_stage_is_caught(tmp_path, saved_model):
    stage = build_once(tmp_path / "stage", lambda tmp: shutil.copytree(saved_model, tmp, dirs_exist_ok=True))
    weights = stage / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert verify(stage) == [f"{weights}: 100 bytes, the manifest says {(saved_model / 'model.safetensors').stat().st_size}"]


def test_folders_missing_config_or_tokenizer_files_say_what_is_missing(saved_model):
    (saved_model / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"has no config.json"):
        load_causal_lm(saved_model, device="cpu")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (saved_model / name).unlink()
    with pytest.raises(FileNotFoundError, match=r"has no tokenizer files"):
        load_tokenizer(saved_model)


def test_garbage_json_and_dataset_metadata_name_the_file(tmp_path):
    (tmp_path / "card.json").write_text("not json")
    with pytest.raises(ValueError, match=r"card\.json: not valid JSON"):
        read_json(tmp_path / "card.json")
    Dataset.from_dict({"prompt": ["a"]}).save_to_disk(str(tmp_path / "ds"))
    (tmp_path / "ds" / "dataset_info.json").write_text("{garbage")
    with pytest.raises(ValueError, match=r"ds: cannot read the saved dataset"):
        load_saved_dataset(tmp_path / "ds")
    with pytest.raises(FileNotFoundError, match=r"nothing: no saved dataset here"):
        load_saved_dataset(tmp_path / "nothing")


def test_altered_numbers_in_a_completed_artifact_are_not_used(tmp_path):
    path = build_once(tmp_path / "evaluate", lambda tmp: (tmp / "eval.json").write_text('{"reward": 0.5}'))
    (path / "eval.json").write_text('{"reward": 0.9}')
    with pytest.warns(UserWarning, match="eval.json: contents changed"):
        build_once(path, lambda tmp: (tmp / "eval.json").write_text('{"reward": 0.5}'))
    assert read_json(path / "eval.json") == {"reward": 0.5}


# --- the CLI: never overwrite an input, empty inputs named --------------------------------------------------------


@pytest.fixture
def prompts_folder(tmp_path):
    folder = tmp_path / "prompts"
    Dataset.from_dict({"prompt": ["p1", "p2"], "source": ["a", "b"]}).save_to_disk(str(folder))
    return folder


@pytest.mark.parametrize("output", ["same", "inside", "parent"])
def test_cli_refuses_an_output_that_overlaps_an_input(prompts_folder, saved_model, output):
    target = {"same": prompts_folder, "inside": prompts_folder / "out", "parent": prompts_folder.parent}[output]
    with pytest.raises(SystemExit, match=r"--output .* overlaps the input --prompts"):
        cli.main(["generate", "--expert", str(saved_model), "--prompts", str(prompts_folder), "--output", str(target)])
    assert load_saved_dataset(prompts_folder).column_names == ["prompt", "source"]  # the input is intact


def test_cli_names_empty_and_malformed_datasets(tmp_path, saved_model):
    Dataset.from_dict({"prompt": []}).save_to_disk(str(tmp_path / "empty"))
    with pytest.raises(SystemExit, match=r"--prompts .*empty' is empty: nothing to do"):
        cli.main(["generate", "--expert", str(saved_model), "--prompts", str(tmp_path / "empty"),
                  "--output", str(tmp_path / "out")])  # fmt: skip
    with pytest.raises(SystemExit, match=r"--data .* lacks column\(s\) \['completion'\]"):
        cli.main(["train", "--method", "sft", "--model", str(saved_model), "--data", str(tmp_path / "empty"),
                  "--output", str(tmp_path / "out")])  # fmt: skip
    with pytest.raises(SystemExit, match="alpha must lie in"):
        cli.main(["generate", "--expert", str(saved_model), "--amateur", str(saved_model), "--alpha", "2",
                  "--prompts", str(tmp_path / "empty"), "--output", str(tmp_path / "out")])  # fmt: skip


def test_cli_rejects_bad_integers_by_flag(capsys, tmp_path):
    for flag, value in (("--seed", "abc"), ("--seed", "-1"), ("--batch-size", "0")):
        with pytest.raises(SystemExit):
            cli.main(["generate", "--expert", "e", "--prompts", "p", "--output", str(tmp_path / "o"), flag, value])
        assert f"argument {flag}: invalid" in capsys.readouterr().err


# --- the study: arguments checked before anything is touched -------------------------------------------------------


@pytest.fixture
def fake_repo(tmp_path, monkeypatch):
    """A stand-in repository whose book holds the executed notebooks of an earlier run."""
    (tmp_path / "book" / "notebooks").mkdir(parents=True)
    (tmp_path / "book" / "notebooks" / "05_results.ipynb").write_text("{}")
    monkeypatch.setattr(study.driver, "REPO", tmp_path)  # the command line reads it there
    return tmp_path


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--profile", "real", "--real", "{bad"], "--real is not valid JSON"),
        (["--profile", "real", "--real", '["x"]'], "--real must be a JSON object"),
        (["--profile", "real", "--real", '{"weak_modle": "x"}'], r"unknown field\(s\) \['weak_modle'\]"),
        (["--profile", "real", "--real", '{"n_train_prompts": "many"}'], "n_train_prompts must be a positive integer"),
        (["--only", "99"], r"--only \['99'\] matches no notebook"),
        (["--profile", "huge"], "invalid choice: 'huge'"),
    ],
)
def test_study_arguments_are_checked_before_any_file_is_touched(fake_repo, capsys, argv, match):
    with pytest.raises(SystemExit) as exit_info:
        study.main(argv)
    assert exit_info.value.code == 2
    assert match.replace("\\", "") in capsys.readouterr().err or pytest.fail("message not found")
    assert (fake_repo / "book" / "notebooks" / "05_results.ipynb").read_text() == "{}"  # nothing deleted


def test_a_failing_notebook_run_keeps_the_published_notebooks(fake_repo, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("kernel died")

    monkeypatch.setattr(study.driver, "run_notebooks", explode)
    with pytest.raises(RuntimeError, match="kernel died"):
        study.main(["--profile", "smoke", "--no-book", "--workers", "1"])
    assert (fake_repo / "book" / "notebooks" / "05_results.ipynb").read_text() == "{}"
    assert [p.name for p in (fake_repo / "book").iterdir()] == ["notebooks"]  # no temporary folder left


@pytest.mark.parametrize(
    "params, error, match",
    [
        (dict(seed="abc"), TypeError, "parameter seed must be an int, got str"),
        (dict(seed=7), ValueError, r"seed=7: profile 'smoke' runs seeds \[0\] only"),
        (dict(profile="huge"), ValueError, "parameter profile='huge': unknown profile"),
        (dict(alpha=1.5), ValueError, r"parameter alpha must lie in \[0.0, 1.0\]"),
        (dict(lam=0), ValueError, r"parameter lam must lie in \(0.0, 1.0\]"),
        (dict(n_prompts=0), ValueError, "parameter n_prompts must be >= 1"),
        (dict(runs_dir=3), TypeError, "parameter runs_dir must be a folder path"),
        (dict(profile="real", real={"weak_modle": "x"}), ValueError, r"unknown field\(s\) \['weak_modle'\]"),
    ],
)
def test_notebook_parameters_stop_at_the_first_cell(params, error, match):
    with pytest.raises(error, match=match):
        study.check_notebook_parameters(**{"profile": "smoke", "runs_dir": "runs", "seed": 0, **params})
    assert study.check_notebook_parameters("default", "runs", 2, {}, alpha=0.5, lam=0.1, n_prompts=8).name == "default"


def test_char_tokenizer_fixture_is_the_one_the_probes_assume():
    assert len(char_tokenizer()) == 101


def test_the_quiet_environment_is_the_kernels_not_the_callers(monkeypatch):
    monkeypatch.setenv("PYTHONWARNINGS", "default")
    monkeypatch.delenv("CONGKIT_QUIET", raising=False)
    with study.quiet_environment():
        assert os.environ["PYTHONWARNINGS"] == "ignore" and os.environ["CONGKIT_QUIET"] == "1"
    assert os.environ["PYTHONWARNINGS"] == "default" and "CONGKIT_QUIET" not in os.environ


# --- nothing lost, nothing stale (issue: the CLI never replaces what it did not write; artifacts fully verified) ------


def _generate_argv(saved_model, prompts_folder, output, *extra):
    return ["generate", "--expert", str(saved_model), "--prompts", str(prompts_folder), "--output", str(output),
            "--max-new-tokens", "3", *extra]  # fmt: skip


def test_cli_never_replaces_what_it_did_not_write(tmp_path, saved_model, prompts_folder):
    folder = tmp_path / "runs"
    (folder / "stage").mkdir(parents=True)
    (folder / "stage" / "keep.txt").write_text("precious")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    for target, match in ((folder, "was not written by `congkit.pipeline.cli generate`"), (a_file, "is an existing file")):
        for extra in ((), ("--overwrite",)):
            with pytest.raises(SystemExit, match=match):
                cli.main(_generate_argv(saved_model, prompts_folder, target, *extra))
    assert (folder / "stage" / "keep.txt").read_text() == "precious" and a_file.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "notes.txt", "prompts", "runs"]  # nothing beside


def test_cli_replaces_its_own_output_only_with_overwrite(tmp_path, saved_model, prompts_folder):
    out = tmp_path / "cd"
    cli.main(_generate_argv(saved_model, prompts_folder, out))
    mark = json.loads((out / ".congkit-cli.json").read_text())
    assert mark["command"] == "generate" and load_saved_dataset(out).column_names == ["prompt", "completion"]
    with pytest.raises(SystemExit, match="pass --overwrite to replace it"):
        cli.main(_generate_argv(saved_model, prompts_folder, out))
    with pytest.raises(SystemExit, match="was not written by `congkit.pipeline.cli train`"):
        cli.main(["train", "--method", "sft", "--model", str(saved_model), "--data", str(prompts_folder),
                  "--output", str(out), "--overwrite"])  # fmt: skip
    cli.main(_generate_argv(saved_model, prompts_folder, out, "--overwrite", "--seed", "3"))
    assert json.loads((out / ".congkit-cli.json").read_text())["arguments"]["seed"] == 3
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert left == [".cd.lock"]  # no partial or old copy left; the empty lock file stays (removing it would race)


def test_cli_refuses_zero_epochs_and_non_text_completions(tmp_path, saved_model, capsys):
    Dataset.from_dict({"prompt": ["a", "b"], "completion": [1, 2]}).save_to_disk(str(tmp_path / "ints"))
    with pytest.raises(SystemExit):
        cli.main(["train", "--method", "sft", "--model", str(saved_model), "--data", str(tmp_path / "ints"),
                  "--output", str(tmp_path / "o"), "--epochs", "0"])  # fmt: skip
    assert "argument --epochs: invalid number > 0 value: '0'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="column 'completion' must hold text"):
        cli.main(["train", "--method", "sft", "--model", str(saved_model), "--data", str(tmp_path / "ints"),
                  "--output", str(tmp_path / "o")])  # fmt: skip


def test_a_file_added_to_a_finished_artifact_is_named_and_the_artifact_rebuilt(tmp_path, capsys):
    from congkit.pipeline.cache import artifacts, main

    path = build_once(tmp_path / "stage" / "abc", lambda tmp: (tmp / "data.txt").write_text("x"),
                      meta={"stage": "stage", "summary": "stage seed=0"})  # fmt: skip
    (path / "cache-1234.arrow").write_bytes(b"written later")
    assert verify(path) == [f"{path / 'cache-1234.arrow'}: not in the manifest (written after the artifact was finished)"]
    assert main(["verify", str(tmp_path)]) == 1
    assert "cache-1234.arrow: not in the manifest" in capsys.readouterr().out
    assert [(r["summary"], r["intact"]) for r in artifacts(tmp_path)] == [("stage seed=0", False)]
    with pytest.warns(UserWarning, match="cache-1234.arrow: not in the manifest"):
        build_once(path, lambda tmp: (tmp / "data.txt").write_text("x"), meta={"stage": "stage",
                                                                              "summary": "stage seed=0"})  # fmt: skip
    assert not (path / "cache-1234.arrow").exists() and verify(path) == []
    main(["ls", str(tmp_path)])
    assert "stage/abc  stage seed=0  (2 files" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--only", ""], "--only needs at least one non-empty notebook name prefix"),
        (["--only"], "--only needs at least one non-empty notebook name prefix"),
        (["--profile", "smoke", "--real", '{"weak_model": "x"}'], "--real is given but profile 'smoke' ignores it"),
    ],
)
def test_study_arguments_that_would_mean_something_else_are_refused(fake_repo, capsys, argv, match):
    with pytest.raises(SystemExit):
        study.main(argv)
    assert match in capsys.readouterr().err


def test_study_runs_that_is_a_file_is_named(fake_repo, tmp_path, capsys):
    (tmp_path / "runs.txt").write_text("")
    with pytest.raises(SystemExit):
        study.main(["--runs", str(tmp_path / "runs.txt"), "--no-book"])
    assert "is a file, not a folder" in capsys.readouterr().err


def test_a_killed_runs_leftovers_are_removed_and_a_live_runs_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # fmt: skip
    (tmp_path / f".notebooks-tmp-{dead}-abcd1234").mkdir()
    (tmp_path / f".notebooks-tmp-{os.getpid()}-abcd1234").mkdir()
    removed = study.remove_dead_runs_leftovers(tmp_path)
    assert [p.name for p in removed] == [f".notebooks-tmp-{dead}-abcd1234"]
    assert [p.name for p in tmp_path.iterdir()] == [f".notebooks-tmp-{os.getpid()}-abcd1234"]


@pytest.mark.parametrize("injected, match", [({"alpah": 0.3}, r"unknown parameter\(s\) \['alpah'\]"),
                                             ({"real": "x"}, "parameter real must be a dict")])  # fmt: skip
def test_a_chapter_given_an_unknown_parameter_fails_at_its_first_cell(injected, match):
    """As papermill runs it: the parameters cell, then the injected one ("# Parameters"), then the setup cell."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        shell.run_cell('profile: str = "smoke"\nruns_dir: str = ""\nalpha: float = 0.5\nreal: dict = {}\n',
                       store_history=True)  # fmt: skip
        shell.run_cell("# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in injected.items()), store_history=True)
        result = shell.run_cell("from congkit.study import check_notebook_parameters\n"
                                "check_notebook_parameters(profile, runs_dir, None, real, alpha=alpha)",
                                store_history=True)  # fmt: skip
        assert isinstance(result.error_in_exec, (ValueError, TypeError))
        assert re.search(match, str(result.error_in_exec))
    finally:
        InteractiveShell.clear_instance()


WATCHED_WORKER = """
import os, sys, time
from congkit.study.workers import run_in_workers

def job(seconds):
    print(os.getpid(), flush=True)
    time.sleep(seconds)
    return seconds

if __name__ == "__main__":
    print("parent", os.getpid(), flush=True)
    run_in_workers(job, [120, 120], 2, lambda d, t, r: "done")
"""


@pytest.mark.slow
@pytest.mark.parametrize("signal_", [signal.SIGKILL, signal.SIGTERM])
def test_build_workers_die_with_their_parent(tmp_path, signal_):
    script = tmp_path / "run.py"
    script.write_text(WATCHED_WORKER)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    lines = [parent.stdout.readline().strip() for _ in range(3)]  # the parent, then each worker's pid
    workers = [int(line) for line in lines[1:]]
    parent.send_signal(signal_)
    parent.wait(timeout=30)
    deadline = time.time() + 30
    while time.time() < deadline and any(_running(pid) for pid in workers):
        time.sleep(0.2)
    assert not any(_running(pid) for pid in workers), "a worker outlived its parent"


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_a_run_is_compared_with_the_reference_results(tmp_path):
    reference, run = tmp_path / "reference", tmp_path / "run"
    for folder in (reference, run):
        folder.mkdir()
        pd.DataFrame({"claim": ["1", "3a"], "verdict": ["holds", "does not hold"],
                      "estimate": [0.756, -0.113]}).to_csv(folder / "verdicts.csv", index=False)  # fmt: skip
        for name in ("preconditions.csv", "decomposition.csv", "results.csv"):
            pd.DataFrame({"name": ["a"], "value": [0.5]}).to_csv(folder / name, index=False)
    assert study.compare_with_reference(run, reference) == []
    pd.DataFrame({"claim": ["1", "3a"], "verdict": ["holds", "inconclusive"],
                  "estimate": [0.756 + 1e-9, -0.101]}).to_csv(run / "verdicts.csv", index=False)  # fmt: skip
    assert study.compare_with_reference(run, reference) == [
        "verdicts.csv row 1 verdict: reference 'does not hold', this run 'inconclusive'",
        "verdicts.csv row 1 estimate: reference -0.113, this run -0.101"]  # fmt: skip
    (run / "decomposition.csv").unlink()
    assert "decomposition.csv: missing from the run" in study.compare_with_reference(run, reference)
    study.accept_new_reference(run.parent / "reference", reference)  # the reference accepted as itself: unchanged
    (reference / "preconditions.csv").unlink()  # a reference table deleted: an error naming it, never "matches"
    with pytest.raises(FileNotFoundError, match="preconditions.csv: reference table missing"):
        study.compare_with_reference(run, reference)
    (reference / "preconditions.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="preconditions.csv: not a readable CSV table"):
        study.read_reference(reference)
    (reference / "preconditions.csv").write_text("")
    with pytest.raises(ValueError, match="preconditions.csv: not a readable CSV table"):
        study.read_reference(reference)


def test_the_study_refuses_a_broken_reference_and_bad_workers_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(study.driver, "REFERENCE", tmp_path)  # an empty reference folder
    with pytest.raises(SystemExit):
        study.main(["--profile", "default", "--runs", str(tmp_path / "runs")])
    assert "reference table missing" in capsys.readouterr().err and not (tmp_path / "runs").exists()
    with pytest.raises(SystemExit):
        study.main(["--profile", "smoke", "--workers", "-3", "--runs", str(tmp_path / "runs")])
    assert "--workers must be >= 1, got -3" in capsys.readouterr().err
