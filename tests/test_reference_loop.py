"""A differential test against the authors' reference loop (``pytest -k reference``).

``reference_tree`` is an independent re-implementation of the per-token loop
of the paper's reference code (its ``entropy_aware_generation``), written from
its described behaviour (shared/EAGER.md, "Order within one step"), not from
eager's brancher: one prompt at a time, a list of sequences, a step counter
for the window W, a flat entropy history. It shares with the engine only the
maths (top-K entropy, one seeded sampler per branch), so a tree can match
token for token. The engine runs the same prompts batched together on the
mock backend; every tree must be identical (tokens, fork positions, parents,
finish reasons) over 200+ random configurations.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import eager
from eager.backends.mock import EOG_ID, THINK_END_ID, MockBackend
from eager.core.config import SamplingConfig
from eager.core.entropy import topk_entropy
from eager.core.sampling import sample
from eager.core.tree import branch_rng

VOCAB = 24
N_CONFIGS = 220


def random_logits(config_seed: int, flat_share: float, think_chance: float, eog_rate: float):
    """A pure function of the history: flat rows some of the time, a think token, a growing EOG."""

    def logits(history: tuple[int, ...]) -> np.ndarray:
        rng = np.random.default_rng(zlib.crc32(np.asarray((config_seed, *history), dtype=np.int64).tobytes()))
        sharpness = 0.4 if rng.random() < flat_share else 3.5
        row = rng.normal(0.0, sharpness, size=VOCAB)
        row[EOG_ID] = -5.0 + eog_rate * len(history)
        row[THINK_END_ID] = 2.0 if rng.random() < think_chance else -8.0
        return row.astype(np.float32)

    return logits


def _top_two(row: np.ndarray) -> tuple[int, int]:
    order = np.argsort(-row.astype(np.float64), kind="stable")
    return int(order[0]), int(order[1])


def reference_tree(prompt_ids, logits_fn, cfg: dict, key: tuple[int, ...]) -> dict:
    """The reference's loop for one prompt; returns its sequences and forks."""
    sampling = SamplingConfig(temperature=cfg["temperature"], top_p=cfg["top_p"], top_k=cfg["top_k"], max_tokens=cfg["max_tokens"], seed=cfg["seed"])
    marker = [THINK_END_ID] if cfg["end_of_thinking"] else None
    seqs = [{"tokens": [], "parent": None, "fork_at": None, "done": None, "thought": False, "rng": branch_rng(cfg["seed"], key, 0)}]
    history: list[float] = []
    forks = []
    quiet_steps, branching = 0, True

    def push(seq, token):
        if token == EOG_ID:
            seq["done"] = "stop"
            return
        seq["tokens"].append(token)
        if marker and seq["tokens"][-len(marker):] == marker:
            seq["thought"] = True
        if len(seq["tokens"]) >= cfg["max_tokens"]:
            seq["done"] = "length"

    while any(s["done"] is None for s in seqs):
        active = [s for s in seqs if s["done"] is None]
        rows = [logits_fn(tuple(prompt_ids) + tuple(s["tokens"])) for s in active]
        entropies = [float(topk_entropy(row[None, :], cfg["entropy_top_k"])[0]) for row in rows]
        theta_eff = cfg["theta"]
        if cfg["dynamic_theta"] and history:
            theta_eff = max(theta_eff, float(np.percentile(history, 99)))
        recorded = list(entropies)
        forked = False
        for seq, row, h in zip(active, rows, entropies):
            token = sample(row, sampling, seq["rng"])
            if token == EOG_ID:
                seq["done"] = "stop"
                continue
            thought = seq["thought"] or (marker is not None and (seq["tokens"] + [token])[-len(marker):] == marker)
            if branching and h > theta_eff and len(seqs) < cfg["M"] and not thought:
                first, second = _top_two(row)
                child = {"tokens": list(seq["tokens"]), "parent": seqs.index(seq), "fork_at": len(seq["tokens"]),
                         "done": None, "thought": seq["thought"], "rng": branch_rng(cfg["seed"], key, len(seqs))}
                seqs.append(child)
                forks.append((child["parent"], len(seqs) - 1, child["fork_at"]))
                push(seq, first)
                push(child, second)
                recorded.append(h)  # the fork's entropy again, for the child
                forked = True
            else:
                push(seq, token)
        history.extend(recorded)
        quiet_steps = 0 if forked else quiet_steps + 1
        if quiet_steps >= cfg["W"]:
            branching = False
    return {
        "sequences": [(s["tokens"], s["parent"], s["fork_at"], s["done"]) for s in seqs],
        "forks": forks,
    }


