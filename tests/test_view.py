"""The tree views (eager.view, eager view): trees from the mock backend, eval runs, the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import eager
from eager.backends.mock import MockBackend
from eager.cli import main
from eager.errors import EagerError
from eager.view import load_generate_json, load_run, render_html, render_run_index, render_terminal, run_index, trees_of_generate

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def mock_tree(**kw) -> dict:
    """A forking mock tree (4 sequences, 3 forks at theta 1.0), as generate --json writes it."""
    options = dict(method="eager-init", M=6, theta=1.0, max_tokens=48, seed=0) | kw
    result = eager.generate(["what is two plus two"], backend=MockBackend(32), **options)[0]
    return {**result.to_dict(), "theta": options.get("theta")}


@pytest.fixture(scope="module")
def tree() -> dict:
    return mock_tree()


def test_generate_json_has_each_sequences_own_entropies_and_pieces(tree):
    for seq in tree["sequences"]:
        own = len(seq["token_ids"]) - (seq["fork_at"] or 0)
        assert len(seq["entropies"]) == own == len(seq["pieces"])
        assert seq["text"].endswith("".join(seq["pieces"]))
        assert all(h == round(h, 3) for h in seq["entropies"])


def test_each_fork_records_the_two_alternatives_the_parent_and_child_took(tree):
    seqs = tree["sequences"]
    assert len(tree["forks"]) == 3
    for fork in tree["forks"]:
        parent, child = seqs[fork["parent"]], seqs[fork["child"]]
        if len(parent["token_ids"]) > fork["position"]:
            assert parent["token_ids"][fork["position"]] == fork["parent_token"]
        else:  # its top-1 ended generation: the parent stopped at the fork
            assert len(parent["token_ids"]) == fork["position"] and parent["finish_reason"] == "stop"
        assert child["token_ids"][fork["position"]] == fork["child_token"]
        assert child["pieces"][0] == fork["child_text"]
        assert 0 < fork["child_prob"] <= fork["parent_prob"] < 1
        assert fork["entropy"] > fork["threshold"]


def test_terminal_view_at_a_fixed_width_without_colour_shows_forks_answers_and_accounting(tree):
    narrow = render_terminal(tree, width=60, color=False)
    assert max(len(line) for line in narrow.splitlines()) <= 60 < max(len(line) for line in render_terminal(tree, width=200, color=False).splitlines())
    text = render_terminal(tree, width=200, color=False)
    assert "\x1b[" not in text
    fork = tree["forks"][0]
    assert f"#{fork['child']} forked from #{fork['parent']} at token {fork['position']}" in text
    assert f"H={fork['entropy']:.2f} > θ_eff {fork['threshold']:.2f}" in text
    assert f"top-2 {fork['child_text']!r} {fork['child_prob']:.2f}" in text
    assert f"4 sequences, 3 forks; generated {tree['generated_tokens']} tokens for {tree['sequence_tokens']}" in text
    assert text.count("tokens, stop") == 4


def test_no_color_in_the_environment_turns_colour_off(tree, monkeypatch):
    assert "\x1b[" in render_terminal(tree, width=100)
    monkeypatch.setenv("NO_COLOR", "1")
    plain = render_terminal(tree, width=100)
    assert "\x1b[" not in plain
    assert plain == ANSI.sub("", render_terminal(tree, width=100, color=True))


def test_a_high_entropy_token_is_coloured_red_and_a_sure_one_is_not():
    tree = {"theta": 2.0, "prompt": "p", "method": "eager-init", "forks": [], "sequences": [
        {"text": "ab", "parent": None, "fork_at": None, "finish_reason": "stop", "token_ids": [1, 2], "pieces": ["SURE", "HOT"], "entropies": [0.01, 2.5]}]}
    text = render_terminal(tree, width=60, color=True)
    assert "\x1b[1;31mHOT" in text
    assert re.search(r"SURE", text) and "31mSURE" not in text


def test_html_page_is_self_contained_and_carries_the_tree_and_its_renderer(tree):
    page = render_html(tree, title="t")
    assert "http://" not in page and "https://" not in page and "<link" not in page and " src=" not in page
    assert "window.EagerTree" in page and ".et-tok" in page
    data = json.loads(re.search(r'id="eager-data">(.*?)</script>', page, re.S).group(1))
    assert data == [tree]


def test_script_closing_text_in_a_sequence_cannot_break_out_of_the_page():
    tree = mock_tree()
    tree["sequences"][0]["text"] = "</script><script>alert(1)</script>"
    page = render_html(tree)
    assert page.count("</script>") == 3  # the view's script, the data, the boot script: nothing from the text
    assert "alert(1)</script>" not in page


def test_all_three_generate_json_shapes_load(tmp_path, tree):
    shapes = {"bare": tree, "results": {"results": [tree, tree]}, "settings": {"settings": {"theta": 1.5}, "results": [dict(tree, index=0)]}}
    counts = {}
    for name, data in shapes.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        counts[name] = len(load_generate_json(path))
    assert counts == {"bare": 1, "results": 2, "settings": 1}
    assert trees_of_generate({"settings": {"theta": 1.5}, "results": [{k: v for k, v in tree.items() if k != "theta"}]})[0]["theta"] == 1.5


def test_generate_jsonl_loads_one_tree_per_line(tmp_path, tree):
    lines = [json.dumps({"settings": {"theta": 1.5}, "result": dict(tree, index=i)}) for i in range(3)]
    many, one, bad = tmp_path / "many.jsonl", tmp_path / "one.jsonl", tmp_path / "bad.jsonl"
    many.write_text("\n".join(lines) + "\n")
    one.write_text(lines[0] + "\n")
    bad.write_text(lines[0] + "\n" + json.dumps({"settings": {}}) + "\n")
    assert [t["title"] for t in load_generate_json(many)] == ["prompt 0", "prompt 1", "prompt 2"]
    assert len(load_generate_json(one)) == 1
    with pytest.raises(EagerError, match=r"bad.jsonl:2: not an `eager generate --jsonl` line"):
        load_generate_json(bad)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A mock eval run of eager-init and parallel with --save-entropies."""
    from eager.eval import EvalConfig, run_eval

    tmp = tmp_path_factory.mktemp("run")
    data = tmp / "problems.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "question": f"q{i}", "answer": str(i)}) + "\n" for i in range(3)))
    config = EvalConfig.of(
        out_dir=str(tmp / "out"), dataset=str(data), model="mock", M=(4,), theta=1.0, dynamic_theta=False, max_tokens=30,
        template="{question}", methods=("parallel", "eager-init"), save_entropies=True,
    )
    run_eval(config, backend=MockBackend(), verifier=lambda problem, text: "q" in text)
    return tmp / "out"


