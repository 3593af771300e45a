"""The artifact cache: atomic, verified, concurrency-safe."""

import json
import subprocess
import sys
import time

import pytest

from congkit.pipeline.cache import (
    COMPLETE,
    CorruptArtifactWarning,
    build_once,
    cache_view,
    fingerprint,
    is_complete,
    main,
    read_json,
    verify,
)


def write(name, text):
    def build(tmp):
        (tmp / name).write_text(text)

    return build


def test_interrupted_build_leaves_nothing_trusted(tmp_path):
    def crash(tmp):
        (tmp / "half.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_once(tmp_path / "artifact", crash)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
    build_once(tmp_path / "artifact", write("ok.txt", "ok"))
    assert is_complete(tmp_path / "artifact") and (tmp_path / "artifact" / "ok.txt").read_text() == "ok"


def test_manifest_records_sizes_and_hashes_and_verify_finds_damage(tmp_path):
    path = build_once(tmp_path / "a", write("data.txt", "0123456789"), meta={"x": 1})
    manifest = json.loads((path / COMPLETE).read_text())
    assert manifest["files"]["data.txt"]["size"] == 10 and set(manifest["files"]) == {"data.txt", "meta.json"}
    assert verify(path) == []
    (path / "data.txt").write_text("0123456780")  # same size, other contents
    assert verify(path) == [f"{path / 'data.txt'}: contents changed (SHA-256 differs from the manifest)"]
    (path / "data.txt").write_text("01234")  # truncated
    assert verify(path) == [f"{path / 'data.txt'}: 5 bytes, the manifest says 10"]
    (path / "data.txt").unlink()
    assert verify(path) == [f"{path / 'data.txt'}: missing"]


def test_corrupt_artifact_is_rebuilt_with_a_warning_naming_it(tmp_path):
    calls = []

    def build(tmp):
        calls.append(1)
        (tmp / "eval.json").write_text('{"score": 0.25}')

    path = build_once(tmp_path / "stage", build, label="stage 'evaluate'")
    assert build_once(tmp_path / "stage", build) == path and len(calls) == 1  # intact: reused
    (path / "eval.json").write_text('{"score": 0.99}')  # numbers altered by hand
    with pytest.warns(CorruptArtifactWarning, match=r"stage 'evaluate'.*eval.json: contents changed"):
        build_once(tmp_path / "stage", build, label="stage 'evaluate'")
    assert len(calls) == 2 and read_json(path / "eval.json") == {"score": 0.25}


def test_stale_tmp_folders_are_cleaned_by_the_next_builder(tmp_path):
    stale = tmp_path / "artifact.tmp-deadbeef"
    stale.mkdir()
    (stale / "half.bin").write_bytes(b"x" * 10)
    other = tmp_path / "other.tmp-deadbeef"  # another artifact's: not ours to clean
    other.mkdir()
    build_once(tmp_path / "artifact", write("ok.txt", "ok"))
    assert not stale.exists() and other.exists()


def test_read_json_names_the_file(tmp_path):
    bad = tmp_path / "eval.json"
    bad.write_text("{garbage")
    with pytest.raises(ValueError, match=r"eval\.json: not valid JSON"):
        read_json(bad)
    with pytest.raises(FileNotFoundError, match=r"missing\.json: file not found"):
        read_json(tmp_path / "missing.json")


def test_verify_command_reports_corrupt_artifacts(tmp_path, capsys):
    good = build_once(tmp_path / "runs" / "s" / "good", write("a.txt", "a"))
    bad = build_once(tmp_path / "runs" / "s" / "bad", write("b.txt", "bbb"))
    assert main(["verify", str(tmp_path / "runs")]) == 0
    (bad / "b.txt").write_text("bbx")
    assert main(["verify", str(tmp_path / "runs")]) == 1
    out = capsys.readouterr().out
    assert f"CORRUPT {bad}" in out and str(good) not in out.split("CORRUPT")[-1] and "1 of 2 artifacts intact" in out


def test_fingerprint_is_stable_and_order_free():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    with pytest.raises(TypeError, match="cannot fingerprint a object"):
        fingerprint(object())


def test_a_field_counted_unless_default_keeps_older_keys_and_separates_other_values():
    import dataclasses

    from congkit import DecodingConfig

    old_fields = {f.name: getattr(DecodingConfig(), f.name) for f in dataclasses.fields(DecodingConfig)
                  if f.name not in ("cache", "token_choice", "compile", "min_p", "lazy_amateur")}  # fmt: skip
    assert cache_view(DecodingConfig()) == old_fields  # the key a config had before `compile` existed
    assert cache_view(DecodingConfig(cache="dynamic")) == old_fields  # `cache` never counts
    assert cache_view(DecodingConfig(compile=True)) == {**old_fields, "compile": True}


WORKER = """
import os, sys, time
from pathlib import Path
from congkit.pipeline.cache import build_once

path, log = Path(sys.argv[1]), Path(sys.argv[2])

def build(tmp):
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\\n")
    time.sleep(1.5)
    (tmp / "weights.bin").write_bytes(os.urandom(4096))

print(build_once(path, build))
"""


def test_two_processes_build_once_and_never_delete_a_finished_artifact(tmp_path):
    """Two real processes ask for the same artifact at once: one builds, the other waits and reuses it; once the
    artifact has appeared it never disappears (before: the second run deleted the first run's artifact)."""
    path, log = tmp_path / "runs" / "stage" / "abc", tmp_path / "builds.log"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(path), str(log)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    seen, vanished = False, 0
    deadline = time.monotonic() + 120
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        present = (path / COMPLETE).exists() and (path / "weights.bin").exists()
        seen = seen or present
        vanished += seen and not present
        time.sleep(0.005)
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs == [str(path), str(path)]
    assert len(log.read_text().split()) == 1  # built exactly once
    assert vanished == 0 and verify(path) == []
    assert not list(path.parent.glob("abc.tmp-*"))
