"""Benchmark specs: every bad spec is one actionable line (exit 2, no traceback) before any compute; plans are
deterministic; shards partition them; `--dry-run` prints the paper plan offline without loading a model."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mdm.bench.spec import expand, load_spec, parse_only, select
from mdm.cli import main
from mdm.errors import ConfigError
from mdm.train.config import TrainingConfig

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "benchmarks"

GOOD = {
    "name": "t",
    "seeds": [1, 2],
    "methods": ["standard", "mirror", {"name": "syrm", "tasks": ["tables"]}],
    "presets": {"tiny": {
        "tasks": {"arith": {"n_train": 64, "max_length": 128}, "tables": {"n_train": 64, "max_length": 288}},
        "model": {"size": {"hidden_size": 32}},
        "training": {"max_steps": 3, "global_batch_size": 8, "micro_batch_size": 4},
        "arm": [{"name": "tiny"}],
    }},
}


def edit(path: str, value):
    """GOOD with `value` at the dotted `path` (list indices as integers); value DELETE removes the key."""
    spec = copy.deepcopy(GOOD)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = spec
    for p in parents:
        node = node[p]
    if value == "DELETE":
        del node[last]
    else:
        node[last] = value
    return spec


BAD = [  # (spec or raw YAML text, extra CLI args, expected location, expected words)
    (edit("seedz", [1]), [], "t.yaml: seedz", "unknown key; allowed: name, description, seeds, methods, presets"),
    (edit("methods.1", "mirorr"), [], "t.yaml: methods[1]", "unknown method 'mirorr'; allowed: standard"),
    (edit("methods.1", {"name": "x", "method": {"preset": "isad", "rate": {"delta": 2}}}), [],
     "t.yaml: methods[1].method.rate.delta", "less than 1"),
    (edit("methods.1", {"name": "x", "methdo": "mirror"}), [], "t.yaml: methods[1].methdo",
     "unknown key; allowed: name, method, tasks, seeds"),
    (edit("methods.2.tasks", ["tabels"]), [], "t.yaml: methods[2].tasks", "'tabels' is not a task of any preset"),
    (edit("methods", []), [], "t.yaml: methods", "at least 1 item"),
    (edit("methods.1", "standard"), [], "t.yaml: methods[1].name", "duplicate method row 'standard'"),
    (edit("seeds", [1, 1]), [], "t.yaml: seeds", "seeds must be distinct"),
    (edit("presets.tiny.tasks.arithh", None), [], "t.yaml: presets.tiny.tasks.arithh",
     "unknown task; allowed: arith, tables, gsm8k"),
    (edit("presets.tiny.training.lrr", 1e-3), [], "t.yaml: presets.tiny.training.lrr",
     "unknown key; allowed: epochs, max_steps"),
    (edit("presets.tiny.training.schedule", "cosin"), [], "t.yaml: presets.tiny.training.schedule",
     "'linear', 'cosine' or 'constant'"),
    (edit("presets.tiny.training.lr", -1), [], "t.yaml: presets.tiny.training.lr", "greater than 0"),
    (edit("presets.tiny.training.micro_batch_size", 16), [], "t.yaml: presets.tiny.training.micro_batch_size",
     "larger than global_batch_size 8"),
    (edit("presets.tiny.tasks.arith.n_train", 8), [], "t.yaml: presets.tiny.training.global_batch_size",
     "larger than the training split of arith (7 of n_train=8)"),
    (edit("presets.tiny.tasks.arith.max_lenght", 64), [], "t.yaml: presets.tiny.tasks.arith.max_lenght",
     "unknown key; allowed: n_train, max_length"),
    (edit("presets.tiny.tasks.arith.eos_pad", 0), [], "t.yaml: presets.tiny.tasks.arith.eos_pad",
     "greater than or equal to 1"),
    (edit("presets.tiny.tasks.arith.eos_pad", 128), [], "t.yaml: presets.tiny.tasks.arith: data.eos_pad",
     "128 leaves no room for a prompt within max_length 128"),  # mdm train's eos_pad check, at plan time
    (edit("presets.tiny.tasks.arith.options", {"level": 5}), [], "t.yaml: presets.tiny.tasks.arith.options",
     "level 5 of 'arith'; allowed: 1, 2"),
    (edit("presets.tiny.tasks.tables.options", {"levle": 1}), [], "t.yaml: presets.tiny.tasks.tables.options",
     "takes only the option 'level'"),
    (edit("presets.tiny.tasks.arith", {"n_train": 13000, "options": {"level": 1}}), [],
     "t.yaml: presets.tiny.tasks.arith", "arith level 1 has only 12580 distinct train examples; asked for 13000"),
    (edit("presets.tiny.model.size.num_key_value_heads", 3), [], "t.yaml: presets.tiny.model.size",
     "must be a multiple of num_key_value_heads"),
    (edit("presets.tiny.model.base", "auto") | {"presets": {"tiny": {**GOOD["presets"]["tiny"], "model": {
        "source": "Qwen/Qwen2.5-7B-Instruct", "base": "auto"}}}}, [], "t.yaml: presets.tiny.model",
     "base 'auto' builds a tiny base model"),
    (edit("presets.tiny.arm.0.sorce", "x"), [], "t.yaml: presets.tiny.arm[0].sorce", "unknown key; allowed: name"),
    (edit("presets.tiny.arm.0.training", {"lr": 0}), [], "t.yaml: presets.tiny.arm[0].training.lr",
     "greater than 0"),
    (edit("presets.tiny.hardware", {"name": "H100", "mfu": 1.5}), [], "t.yaml: presets.tiny.hardware.mfu",
     "less than or equal to 1"),
    (edit("presets.tiny.launch", {"config_file": "no/such.yaml"}), [], "t.yaml: presets.tiny.launch.config_file",
     "no such file"),
    (edit("presets.tiny.tasks", {}), [], "t.yaml: presets.tiny.tasks", "needs at least one task"),
    (edit("name", "DELETE"), [], "t.yaml: name", "required key is missing"),
    ("name: t\nseeds: [1\n", [], "t.yaml", "not valid YAML at line"),
    ("- just\n- a list\n", [], "t.yaml", "must be a mapping"),
    (GOOD, ["--preset", "papr"], "--preset", "unknown preset 'papr'"),
    (GOOD, ["--only", "methd=mirror"], "--only", "unknown key 'methd'; allowed: task, method, seed, family"),
    (GOOD, ["--only", "method=mirorr"], "--only", "no run has method=mirorr; allowed: arm-tiny, mirror"),
    (GOOD, ["--shard", "3/2"], "--shard", "expected I/N with 1 <= I <= N"),
    (GOOD, ["--jobs", "0"], "--jobs", "must be >= 1"),
]


@pytest.mark.parametrize("spec,args,where,words", BAD, ids=[f"{i}:{c[2].split(': ')[-1]}" for i, c in enumerate(BAD)])
def test_bad_spec_is_one_actionable_line(tmp_path, capsys, monkeypatch, spec, args, where, words):
    import mdm.train.model

    monkeypatch.setattr(mdm.train.model, "build_model", lambda *a, **k: pytest.fail("compute before validation"))
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "t.yaml"
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
    code = main(["bench", "t.yaml", "--results", str(tmp_path / "runs"), *args])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"mdm bench: error: {where}: "), lines[0]
    assert words in lines[0], lines[0]


def test_cli_error_has_no_traceback(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(edit("methods.1", "mirorr")))
    out = subprocess.run([sys.executable, "-m", "mdm.cli", "bench", str(path)], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "methods[1]: unknown method 'mirorr'" in out.stderr


def test_plan_is_deterministic_and_shards_partition_it(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    plan = expand(load_spec(path), "tiny", tmp_path)
    again = expand(load_spec(path), "tiny", tmp_path)
    assert [r.key for r in plan] == [r.key for r in again]
    # 2 tasks x 2 methods x 2 seeds + syrm on tables x 2 seeds + ARM rows 2 tasks x 2 seeds
    assert len(plan) == 8 + 2 + 4
    assert plan[0].key == "arith/standard/seed1" and plan[-1].key == "tables/arm-tiny/seed2"
    assert {r.family for r in plan} == {"mdm", "arm:tiny"}
    assert all(r.config.data.max_length == (128 if r.task == "arith" else 288) for r in plan)
    assert plan[-1].config.model.family == "arm" and plan[-1].config.method == "standard"
    shards = [select(plan, {}, (i, 3)) for i in (1, 2, 3)]
    keys = [r.key for s in shards for r in s]
    assert sorted(keys) == sorted(r.key for r in plan) and len(set(keys)) == len(plan)
    only = select(plan, parse_only("method=mirror,method=syrm,seed=2", plan), None)
    assert [r.key for r in only] == ["arith/mirror/seed2", "tables/mirror/seed2", "tables/syrm/seed2"]
    assert len(select(plan, parse_only("family=arm", plan), None)) == 4


def test_paper_dry_run_prints_the_full_plan_offline(capsys, monkeypatch, tmp_path):
    import mdm.train.model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(mdm.train.model, "build_model", lambda *a, **k: pytest.fail("a model was loaded"))
    monkeypatch.chdir(ROOT)
    code = main(["bench", str(SPECS / "table1.yaml"), "--preset", "paper", "--dry-run", "--results",
                 str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("table1 (preset paper): 129 of 129 planned runs; 8 x H100 at an assumed MFU of 35%")
    rows = [line for line in lines if line.strip()[:1].isdigit()]
    assert len(rows) == 129 and sum("multisample2" in r for r in rows) == 9  # the equal-compute control
    assert sum("syrm" in r for r in rows) == 3 and all("hitab" in r for r in rows if "syrm" in r)
    for family in ("arm:qwen2.5-7b-instruct", "arm:qwen3-8b-base", "arm:llama3.1-8b-instruct"):
        assert sum(family in r for r in rows) == 9
    assert "?" not in "".join(rows)  # parameter counts of every hub model are known offline
    to_run = next(line for line in lines if line.startswith("to run:"))
    assert to_run.startswith("to run: 129 runs") and to_run.endswith(
        "on 8 x H100 at an assumed MFU of 35% (6N FLOPs per token pass: training alone; the cost plan below splits a "
        "run's time)")
    assert any(line.startswith("per-GPU memory (DeepSpeed ZeRO-2") for line in lines)  # tests/bench/test_bench_memory.py
    # the cost plan (mdm.bench.plan_cost): one row per task and method, every one fits; the total split by part
    head = next(i for i, line in enumerate(lines) if line.startswith("  task ") and "peak GiB" in line)
    rows = [line.split() for line in lines[head + 1:] if line.split()[:1] and line.split()[0] in
            ("gsm8k", "hitab", "openscience")]
    assert len(rows) == 9 * 3 + 1 + 2 * 3 + 3 * 3  # 9 methods on 3 tasks, SyRM on hitab, the released pair, 3 ARMs
    assert sum(int(r[2]) for r in rows) == 129 and {r[7] for r in rows} == {"yes"}
    chosen = {(r[0], r[1]): int(r[3]) for r in rows}  # micro_batch_size auto: the largest that fits
    assert chosen[("gsm8k", "mirror")] == 4 and chosen[("hitab", "mirror")] == 2
    assert chosen[("openscience", "standard")] == 2 and chosen[("openscience", "mirror")] == 1
    total = next(line for line in lines if line.startswith("total: 129 runs"))
    assert "node-hours" in total and "incl. recompute and padding" in total and "evaluation" in total
    assert not [line for line in lines if line.startswith("WARNING")]
    # evaluation is a job of the run's own launch (mdm.eval.launch), sharded over its 8 processes, and the cost is
    # said once: no second GPU-hours line (mdm.bench.eval_cost) beside the cost plan
    assert "evaluation sharded over the launch's 8 processes" in next(x for x in lines if x.startswith("cost plan"))
    assert "over the launch's 8 GPUs" in total and not [x for x in lines if x.startswith("GPU-hours")]


@pytest.mark.parametrize("items,batch,processes,gpus", [(128, 16, 8, 8), (144, 16, 8, 4.5), (1319, 16, 8, 83 / 11),
                                                          (10, 16, 8, 1), (1319, 16, 1, 1)])
def test_sharded_evaluation_counts_whole_rounds_of_batches(items, batch, processes, gpus):
    from mdm.bench.plan_cost import eval_gpus

    assert eval_gpus(items, batch, processes) == pytest.approx(gpus)


def paper_gsm8k_time(results, decoding=None, processes: int = 8) -> dict:
    """mdm.bench.plan_cost.run_time of the paper preset's first GSM8K MDM run at micro-batch 4 under a ZeRO-2 launch
    of `processes`, with eval.accuracy.decoding set to `decoding` (None: the spec's)."""
    from mdm.bench import memory, plan_cost
    from mdm.bench.dry_run import estimate
    from mdm.bench.lengths import run_lengths, task_lengths

    spec = load_spec(SPECS / "table1.yaml", preset="paper")
    run = next(r for r in expand(spec, "paper", results) if r.task == "gsm8k" and r.family == "mdm")
    if decoding is not None:
        run.config.eval.accuracy = {**run.config.eval.accuracy, "decoding": decoding}
    preset = spec.bench.presets["paper"]
    e = estimate(run, preset)
    return plan_cost.run_time(run, preset, memory.arch_of(run.config.model), run_lengths(run.config.data, run.config.model),
                              4, 1.0, e["steps"], e["sequences"], memory.LaunchPlan("zero2", processes),
                              task_lengths(run.config.data, run.config.model))


def test_evaluation_hours_divide_by_the_launch_processes(monkeypatch, tmp_path):
    """One paper run's evaluation time under an 8-process launch is its 1-process time / eval_gpus, training unchanged."""
    from mdm.bench.plan_cost import eval_gpus

    monkeypatch.chdir(ROOT)
    times = {n: paper_gsm8k_time(tmp_path, processes=n) for n in (1, 8)}
    assert times[8]["train_h"] == times[1]["train_h"] and times[1]["eval_h"] > 0
    assert times[8]["eval_h"] == pytest.approx(times[1]["eval_h"] / eval_gpus(1319, 16, 8))


@pytest.mark.parametrize("name", ["table1", "table2", "regression"])
@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_shipped_specs_validate_and_dry_run(name, preset, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["bench", str(SPECS / f"{name}.yaml"), "--preset", preset, "--dry-run", "--results",
                 str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "?" not in next(line for line in out.splitlines() if line.startswith("to run:"))
    if name != "regression":  # its paper preset is a 1-GPU smoke test of an 8B model (full AdamW: 18 B/param)
        assert "does not fit" not in out  # no configuration of a table's preset that its own plan says does not fit


def test_set_overrides_the_preset_before_validation(tmp_path, capsys):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    plan = expand(load_spec(path, ["model.source=/models/llada", "training.max_steps=5", "tasks.arith.n_train=32"]),
                  "tiny", tmp_path)
    mdm = [r for r in plan if r.family == "mdm"]
    assert {r.config.model.source for r in mdm} == {"/models/llada"} and {r.config.training.max_steps for r in plan} == {5}
    assert {r.config.model.source for r in plan if r.family != "mdm"} == {"tiny"}  # ARM rows keep their own source
    assert {r.config.data.n_train for r in plan if r.task == "arith"} == {32}
    assert main(["bench", str(path), "--set", "training.lrr=1", "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == \
        f"mdm bench: error: {path}: presets.tiny.training.lrr: unknown key; allowed: " + \
        ", ".join(TrainingConfig.model_fields)
    assert main(["bench", str(path), "--set", "training", "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == "mdm bench: error: --set: expected key=value, got 'training'"
    assert main(["bench", str(path), "--preset", "paper", "--set", "training.lr=1", "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == f"mdm bench: error: --set: {path} has no preset 'paper' to apply it to"


def test_task_seeds_replace_the_specs_seeds_for_that_task_only(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(edit("presets.tiny.tasks.arith.seeds", [5, 6, 7])))
    plan = expand(load_spec(path), "tiny", tmp_path)
    seeds = {(r.task, r.method, r.family): sorted(x.seed for x in plan if (x.task, x.method, x.family) ==
                                                   (r.task, r.method, r.family)) for r in plan}
    assert seeds[("arith", "standard", "mdm")] == [5, 6, 7] and seeds[("arith", "standard", "arm:tiny")] == [5, 6, 7]
    assert seeds[("tables", "mirror", "mdm")] == [1, 2] and seeds[("tables", "standard", "arm:tiny")] == [1, 2]
    path.write_text(yaml.safe_dump(edit("presets.tiny.tasks.arith.seeds", [5, 5])))
    with pytest.raises(ConfigError, match="tasks.arith.seeds: must be distinct"):
        load_spec(path)


def test_parallel_schedule_starts_each_task_then_the_cheaper_task_longest_first(tmp_path):
    from mdm.bench.dry_run import estimate
    from mdm.bench.runner import schedule

    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    spec = load_spec(path)
    plan = expand(spec, "tiny", tmp_path)
    preset = spec.bench.presets["tiny"]
    order = schedule(plan, preset)
    assert sorted(r.index for r in order) == [r.index for r in plan]  # a permutation of the plan
    cost = {r.index: estimate(r, preset)["token_passes"] for r in plan}
    assert [r.task for r in order[:2]] == ["tables", "arith"]  # both tasks' bases start at once, costliest first
    assert cost[order[0].index] > cost[order[1].index]
    # then the cheaper task's runs (the worker that built its base does not wait on the other's), then the other's,
    # each longest first
    rest = [r.task for r in order[2:]]
    assert rest == sorted(rest) and rest[0] == "arith" and rest[-1] == "tables"
    for task in ("arith", "tables"):
        c = [cost[r.index] for r in order[2:] if r.task == task]
        assert c == sorted(c, reverse=True)
    assert schedule(plan, None) == plan


def test_a_faster_decoding_scales_the_evaluation_by_its_measured_calls(monkeypatch, tmp_path):
    """eval.accuracy.decoding threshold0.95: the plan's evaluation is exact's times the calls ratio that
    benchmarks/perf/decoding.py measured (mean over tasks); a decoding never measured counts exact's calls, and says so."""
    import json

    measured = tmp_path / "decoding.json"
    measured.write_text(json.dumps({"rows": [{"task": "arith", "decoding": "threshold0.95", "calls_ratio": 0.2},
                                             {"task": "arithlong", "decoding": "threshold0.95", "calls_ratio": 0.3}]}))
    monkeypatch.setenv("MDM_DECODING_MEASURED", str(measured))
    monkeypatch.chdir(ROOT)
    exact = paper_gsm8k_time(tmp_path, {})
    fast = paper_gsm8k_time(tmp_path, {"strategy": "threshold", "threshold": 0.95})
    assert fast["eval_h"] == pytest.approx(exact["eval_h"] * 0.25) and fast["train_h"] == exact["train_h"]
    assert "decoding threshold0.95: x0.25 of exact's calls" in fast["eval_note"]
    never = paper_gsm8k_time(tmp_path, {"strategy": "threshold", "threshold": 0.42})
    assert never["eval_h"] == pytest.approx(exact["eval_h"]) and "calls never measured" in never["eval_note"]
