/* eager tree view: window.EagerTree.render(element, tree[, options])
 *
 * `tree` is GenerationResult.to_dict()'s shape (eager generate --json, one result):
 * {prompt, method, sequences: [{text, parent, fork_at, finish_reason, entropies, pieces,
 *  token_ids | n_tokens, answer?, correct?}], forks: [{parent, child, position, entropy,
 *  threshold, parent_text, child_text, parent_prob, child_prob}], generated_tokens,
 *  sequence_tokens, theta?, title?}.
 * The tree may be partial (sequences still growing: finish_reason null); render() may be
 * called again on the same element with a newer tree: it redraws, keeping what was collapsed.
 * Every branch element carries data-branch="<index>", every fork marker data-fork="<child index>".
 */
(function () {
  "use strict";
  var DEFAULT_THETA = 2.2;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function nTokens(seq) {
    if (seq.token_ids) return seq.token_ids.length;
    return seq.n_tokens || 0;
  }

  function heat(h, theta) {
    if (h === null || h === undefined || !(theta > 0)) return 0;
    return Math.min(4, Math.floor(5 * h / theta));
  }

  function fmt(x, digits) {
    return (x === null || x === undefined) ? "?" : Number(x).toFixed(digits);
  }

  function commonPrefix(a, b) {
    var i = 0;
    while (i < a.length && i < b.length && a[i] === b[i]) i++;
    return i;
  }

  function ownText(tree, seq) {
    if (seq.pieces && seq.pieces.length) return seq.pieces.join("");
    var text = seq.text || "";
    if (seq.parent === null || seq.parent === undefined) return text;
    var parent = tree.sequences[seq.parent] || {};
    return text.slice(commonPrefix(text, parent.text || ""));
  }

  function alternative(fork, side) {
    var text = fork[side + "_text"], prob = fork[side + "_prob"];
    var label = side === "parent" ? "top-1 " : "top-2 ";
    return label + (text === null || text === undefined ? "?" : JSON.stringify(text)) +
      (prob === null || prob === undefined ? "" : " " + fmt(prob, 2));
  }

  function forkMarker(fork) {
    var marker = el("span", "et-fork");
    marker.setAttribute("data-fork", String(fork.child));
    var entropy = fork.entropy === undefined || fork.entropy === null ? "" :
      " H=" + fmt(fork.entropy, 2) + " > θ_eff " + fmt(fork.threshold, 2);
    marker.textContent = "↳#" + fork.child;
    marker.title = "fork to #" + fork.child + " at token " + fork.position + entropy +
      (fork.child_text !== undefined && fork.child_text !== null ?
        "\n" + alternative(fork, "parent") + " (kept here)\n" + alternative(fork, "child") + " (#" + fork.child + ")" : "");
    if (fork.child_text !== undefined && fork.child_text !== null) {
      marker.appendChild(el("span", "et-alt et-alt1", alternative(fork, "parent")));
      marker.appendChild(el("span", "et-alt et-alt2", alternative(fork, "child")));
    }
    return marker;
  }

  function branchText(tree, seq, forksHere, theta) {
    var box = el("div", "et-text");
    var start = seq.fork_at || 0;
    var at = {};
    forksHere.forEach(function (f) { (at[f.position - start] = at[f.position - start] || []).push(f); });
    var pieces = seq.pieces || [];
    if (pieces.length) {
      var entropies = seq.entropies || [];
      pieces.forEach(function (piece, i) {
        (at[i] || []).forEach(function (f) { box.appendChild(forkMarker(f)); delete at[i]; });
        var tok = el("span", "et-tok et-h" + heat(entropies[i], theta), piece);
        if (entropies[i] !== undefined) tok.title = "H=" + fmt(entropies[i], 3);
        box.appendChild(tok);
      });
    } else {
      box.appendChild(el("span", "et-plain", ownText(tree, seq)));
    }
    Object.keys(at).forEach(function (k) { at[k].forEach(function (f) { box.appendChild(forkMarker(f)); }); });
    if (seq.finish_reason === null || seq.finish_reason === undefined) box.appendChild(el("span", "et-cursor", "▍"));
    return box;
  }

  function head(tree, seq, index, fork, hasChildren) {
    var h = el("div", "et-head");
    var toggle = el("button", "et-toggle", hasChildren ? "▾" : "·");
    toggle.type = "button";
    toggle.disabled = !hasChildren;
    toggle.setAttribute("aria-label", "collapse or expand #" + index);
    h.appendChild(toggle);
    h.appendChild(el("b", "et-id", "#" + index));
    var origin = seq.parent === null || seq.parent === undefined ? "root" + (seq.round ? " (round " + seq.round + ")" : "") :
      "from #" + seq.parent + " at token " + seq.fork_at;
    h.appendChild(el("span", "et-origin", origin));
    if (fork && fork.entropy !== undefined && fork.entropy !== null) {
      h.appendChild(el("span", "et-entropy", "H=" + fmt(fork.entropy, 2) + " > θ_eff " + fmt(fork.threshold, 2)));
    }
    h.appendChild(el("span", "et-len", nTokens(seq) + " tokens"));
    var reason = seq.finish_reason || "running";
    h.appendChild(el("span", "et-finish et-" + reason, reason));
    if ("answer" in seq) h.appendChild(el("span", "et-answer", "answer " + (seq.answer === null ? "–" : seq.answer)));
    if ("correct" in seq) {
      h.appendChild(el("span", seq.correct ? "et-correct" : "et-incorrect", seq.correct ? "✓ correct" : "✗ incorrect"));
    }
    return h;
  }

  function accounting(tree) {
    var seqs = tree.sequences || [], forks = tree.forks || [];
    var total = tree.sequence_tokens;
    if (total === undefined || total === null) total = seqs.reduce(function (s, q) { return s + nTokens(q); }, 0);
    var line = seqs.length + " sequences, " + forks.length + " forks";
    if (tree.generated_tokens !== undefined && tree.generated_tokens !== null) {
      line += "; generated " + tree.generated_tokens + " tokens for " + total + " sequence tokens";
      if (total > 0) line += " (" + Math.round(100 * (1 - tree.generated_tokens / total)) + "% saved by sharing)";
    }
    return el("div", "et-accounting", line);
  }

  function render(element, tree, options) {
    options = options || {};
    var collapsed = element.__eagerCollapsed || (element.__eagerCollapsed = {});
    var theta = typeof tree.theta === "number" ? tree.theta : DEFAULT_THETA;
    var seqs = tree.sequences || [];
    var kids = {}, forksByParent = {}, forkOf = {};
    seqs.forEach(function (s, i) { var p = s.parent === undefined ? null : s.parent; (kids[p] = kids[p] || []).push(i); });
    (tree.forks || []).forEach(function (f) { forkOf[f.child] = f; (forksByParent[f.parent] = forksByParent[f.parent] || []).push(f); });

    function node(index) {
      var seq = seqs[index], children = kids[index] || [];
      var li = el("li", "et-node" + (collapsed[index] ? " et-collapsed" : ""));
      li.setAttribute("data-branch", String(index));
      li.appendChild(head(tree, seq, index, forkOf[index], children.length > 0));
      li.appendChild(branchText(tree, seq, forksByParent[index] || [], theta));
      if (children.length) {
        var ul = el("ul", "et-children");
        children.forEach(function (c) { ul.appendChild(node(c)); });
        li.appendChild(ul);
      }
      return li;
    }

    var root = el("div", "eager-tree");
    if (options.header !== false) {
      if (tree.title) root.appendChild(el("div", "et-title", tree.title));
      var prompt = el("div", "et-prompt", tree.prompt || "");
      root.appendChild(prompt);
      if (tree.gold !== undefined && tree.gold !== null) root.appendChild(el("div", "et-gold", "gold answer: " + tree.gold));
    }
    root.appendChild(accounting(tree));
    var ul = el("ul", "et-roots");
    (kids[null] || []).forEach(function (i) { ul.appendChild(node(i)); });
    root.appendChild(ul);
    root.addEventListener("click", function (event) {
      var button = event.target.closest ? event.target.closest(".et-toggle") : null;
      if (!button || button.disabled) return;
      var li = button.closest("[data-branch]");
      var index = li.getAttribute("data-branch");
      collapsed[index] = !collapsed[index];
      li.classList.toggle("et-collapsed", collapsed[index]);
      button.textContent = collapsed[index] ? "▸" : "▾";
    });
    root.querySelectorAll(".et-collapsed > .et-head .et-toggle").forEach(function (b) { b.textContent = "▸"; });
    element.replaceChildren(root);
    return root;
  }

  window.EagerTree = { render: render, heat: heat };
})();
