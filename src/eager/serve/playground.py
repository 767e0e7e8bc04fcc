"""The playground at ``/``: type a prompt, pick n and theta, watch the tree grow.

One self-contained page (no external assets). It posts to ``/v1/eager/tree``
and reads its SSE feed of GenerationResult dicts as the tree grows; each is
drawn by the tree view's ``window.EagerTree.render(element, tree)``
(:mod:`eager.view`, inlined into the page: tokens coloured by entropy, forks
marked with their entropy against theta_eff and the two alternatives).
"""

from __future__ import annotations

import html
import json

from eager.view import inline_assets
from eager.view.html import LEGEND

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>eager playground: __MODEL__</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:1.5rem auto;max-width:70rem;color:#222}
form{display:grid;grid-template-columns:1fr auto;gap:.5rem 1rem;align-items:start}
textarea{width:100%;min-height:5rem;font:inherit}
fieldset{border:1px solid #ccc;display:flex;flex-direction:column;gap:.3rem}
label{display:flex;justify-content:space-between;gap:.5rem}
input{width:7rem}
#status{color:#666;margin:.5rem 0}
</style>__VIEW__</head>
<body><h1>eager playground <small>(__MODEL__)</small></h1>
<form id="ask"><textarea id="prompt" placeholder="Ask something">What is 17 * 23?</textarea>
<fieldset><label>n <input id="n" type="number" min="1" value="8"></label>
<label>theta <input id="theta" value="auto"></label>
<label>max tokens <input id="max_tokens" type="number" min="1" value="128"></label>
<label>temperature <input id="temperature" type="number" min="0" max="2" step="0.1" value="0.6"></label>
<label>seed <input id="seed" type="number" min="0" placeholder="random"></label>
<label>API key <input id="key" type="password" placeholder="if set"></label>
<button id="go" type="submit">Grow the tree</button></fieldset></form>
<div id="status"></div>__LEGEND__<div id="tree"></div>
<script>
"use strict";
const MODEL = __MODEL_JSON__;
async function grow(ev) {
  ev.preventDefault();
  const status = document.getElementById("status"), out = document.getElementById("tree");
  const theta = document.getElementById("theta").value.trim();
  const body = {model: MODEL, prompt: document.getElementById("prompt").value,
    n: +document.getElementById("n").value, max_tokens: +document.getElementById("max_tokens").value,
    temperature: +document.getElementById("temperature").value, eager: {theta: theta === "auto" ? "auto" : +theta}};
  const seed = document.getElementById("seed").value.trim();
  if (seed) body.seed = +seed;
  const key = document.getElementById("key").value;
  status.textContent = "growing...";
  const res = await fetch("/v1/eager/tree", {method: "POST", body: JSON.stringify(body),
    headers: Object.assign({"content-type": "application/json"}, key ? {authorization: "Bearer " + key} : {})});
  if (!res.ok) { status.textContent = (await res.json()).error.message; return; }
  const reader = res.body.getReader(), utf8 = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {done, value} = await reader.read();
    if (done) break;
    buffer += utf8.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.indexOf("\\n\\n")) >= 0) {
      const line = buffer.slice(0, cut).replace(/^data: /, "");
      buffer = buffer.slice(cut + 2);
      if (line === "[DONE]") continue;
      const msg = JSON.parse(line);
      if (msg.error) { status.textContent = msg.error.message; continue; }
      window.EagerTree.render(out, msg.result, {header: false});  // the prompt is in the box above
      const r = msg.result;
      status.textContent = (msg.done ? "done: " : "growing: ") + r.sequences.length + " sequences, " + r.forks.length +
        " forks; " + r.generated_tokens + " tokens computed for " + r.sequence_tokens + " sequence tokens";
    }
  }
}
document.getElementById("ask").addEventListener("submit", grow);
</script></body></html>
"""


def page(model_name: str) -> str:
    model = json.dumps(model_name).replace("<", "\\u003c")
    return PAGE.replace("__VIEW__", inline_assets()).replace("__LEGEND__", LEGEND).replace("__MODEL_JSON__", model).replace("__MODEL__", html.escape(model_name))
