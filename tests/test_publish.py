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
    clean_executed(nb, ("/home/me/congkit/runs", "/home/me/congkit"))
    assert injected.source.splitlines()[-1] == 'runs_dir = ""' and "remove-cell" in injected.metadata["tags"]
    assert [o.get("name") for o in shown.outputs] == ["stdout", None]  # stderr gone
    text = nbformat.writes(nb)
    assert "/home/me" not in text and "./x" in text and "<p>./book</p>" in text
