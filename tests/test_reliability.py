"""Nothing lost to a race, nothing trained for nothing: the CLI claims its output before any work, and training that
could change no weight is refused."""

import argparse
import json

import pytest
from filelock import FileLock

from congkit.pipeline import cli


def _args(tmp_path, **kw) -> argparse.Namespace:
    return argparse.Namespace(command="generate", output=str(tmp_path / "out"), overwrite=False, **kw)


def test_a_second_run_on_the_same_output_is_refused_while_the_first_holds_it(tmp_path):
    held = FileLock(str(tmp_path / ".out.lock"))
    held.acquire()
    try:
        with pytest.raises(SystemExit, match="another congkit.pipeline.cli run is writing --output"):
            cli.claim_output(_args(tmp_path))
    finally:
        held.release()
    claim = cli.claim_output(_args(tmp_path))
    assert claim.lock.is_locked and (claim.partial / cli.PARTIAL_MARK).is_file()
    claim.lock.release()


def test_a_partial_folder_the_cli_did_not_make_is_never_deleted(tmp_path):
    mine = tmp_path / ".out.partial"
    mine.mkdir()
    (mine / "notes.txt").write_text("a user's file")
    with pytest.raises(SystemExit, match="was not made by congkit.pipeline.cli: nothing is deleted"):
        cli.claim_output(_args(tmp_path))
    assert (mine / "notes.txt").read_text() == "a user's file"
    assert not FileLock(str(tmp_path / ".out.lock")).is_locked
    mine.rename(tmp_path / "moved")
    first = cli.claim_output(_args(tmp_path))  # a killed run's own partial folder is cleared by the next run
    (first.partial / "half-written").write_text("x")
    first.lock.release()
    second = cli.claim_output(_args(tmp_path))
    assert not (second.partial / "half-written").exists()
    second.lock.release()


def test_an_output_that_appears_during_the_run_is_left_alone(tmp_path):
    args = _args(tmp_path)
    claim = cli.claim_output(args)
    (claim.partial / "result.txt").write_text("the result")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "theirs.txt").write_text("someone else's")
    with pytest.raises(SystemExit, match="appeared or changed while this run worked; .* kept in"):
        cli.publish(claim, args)
    assert (tmp_path / "out" / "theirs.txt").read_text() == "someone else's"
    assert (claim.partial / "result.txt").read_text() == "the result"
    claim.lock.release()
    (tmp_path / "out" / "theirs.txt").unlink()
    (tmp_path / "out").rmdir()
    claim = cli.claim_output(args)
    (claim.partial / "result.txt").write_text("the result")
    cli.publish(claim, args)
    assert (tmp_path / "out" / "result.txt").read_text() == "the result"
    assert json.loads((tmp_path / "out" / cli.MARK).read_text())["command"] == "generate"
    assert not (tmp_path / "out" / cli.PARTIAL_MARK).exists() and not claim.lock.is_locked


