"""A Sphinx extension for the book: a glued table is numbered "Table N", with its caption above it.

myst-nb pastes a notebook's output into the book with one directive, `glue:figure`, so a glued pandas table becomes
a figure and is numbered "Fig. N" beside the plots. Neither myst-nb nor Sphinx offers a glue directive for a table,
hence this small transform: a `glue:figure` whose content is an HTML table and no image becomes a `TableFigure`, a
node Sphinx numbers with the tables (`numfig_format["table"]`, one counter shared with Markdown `{table}`s), and its
caption moves above the table, where a reader of tables looks for it. Everything else is Sphinx's own figure HTML.

    # book/_config.yml
    sphinx:
      extra_extensions: [congkit.study.sphinx_tables]
"""

from __future__ import annotations

from docutils import nodes
from sphinx.transforms import SphinxTransform
from sphinx.writers.html5 import HTML5Translator


class TableFigure(nodes.figure):
    """A glued table: a figure node that Sphinx numbers as a table."""


def is_table(figure: nodes.figure) -> bool:
    """A figure that holds an HTML table (a pandas `Styler` or `DataFrame` output) or a docutils table, no image."""
    if any(True for _ in figure.findall(nodes.image)):
        return False
    raw = any("<table" in node.astext() for node in figure.findall(nodes.raw))
    return raw or any(True for _ in figure.findall(nodes.table))


class GluedTablesAsTables(SphinxTransform):
    """Turn each figure that holds a table into a `TableFigure`, its caption first."""

    default_priority = 400  # after the glue directives ran (parse time), before numbering (after the read)

    def apply(self) -> None:
        for figure in list(self.document.findall(nodes.figure)):
            if type(figure) is not nodes.figure or not is_table(figure):
                continue
            table = TableFigure(figure.rawsource, *figure.children, **figure.attributes)
            table["classes"] = [*figure["classes"], "table-figure"]
            captions = [c for c in table.children if isinstance(c, nodes.caption)]
            for caption in captions:
                table.remove(caption)
                table.insert(0, caption)
            table.source, table.line = figure.source, figure.line
            figure.replace_self(table)


def _caption(node: TableFigure) -> str:
    return next((c.astext() for c in node.children if isinstance(c, nodes.caption)), "")


def setup(app):
    app.add_enumerable_node(TableFigure, "table", _caption,
                            html=(HTML5Translator.visit_figure, HTML5Translator.depart_figure))
    app.add_transform(GluedTablesAsTables)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
