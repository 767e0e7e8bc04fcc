"""The browser view: ONE self-contained HTML file (inline CSS, JS and data; nothing from the network).

The page is drawn client-side by ``static/tree.js`` (``window.EagerTree.render(element,
tree)``, the same renderer the server's playground inlines to draw trees as they
grow); this module only inlines that script, its stylesheet and the trees' JSON.
"""

from __future__ import annotations

import html
import json
from importlib.resources import files
from typing import Any, Sequence

LEGEND = (
    '<div class="eager-legend">token entropy, as a share of θ: '
    '<span class="et-h0">&lt;20%</span><span class="et-h1">20-40%</span><span class="et-h2">40-60%</span>'
    '<span class="et-h3">60-80%</span><span class="et-h4">&ge;80%</span> (hover a token for its entropy; '
    'a <span class="et-fork">↳#n</span> marks a fork and its two alternatives)</div>'
)

PAGE_CSS = """
body{margin:1.5rem auto;max-width:80rem;padding:0 1rem;font:14px/1.5 system-ui,sans-serif}
h1{font-size:1.3rem} .eager-page-tree{margin:1.2rem 0;padding-bottom:1rem;border-bottom:1px solid #ddd}
.eager-prompt-row{margin:1.5rem 0;border-top:2px solid #ccc;padding-top:.6rem}
.eager-methods{display:grid;grid-template-columns:repeat(auto-fit,minmax(22rem,1fr));gap:1rem;align-items:start}
.eager-method{border:1px solid #ddd;border-radius:6px;padding:.5rem;overflow-x:auto}
.eager-method h3{margin:.1rem 0 .3rem;font-size:.95rem}
.eager-solved{color:#11782b} .eager-unsolved{color:#b3261e}
.eager-filter{position:sticky;top:0;background:#fff;padding:.4rem 0;border-bottom:1px solid #eee;z-index:1}
"""


def assets() -> tuple[str, str]:
    """The tree view's (CSS, JS) text, for a page that draws trees with ``window.EagerTree.render``."""
    static = files("eager.view") / "static"
    return (static / "tree.css").read_text(encoding="utf-8"), (static / "tree.js").read_text(encoding="utf-8")


def inline_assets() -> str:
    """``<style>`` and ``<script>`` elements with the tree view, to paste into a page's head."""
    css, js = assets()
    return f"<style>\n{css}</style>\n<script>\n{js}</script>\n"


def json_for_script(data: Any) -> str:
    """JSON safe inside ``<script type="application/json">`` (no ``</script>`` or ``<!--`` can close it)."""
    return json.dumps(data, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _page(title: str, body: str, data: Any, boot: str) -> str:
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>\n<style>{PAGE_CSS}</style>\n{inline_assets()}</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n{LEGEND}\n{body}\n"
        f'<script type="application/json" id="eager-data">{json_for_script(data)}</script>\n'
        f"<script>\n{boot}\n</script>\n</body></html>\n"
    )


TREES_BOOT = """(function () {
  var trees = JSON.parse(document.getElementById("eager-data").textContent);
  var host = document.getElementById("eager-trees");
  trees.forEach(function (tree) {
    var box = document.createElement("section");
    box.className = "eager-page-tree";
    host.appendChild(box);
    window.EagerTree.render(box, tree);
  });
})();"""


def render_html(trees: dict[str, Any] | Sequence[dict[str, Any]], *, title: str = "eager: where it branched") -> str:
    """One view tree (``GenerationResult.to_dict()``'s shape) or several, as a self-contained page."""
    trees = [trees] if isinstance(trees, dict) else list(trees)
    return _page(title, '<div id="eager-trees"></div>', trees, TREES_BOOT)


INDEX_BOOT = """(function () {
  var prompts = JSON.parse(document.getElementById("eager-data").textContent);
  var host = document.getElementById("eager-prompts");
  prompts.forEach(function (p) {
    var row = document.createElement("section");
    row.className = "eager-prompt-row";
    row.setAttribute("data-solved", p.solved ? "1" : "0");
    row.id = "prompt-" + p.id;
    var h = document.createElement("h2");
    h.textContent = p.id + " · " + (p.solved ? "solved" : "unsolved");
    h.className = p.solved ? "eager-solved" : "eager-unsolved";
    row.appendChild(h);
    var q = document.createElement("div");
    q.className = "et-prompt";
    q.textContent = p.question + "  (gold: " + p.gold + ")";
    row.appendChild(q);
    var grid = document.createElement("div");
    grid.className = "eager-methods";
    p.trees.forEach(function (tree) {
      var col = document.createElement("div");
      col.className = "eager-method";
      var t = document.createElement("h3");
      var ok = tree.sequences.some(function (s) { return s.correct; });
      t.textContent = tree.method + " (M=" + tree.M + ") " + (ok ? "✓" : "✗");
      t.className = ok ? "eager-solved" : "eager-unsolved";
      col.appendChild(t);
      var box = document.createElement("div");
      col.appendChild(box);
      grid.appendChild(col);
      window.EagerTree.render(box, tree, {header: false});
    });
    row.appendChild(grid);
    host.appendChild(row);
  });
  var select = document.getElementById("eager-filter");
  function apply() {
    var shown = 0;
    host.querySelectorAll(".eager-prompt-row").forEach(function (row) {
      var ok = select.value === "all" || (select.value === "solved") === (row.getAttribute("data-solved") === "1");
      row.style.display = ok ? "" : "none";
      if (ok) shown++;
    });
    document.getElementById("eager-shown").textContent = shown + " of " + prompts.length + " prompts";
  }
  select.addEventListener("change", apply);
  apply();
})();"""

INDEX_BODY = """<div class="eager-filter"><label>show <select id="eager-filter">
<option value="all">all prompts</option><option value="solved">solved (some method has a correct sequence)</option>
<option value="unsolved">unsolved (no method does)</option></select></label> <span id="eager-shown"></span></div>
<div id="eager-prompts"></div>"""


def render_run_index(prompts: Sequence[dict[str, Any]], *, title: str = "eager eval: trees per prompt") -> str:
    """An eval run's page: per prompt (``{"id", "question", "gold", "solved", "trees": [view tree per method]}``),
    the methods side by side, filterable by solved / unsolved."""
    return _page(title, INDEX_BODY, list(prompts), INDEX_BOOT)
