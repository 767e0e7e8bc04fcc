"""Views of branch trees: where the model hesitated, in the terminal and in the browser.

A small API over *view trees* (``GenerationResult.to_dict()``'s shape, see :mod:`eager.view.load`):

* :func:`load_generate_json`, :func:`load_run` (one prompt of an eval run), :func:`run_index`;
* :func:`render_terminal`: a rich Tree, tokens coloured by entropy (honours ``NO_COLOR``);
* :func:`render_html`: one self-contained page; :func:`render_run_index`: an eval run's page;
* :func:`assets` / :func:`inline_assets`: the CSS and JS of ``window.EagerTree.render(element, tree)``,
  for any page that draws trees (the server's playground draws them as they grow).
"""

from eager.view.html import assets, inline_assets, render_html, render_run_index
from eager.view.index import run_index, write_run_index
from eager.view.load import load_generate_json, load_run, tree_of_record, trees_of_generate
from eager.view.terminal import render_terminal

__all__ = [
    "assets",
    "inline_assets",
    "load_generate_json",
    "load_run",
    "render_html",
    "render_run_index",
    "render_terminal",
    "run_index",
    "tree_of_record",
    "trees_of_generate",
    "write_run_index",
]