def test_an_eval_prompt_loads_with_answers_verdicts_and_fork_details(run_dir):
    trees = load_run(run_dir, "p1")
    assert [t["method"] for t in trees] == ["parallel", "eager-init"]
    init = trees[1]
    assert init["forks"] and all(f["entropy"] > f["threshold"] for f in init["forks"])
    assert all("correct" in s and "answer" in s and s["entropies"] for s in init["sequences"])
    text = render_terminal(init, width=120, color=False)
    assert ("✓ correct" in text) or ("✗ incorrect" in text)
    assert len(load_run(run_dir, "p1", "eager-init")) == 1


def test_eval_records_stay_small_without_save_entropies(run_dir, tmp_path, dataset):
    from eager.eval import EvalConfig, run_eval

    config = EvalConfig.of(out_dir=str(tmp_path / "out"), dataset=str(dataset), model="mock", M=(4,), theta=1.0, max_tokens=20, template="{question}", methods=("eager-init",), limit=2)
    run_eval(config, backend=MockBackend(), verifier=lambda problem, text: False)
    record = json.loads((tmp_path / "out" / "eager-init.jsonl").read_text().splitlines()[0])
    assert not any({"entropies", "pieces", "fork"} & set(s) for s in record["sequences"])
    assert load_run(tmp_path / "out", record["id"])[0]["sequences"]  # still viewable, without colours


