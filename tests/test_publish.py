"""What a published chapter carries: no stderr, the injected parameters hidden, no folder of this machine, in the page
or in its downloadable notebook."""

import nbformat

from congkit.study import clean_executed


def test_an_executed_chapter_is_cleaned_of_stderr_and_machine_paths():
    nb = nbformat.v4.new_notebook()
    injected = nbformat.v4.new_code_cell('# Parameters\nprofile = "smoke"\nruns_dir = "/home/me/congkit/runs"\n')
    injected.metadata["tags"] = ["injected-parameters"]
    shown = nbformat.v4.new_code_cell("print(path)")
    shown.outputs = [nbformat.v4.new_output("stream", name="stdout", text="saved in /home/me/congkit/runs/x\n"),
                     nbformat.v4.new_output("stream", name="stderr", text="[congkit] strong seed=0\n"),
                     nbformat.v4.new_output("display_data", data={"text/html": "<p>/home/me/congkit/book</p>"})]
    nb.cells = [injected, shown]
    nb.metadata["papermill"] = {"parameters": {"profile": "smoke", "runs_dir": "/home/me/congkit/runs"},
                                "input_path": "/home/me/congkit/notebooks/x.md"}  # fmt: skip
    clean_executed(nb, ("/home/me/congkit/runs", "/home/me/congkit"))
    assert injected.source.splitlines()[-1] == 'runs_dir = ""' and "remove-cell" in injected.metadata["tags"]
    assert [o.get("name") for o in shown.outputs] == ["stdout", None]  # stderr gone
    text = nbformat.writes(nb)
    assert "/home/me" not in text and "./x" in text and "<p>./book</p>" in text
    assert nb.metadata["papermill"]["parameters"]["runs_dir"] == ""


def test_committed_chapters_fill_only_what_this_run_lacks(tmp_path):
    from congkit.study import fill_missing_chapters

    committed, out = tmp_path / "committed", tmp_path / "notebooks"
    committed.mkdir()
    out.mkdir()
    for name in ("05_results.ipynb", "06_regime.ipynb"):
        (committed / name).write_text("committed")
    (out / "05_results.ipynb").write_text("executed here")
    assert fill_missing_chapters(out, committed) == ["06_regime.ipynb"]
    assert (out / "05_results.ipynb").read_text() == "executed here" and (out / "06_regime.ipynb").exists()
    assert fill_missing_chapters(out, committed) == []


def test_the_machine_line_names_the_gpu_or_says_there_is_none():
    import torch

    from congkit.pipeline.provenance import gpu_name, machine

    assert machine(gpu="NVIDIA H200").endswith(", NVIDIA H200")  # the GPU branch, forced on this CPU machine
    assert machine(gpu="").endswith(", no GPU")
    assert machine() == machine(gpu=gpu_name()) and (gpu_name() != "") == torch.cuda.is_available()