def test_training_that_would_change_no_weight_is_refused(tokenizer, tmp_path):
    import torch
    from datasets import Dataset

    from congkit.models import tiny_llama
    from congkit.pipeline.training import TrainConfig, TrainingChangesNothing, train_sft

    data = Dataset.from_dict({"prompt": ["a", "b", "c", "d"], "completion": ["x", "y", "z", "w"]})
    model = tiny_llama(len(tokenizer), hidden_size=16, num_layers=1, num_heads=2, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # 4 rows, batch 32: one optimiser step, which the warm-up takes at a learning rate of 0
    for cfg in (TrainConfig(), TrainConfig(num_train_epochs=1e-9, per_device_train_batch_size=1)):
        with pytest.raises(TrainingChangesNothing, match="would change no weight: 1 batches an epoch, 1 optimiser"
                           if cfg.per_device_train_batch_size == 32 else "would change no weight: 4 batches"):
            train_sft(model, tokenizer, data, cfg, str(tmp_path / "work"))
    for bad, match in ((dict(learning_rate=0.0), "learning_rate must lie in"),
                       (dict(num_train_epochs=0), "num_train_epochs must lie in")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            train_sft(model, tokenizer, data, TrainConfig(**bad), str(tmp_path / "work"))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    trained, _ = train_sft(model, tokenizer, data, TrainConfig(warmup_steps=0.0), str(tmp_path / "work"))
    assert not all(torch.equal(v, before[k]) for k, v in trained.state_dict().items())  # one step without warm-up


def test_a_pipeline_or_cli_that_would_train_nothing_says_so(tmp_path):
    from congkit import PipelineConfig, TrainConfig

    with pytest.raises(ValueError, match=r"PipelineConfig.strong_sft.num_train_epochs must lie in"):
        PipelineConfig(strong_sft=TrainConfig(num_train_epochs=0)).validate()


def test_chapters_run_the_checkout_that_runs_the_study_and_name_its_commit(tmp_path):
    import shutil
    import subprocess

    from congkit import study
    from congkit.pipeline import provenance

    env = study.kernel_environment()
    assert env["PYTHONPATH"].split(":")[0] == str(study.REPO) == env["CONGKIT_CHECKOUT"]
    study.check_checkout(str(study.REPO))  # the same checkout: fine
    assert provenance.REPO == study.REPO and (provenance.REPO / "pyproject.toml").is_file()  # the checkout's root
    if shutil.which("git") and (study.REPO / ".git").exists():  # a clone names its commit, never "unknown"
        assert not provenance.commit().startswith("unknown"), provenance.commit()
    with pytest.raises(RuntimeError, match="imported congkit from .* but the study runs the one in"):
        study.check_checkout(str(tmp_path))
    copy = tmp_path / "copy"
    shutil.copytree(study.REPO / "congkit", copy / "congkit", ignore=shutil.ignore_patterns("__pycache__"))
    assert provenance.commit(copy) == "unknown (not a git checkout)"
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert provenance.commit(copy).startswith("unknown (not a git checkout: inside another repository")


def test_failures_name_their_file_or_argument(tmp_path, tokenizer):
    from datasets import Dataset

    from congkit import PipelineConfig, study
    from congkit.pipeline import provenance, record_timings
    from congkit.pipeline.training import to_trl_format
    from congkit.study import worlds

    timings = tmp_path / "timings.csv"
    for content in ("", "\x00\x01garbage\n1,2\n", "stage,artifact,seed,method,eps,seconds\nweak_pool,a,0,,0.0,fast\n"):
        timings.write_text(content)
        for read in (provenance.stage_seconds, lambda p: record_timings(p, [])):
            with pytest.raises(ValueError, match=r"timings.csv: not a timings table"):
                read(timings)
    with pytest.raises(ValueError, match="no worlds to run"):
        worlds.plan_pipelines(tmp_path, "fixed", worlds=[])
    with pytest.raises(ValueError, match=r"seeds repeats a seed \(\[0, 0\]\)"):
        PipelineConfig(seeds=[0, 0]).validate()
    with pytest.raises(ValueError, match="runs_dir .* is a file, not a folder"):
        study.check_notebook_parameters("smoke", str(timings))
    data = Dataset.from_dict({"prompt": ["a", None], "completion": ["x", "y"]})
    with pytest.raises(ValueError, match="training data row 1: prompt must be text"):
        to_trl_format(tokenizer, data, ("completion",))
    dangling = tmp_path / "out"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(SystemExit, match="is a symbolic link to nothing"):
        cli.main(["generate", "--expert", "e", "--prompts", "p", "--output", str(dangling)])


def test_the_cache_lists_what_it_holds_despite_odd_files(tmp_path):
    from congkit.pipeline import cache

    cache.build_once(tmp_path / "stage" / "a", lambda tmp: (tmp / "x.txt").write_text("x"), meta={"stage": "s"})
    rows = cache.artifacts(tmp_path)
    assert len(rows) == 1 and rows[0]["intact"]
    listed = cache.build_once(tmp_path / "stage" / "b", lambda tmp: (tmp / "meta.json").write_text("[1, 2]"))
    nested = cache.build_once(tmp_path / "stage" / "c", lambda tmp: ((tmp / "sub").mkdir(),
                                                                     (tmp / "sub" / cache.COMPLETE).write_text("{}")))
    rows = {r["folder"]: r for r in cache.artifacts(tmp_path)}
    assert set(rows) == {"stage/a", "stage/b", "stage/c"} and all(r["intact"] for r in rows.values())
    assert cache.verify_tree(tmp_path) == {} and listed.exists() and nested.exists()
    link = tmp_path / "stage" / "d"
    link.symlink_to(tmp_path / "gone")
    with pytest.warns(cache.CorruptArtifactWarning, match="symbolic link to nothing"):
        built = cache.build_once(link, lambda tmp: (tmp / "y.txt").write_text("y"))
    assert (built / "y.txt").read_text() == "y" and not built.is_symlink()


INTERRUPTED = """
import time
from congkit.study.workers import run_in_workers
run_in_workers(time.sleep, [60, 60], 2, lambda done, total, result: f"{done}/{total}")
"""


@pytest.mark.slow
def test_an_interrupted_build_says_so_and_stops_its_workers_at_once():
    import os
    import signal
    import subprocess
    import sys
    import time

    run = subprocess.Popen([sys.executable, "-c", INTERRUPTED], stderr=subprocess.PIPE, text=True)
    time.sleep(8)  # the workers have started their minute-long jobs
    workers = subprocess.run(["pgrep", "-P", str(run.pid)], capture_output=True, text=True).stdout.split()
    assert workers
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=120)  # a guard against a hang, not a speed check
    assert "interrupted: stopping the build workers now" in err
    assert "1/2" not in err  # it stopped without waiting for a minute-long job to finish
    time.sleep(1)
    for pid in workers:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


PARENT = """
import subprocess, sys, time
from congkit.study.workers import die_with_parent
child = subprocess.Popen(["sleep", "60"], preexec_fn=die_with_parent)
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.slow
def test_a_book_build_child_dies_with_the_study():
    import os
    import signal
    import subprocess
    import sys
    import time

    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)  # a killed study: no handler of its own runs
    parent.wait()
    for _ in range(50):
        if not os.path.exists(f"/proc/{child}") or open(f"/proc/{child}/stat").read().split()[2] == "Z":
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the child outlived its killed parent")