def test_run_index_page_has_every_prompt_and_method_and_a_solved_filter(run_dir):
    prompts = run_index(run_dir)
    assert [p["id"] for p in prompts] == ["p0", "p1", "p2"]
    assert all(len(p["trees"]) == 2 for p in prompts)
    page = render_run_index(prompts)
    assert 'id="eager-filter"' in page and 'value="unsolved"' in page


def test_report_writes_index_html_linked_from_summary(run_dir):
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "index.html").is_file()
    assert "index.html" in (run_dir / "summary.md").read_text()


def test_view_cli_prints_a_tree_and_writes_html(tmp_path, tree, capsys):
    path = tmp_path / "tree.json"
    path.write_text(json.dumps({"settings": {}, "results": [tree]}))
    assert main(["view", str(path), "--width", "90"]) == 0
    assert "4 sequences, 3 forks" in ANSI.sub("", capsys.readouterr().out)
    assert main(["view", str(path), "--html", str(tmp_path / "t.html")]) == 0
    assert (tmp_path / "t.html").read_text().count("window.EagerTree.render") >= 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.json"], "no such file or directory: missing.json"),
        (["RUN"], "give the prompt with --id"),
        (["RUN", "--id", "nope"], "no prompt with id 'nope'"),
        (["RUN", "--id", "p0", "--method", "eager"], "no records of method 'eager'"),
    ],
)
def test_view_cli_errors_are_one_line(run_dir, args, message, capsys):
    args = [str(run_dir) if a == "RUN" else a for a in args]
    assert main(["view", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


@pytest.mark.parametrize("partial", [True])
def test_a_partial_tree_renders_running_branches(tree, partial):
    grow = json.loads(json.dumps(tree))
    grow["sequences"][-1]["finish_reason"] = None
    grow["sequences"][-1]["pieces"] = grow["sequences"][-1]["pieces"][:1]
    grow.pop("generated_tokens")
    assert "running" in render_terminal(grow, width=100, color=False)


def test_smollm_generate_json_then_view(tmp_path, capsys):
    """The real path: generate --json on SmolLM2, then eager view in the terminal and as HTML."""
    out = tmp_path / "tree.json"
    argv = ["generate", "--model", "smollm2-135m", "--prompt", "What is 12 * 7? Answer briefly.", "-M", "3", "--theta", "1.0", "--max-tokens", "16", "--threads", "2", "--json"]
    assert main(argv) == 0
    out.write_text(capsys.readouterr().out)
    trees = load_generate_json(out)
    assert len(trees) == 1 and len(trees[0]["sequences"]) >= 2
    assert all(len(s["pieces"]) == len(s["entropies"]) > 0 for s in trees[0]["sequences"])
    assert main(["view", str(out), "--width", "100"]) == 0
    shown = ANSI.sub("", capsys.readouterr().out)
    assert "forked from #0" in shown and "H=" in shown


@pytest.mark.parametrize("driver", ["engine", "vllm", "llama-server"])
def test_both_drivers_give_token_pieces_and_fork_alternatives(driver):
    from test_remote_rules import grow_on

    (result,) = grow_on(driver, M=8, theta=1.0, dynamic_theta=True, max_tokens=32)
    assert result.forks
    for seq in result.sequences:
        assert "".join(seq.pieces) == seq.own_text and len(seq.pieces) == len(seq.own_entropies)
    for fork in result.forks:
        child = result.sequences[fork.child]
        if child.pieces:  # none where its top-2 ended generation at once
            assert fork.child_text == child.pieces[0]
        assert 0 < fork.child_prob <= fork.parent_prob <= 1
