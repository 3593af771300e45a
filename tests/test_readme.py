"""The README's benchmark figures come from the committed JSON (its table is exactly what the JSON renders to), and
its usage blocks run as written."""

import json
import re
import runpy
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_readme_benchmark_table_equals_the_committed_json():
    render = runpy.run_path(str(REPO / "benchmarks" / "readme_table.py"))
    results = json.loads((REPO / "benchmarks" / "results" / "decoding_cpu2.json").read_text())
    table = render["table"](results)
    assert table in (REPO / "README.md").read_text()
    # the rendering itself is the JSON's numbers: change one and the table changes
    changed = dict(results, cd_vs_hf_generate=results["cd_vs_hf_generate"] + 0.1)
    assert render["table"](changed) != table and f"{results['cd_vs_hf_generate']:.2f} [" in table
    peers = json.loads((REPO / "benchmarks" / "results" / "decoding_cpu2_peers.json").read_text())
    assert render["table"](peers, render["PEER_ROWS"]) in (REPO / "README.md").read_text()
    ceiling = json.loads((REPO / "benchmarks" / "results" / "decoding_cpu2_ceiling.json").read_text())
    assert render["table"](ceiling, render["CEILING_ROWS"]) in (REPO / "README.md").read_text()
    lazy = json.loads((REPO / "benchmarks" / "results" / "lazy_cd_cpu2.json").read_text())
    assert render["table"](lazy, render["LAZY_ROWS"]) in (REPO / "README.md").read_text()
    assert lazy["pair"].startswith("study weak pair") and lazy["seeds"] == [0, 7]  # the pair it was measured on


def test_the_readme_usage_blocks_run_as_written(capsys):
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Using the library") : text.index("## The study")]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2  # the library, then run_cong
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "'completion'" in printed and "LlamaForCausalLM" in printed  # run_cong's CD data and its trained ConG