def random_config(i: int) -> dict:
    rng = np.random.default_rng(1000 + i)
    return {
        "theta": float(rng.choice([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, rng.uniform(0, 3.2)])),
        "M": int(rng.integers(1, 10)),
        "W": int(rng.choice([1, 2, 3, 5, 8, 1000])),
        "dynamic_theta": bool(rng.random() < 0.6),
        "temperature": float(rng.choice([0.0, 0.6, 1.0, 1.3])),
        "top_p": float(rng.choice([1.0, 1.0, 0.9, 0.5])),
        "top_k": int(rng.choice([0, 0, 5, 12])),
        "max_tokens": int(rng.integers(3, 40)),
        "seed": int(rng.integers(0, 2**31 - 1)),
        "entropy_top_k": int(rng.choice([2, 5, 20])),
        "end_of_thinking": bool(rng.random() < 0.5),
        "flat_share": float(rng.uniform(0.0, 0.9)),
        "think_chance": float(rng.choice([0.0, 0.05, 0.2])),
        "eog_rate": float(rng.uniform(0.05, 0.5)),
        "prompts": ["".join(chr(97 + int(c)) for c in rng.integers(0, 26, size=int(rng.integers(1, 8)))) for _ in range(int(rng.integers(1, 4)))],
    }


def engine_trees(cfg: dict, logits_fn) -> list[dict]:
    results = eager.generate(
        cfg["prompts"], backend=MockBackend(VOCAB, logits_fn=logits_fn, n_ctx=1 << 16, max_sequences=64), method="eager-init",
        M=cfg["M"], theta=cfg["theta"], dynamic_theta=cfg["dynamic_theta"], window=cfg["W"], entropy="topk",
        entropy_top_k=cfg["entropy_top_k"], end_of_thinking="</think>" if cfg["end_of_thinking"] else "",
        temperature=cfg["temperature"], top_p=cfg["top_p"], top_k=cfg["top_k"], max_tokens=cfg["max_tokens"], seed=cfg["seed"],
    )
    return [
        {
            "sequences": [(s.token_ids, s.parent, s.fork_at, s.finish_reason) for s in r.sequences],
            "forks": [(f.parent, f.child, f.position) for f in r.forks],
        }
        for r in results
    ]


@pytest.mark.parametrize("i", range(N_CONFIGS))
def test_reference_loop_and_engine_grow_identical_trees(i):
    cfg = random_config(i)
    logits_fn = random_logits(i, cfg["flat_share"], cfg["think_chance"], cfg["eog_rate"])
    tokenizer = MockBackend(VOCAB).tokenizer
    expected = [reference_tree(tokenizer.encode_prompt(p, True), logits_fn, cfg, (k,)) for k, p in enumerate(cfg["prompts"])]
    assert engine_trees(cfg, logits_fn) == expected


def test_reference_configurations_exercise_every_rule():
    """The random configurations are not vacuous: forks, the cap, the window, stops and lengths all occur."""
    seen = {"fork": 0, "cap": 0, "stop": 0, "length": 0, "think": 0}
    tokenizer = MockBackend(VOCAB).tokenizer
    for i in range(N_CONFIGS):
        cfg = random_config(i)
        logits_fn = random_logits(i, cfg["flat_share"], cfg["think_chance"], cfg["eog_rate"])
        for k, prompt in enumerate(cfg["prompts"]):
            tree = reference_tree(tokenizer.encode_prompt(prompt, True), logits_fn, cfg, (k,))
            seen["fork"] += bool(tree["forks"])
            seen["cap"] += len(tree["sequences"]) == cfg["M"] > 1
            seen["stop"] += any(s[3] == "stop" for s in tree["sequences"])
            seen["length"] += any(s[3] == "length" for s in tree["sequences"])
            seen["think"] += any(THINK_END_ID in s[0] for s in tree["sequences"])
    assert all(count >= 10 for count in seen.values()), seen
