"""`eager eval --ray`: trees grown on Ray workers give the files of a local run.

The mock tests share one local Ray cluster of 2 CPUs (2 workers of 1 CPU); their
workers open a mock backend through ``RayOptions.open_worker`` (this module is
pickled by value, so workers need not import it). The real-model test runs the
CLI, which starts and stops its own local cluster unless one is already up.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from eager.backends.mock import MockBackend
from eager.cli import main
from eager.core.config import BranchingConfig, SamplingConfig
from eager.eval.distributed import RAY_VERSION, RayOptions, deal_by_prompt
from eager.errors import EagerError
from eager.core.tree import TreeRequest
from eager.eval import EVAL_METHODS, EvalConfig, Progress, run_eval
from eager.eval.executors import LocalExecutor

METHODS = tuple(EVAL_METHODS)

N_PROBLEMS = 8
TIMING = ("wall_s", "latency_s")
EXTRA_JOURNALS = (".extra-eager-adapt.jsonl", ".extra-eager.jsonl")


def contains_q(problem, text: str) -> bool:
    """A fake reward (as in test_evaluate): some prompts solved, some not."""
    return "q" in text


def make_config(tmp_path: Path, dataset: Path, out: str, **overrides) -> EvalConfig:
    # the settings of test_evaluate: a mix of capped and uncapped trees, and reallocation rounds
    settings = dict(
        out_dir=tmp_path / out, dataset=str(dataset), model="mock", M=(4,), theta=2.98, dynamic_theta=False,
        max_tokens=40, template="{question}",
    )
    settings.update(overrides)
    return EvalConfig.of(**settings)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def without_timing(rows: list[dict]) -> list[dict]:
    return sorted(({k: v for k, v in row.items() if k not in TIMING} for row in rows), key=lambda r: (r["id"], r["M"], r.get("attempt", 0)))


def output_files(out: Path) -> dict[str, list[dict]]:
    """Every record file of a run (methods and extra-tree journals), minus timings, in a fixed order."""
    names = [f"{m}.jsonl" for m in METHODS] + list(EXTRA_JOURNALS)
    return {name: without_timing(lines(out / name)) for name in names if (out / name).exists()}


def local_reference(tmp_path: Path, dataset: Path, **overrides) -> dict[str, list[dict]]:
    config = make_config(tmp_path, dataset, "local", **overrides)
    run_eval(config, backend=MockBackend(), verifier=contains_q)
    return output_files(Path(config.out_dir))


# -- end to end on a real model (first: before the mock tests' cluster is up, the CLI starts its own) --


def test_cli_ray_eval_on_smollm2_writes_the_records_of_a_local_run(tmp_path, capsys):
    # One tree in flight per worker: llama.cpp's logits shift slightly with what else
    # is in the batch, so only then are the trees bit-identical however they are sharded.
    common = [
        "eval", "--model", "smollm2-135m", "--dataset", "gsm8k", "--limit", "4", "-M", "2", "--max-tokens", "16",
        "--ctx", "1024", "--methods", "parallel,eager-init,eager-adapt", "--threads", "1", "--max-prompts-in-flight", "1",
    ]
    local, distributed = tmp_path / "local", tmp_path / "ray"
    assert main([*common, "--out", str(local)]) == 0
    assert main([*common, "--out", str(distributed), "--ray", "--ray-workers", "2"]) == 0
    assert "| eager-adapt | 2 |" in capsys.readouterr().out
    reference = output_files(local)
    assert set(reference) >= {"parallel.jsonl", "eager-init.jsonl", "eager-adapt.jsonl"}
    assert all(len(reference[f"{m}.jsonl"]) == 4 for m in ("parallel", "eager-init", "eager-adapt"))
    assert output_files(distributed) == reference
    before = {p.name: p.read_bytes() for p in distributed.glob("*.jsonl")}
    assert main([*common, "--out", str(distributed), "--ray", "--ray-workers", "2"]) == 0  # done: nothing starts
    assert {p.name: p.read_bytes() for p in distributed.glob("*.jsonl")} == before


# -- worker hooks (run inside Ray workers) ------------------------------------------------


def open_mock(spec):
    return LocalExecutor(MockBackend(), max_prompts_in_flight=spec.engine.max_prompts_in_flight)


class LoggingExecutor:
    """A mock executor that notes every tree it finishes (its key) in a shared file;
    with ``die_after`` set, the first worker to finish that many trees then exits
    hard (os._exit) instead of sending its next tree."""

    def __init__(self, log_path: str, die_after: int | None, death_marker: str | None) -> None:
        self.inner = LocalExecutor(MockBackend())
        self.log_path = log_path
        self.die_after = die_after
        self.death_marker = death_marker

    @property
    def max_sequences(self) -> int:
        return self.inner.max_sequences

    def run(self, tasks, on_step=None):
        for finished, (position, result) in enumerate(self.inner.run(tasks, on_step)):
            if self.die_after is not None and finished >= self.die_after and self._claim_death():
                time.sleep(1.0)  # let the trees already sent reach the driver
                os._exit(1)
            with open(self.log_path, "a") as f:
                f.write(json.dumps({"pid": os.getpid(), "key": list(tasks[position].key)}) + "\n")
            yield position, result

    def _claim_death(self) -> bool:
        if self.death_marker is None:
            return True  # dies every time
        try:
            os.close(os.open(self.death_marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return False
        return True

    def close(self) -> None:
        self.inner.close()


@dataclass(frozen=True)
class OpenLogging:
    log_path: str
    die_after: int | None = None
    death_marker: str | None = None  # None: every worker dies

    def __call__(self, spec):
        return LoggingExecutor(self.log_path, self.die_after, self.death_marker)


def cannot_open(spec):
    raise EagerError(f"unknown model {spec.model!r}; available: smollm2-135m")


@pytest.fixture(scope="module")
def cluster():
    """One local cluster for the mock tests: 2 CPUs, so 2 workers of 1 CPU."""
    import ray
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield ray
    if started:
        ray.shutdown()


def ray_options(open_worker=open_mock, **overrides) -> RayOptions:
    return RayOptions(workers=2, cpus_per_worker=1, open_worker=open_worker, **overrides)


# -- sharding -----------------------------------------------------------------------------


def test_prompts_are_dealt_round_robin_and_a_prompts_trees_share_a_shard():
    branching, sampling = BranchingConfig(max_sequences=4), SamplingConfig()
    tasks = [TreeRequest(f"q{p}", method, branching, sampling, key=(p, phase)) for phase, method in enumerate(("parallel", "eager-init")) for p in range(5)]
    shards = deal_by_prompt(tasks, 2)
    assert [sorted({t.prompt for _, t in shard}) for shard in shards] == [["q0", "q2", "q4"], ["q1", "q3"]]
    assert sorted(position for shard in shards for position, _ in shard) == list(range(len(tasks)))
    assert all(tasks[position] is task for shard in shards for position, task in shard)
    assert len(deal_by_prompt(tasks[:1], 4)) == 1  # no empty shards


# -- a run on Ray equals a local run ------------------------------------------------------------


def test_a_ray_run_writes_the_records_and_journals_of_a_local_run(tmp_path, dataset, cluster):
    reference = local_reference(tmp_path, dataset)
    config = make_config(tmp_path, dataset, "ray")
    events: list[Progress] = []
    summary = run_eval(config, verifier=contains_q, ray=ray_options(), on_progress=events.append)
    out = Path(config.out_dir)
    assert output_files(out) == reference
    assert set(reference) == {*(f"{m}.jsonl" for m in METHODS), *EXTRA_JOURNALS}
    assert any(e["attempt"] >= 1 for e in reference[".extra-eager.jsonl"]), "the setup must need several extra rounds"
    local_summary = json.loads((tmp_path / "local" / "summary.json").read_text())
    for method in METHODS:
        for key in ("pass_at_k", "generated_tokens", "sequences", "n_prompts"):
            assert summary["methods"][method][key] == local_summary["methods"][method][key]
    totals = {e.phase: e.trees_total for e in events}
    assert totals["trees"] == 2 * N_PROBLEMS and "extra round 1" in totals
    assert events[-1].records_written == sum(len(rows) for name, rows in reference.items() if not name.startswith("."))


def test_a_ray_run_interrupted_midway_resumes_on_ray_to_the_records_of_a_local_run(tmp_path, dataset, cluster):
    reference = local_reference(tmp_path, dataset)
    config = make_config(tmp_path, dataset, "ray")

    def interrupt(progress: Progress) -> None:
        if progress.phase == "extra round 1" and progress.trees_done >= 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_eval(config, verifier=contains_q, ray=ray_options(), on_progress=interrupt)
    out = Path(config.out_dir)
    assert len(lines(out / "eager-init.jsonl")) == N_PROBLEMS  # the trees phase was written before the stop
    run_eval(config, verifier=contains_q, ray=ray_options())
    assert output_files(out) == reference


# -- workers that die ---------------------------------------------------------------------------


def test_a_worker_that_dies_mid_shard_is_replaced_and_no_finished_tree_is_lost_or_repeated(tmp_path, dataset, cluster):
    reference = local_reference(tmp_path, dataset, methods="parallel,eager-init")
    config = make_config(tmp_path, dataset, "ray", methods="parallel,eager-init")
    grown = tmp_path / "grown.jsonl"
    marker = tmp_path / "died"
    hook = OpenLogging(str(grown), die_after=2, death_marker=str(marker))
    run_eval(config, verifier=contains_q, ray=ray_options(hook, retries=1))
    assert marker.exists(), "a worker must have died"
    out = Path(config.out_dir)
    for method in ("parallel", "eager-init"):
        assert Counter(r["id"] for r in lines(out / f"{method}.jsonl")) == {f"p{i}": 1 for i in range(N_PROBLEMS)}
    assert output_files(out) == reference
    log = lines(grown)
    by_pid = Counter(entry["pid"] for entry in log)
    assert len(by_pid) == 3  # two workers, then the replacement of the one that died
    dead_pid = min(by_pid, key=by_pid.get)  # the dead worker sent exactly its first 2 trees
    assert by_pid[dead_pid] == 2
    counts = Counter(tuple(entry["key"]) for entry in log)
    assert all(counts[tuple(e["key"])] == 1 for e in log if e["pid"] == dead_pid), "a tree already sent was grown again"
    assert len(counts) == 2 * N_PROBLEMS


def test_a_worker_that_keeps_dying_stops_the_run_with_one_line_and_keeps_the_records(tmp_path, dataset, cluster):
    reference = local_reference(tmp_path, dataset, methods="parallel")
    config = make_config(tmp_path, dataset, "ray", methods="parallel")
    hook = OpenLogging(str(tmp_path / "grown.jsonl"), die_after=1)  # every worker dies after one tree
    with pytest.raises(EagerError) as error:
        run_eval(config, verifier=contains_q, ray=ray_options(hook, retries=1))
    message = str(error.value)
    assert "died 2 times" in message and "run the same command again" in message and "\n" not in message
    out = Path(config.out_dir)
    kept = lines(out / "parallel.jsonl")
    assert 1 <= len(kept) < N_PROBLEMS and len({r["id"] for r in kept}) == len(kept)
    run_eval(config, backend=MockBackend(), verifier=contains_q)  # resuming (here, locally) completes the run
    assert output_files(out) == reference
    assert without_timing(kept) == [r for r in reference["parallel.jsonl"] if r["id"] in {k["id"] for k in kept}]


def test_a_worker_that_cannot_open_its_model_gives_one_line(tmp_path, dataset, cluster):
    config = make_config(tmp_path, dataset, "ray", methods="parallel")
    with pytest.raises(EagerError) as error:
        run_eval(config, verifier=contains_q, ray=ray_options(cannot_open))
    message = str(error.value)
    assert "could not open model 'mock'" in message and "available: smollm2-135m" in message and "\n" not in message


# -- options and errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, words",
    [({"workers": 0}, "ray_workers"), ({"cpus_per_worker": 0}, "ray_cpus_per_worker"), ({"retries": -1}, "ray_retries")],
)
def test_ray_options_reject_bad_values_with_one_line(kwargs, words):
    with pytest.raises(EagerError) as error:
        RayOptions(**kwargs)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_without_ray_installed_the_cli_says_which_version_to_install(tmp_path, dataset, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    assert main(["eval", "--dataset", str(dataset), "--out", str(tmp_path / "out"), "--ray"]) == 2
    err = capsys.readouterr().err
    assert err == f"eager: error: growing trees on Ray workers needs Ray, which is not installed: pip install 'ray=={RAY_VERSION}'\n"
    assert not (tmp_path / "out").exists()


def test_ray_worker_options_without_ray_are_refused(tmp_path, dataset, capsys):
    assert main(["eval", "--dataset", str(dataset), "--out", str(tmp_path / "out"), "--ray-workers", "3"]) == 2
    assert "--ray-workers needs --ray" in capsys.readouterr().err
