"""`mdm bench SPEC.yaml [--preset tiny|paper] [--set key=value ...] [--dry-run [--launch ACCELERATE.yaml]] [--only key=value,...] [--shard I/N] [--jobs N] [--executor local|slurm [--slurm key=value ...]] [--status]`;
`mdm prefetch SPEC.yaml ... [--preset paper]`."""

from __future__ import annotations

import sys

from mdm.errors import ConfigError


def cmd_bench(args) -> None:
    # deferred: the CLI's subcommands import only what they run
    from mdm.bench.spec import expand, load_spec, parse_only, parse_shard, select

    spec = load_spec(args.spec, args.set, args.preset)  # every problem is one ConfigError line, before any compute
    from mdm.bench.dry_run import print_plan  # deferred: imports torch: after the spec's errors
    shard = parse_shard(args.shard)
    if args.jobs < 1:
        raise ConfigError("--jobs", f"must be >= 1; got {args.jobs}")
    if args.launch and not args.dry_run:
        raise ConfigError("--launch", "only estimates memory with --dry-run; a run launches with the preset's "
                          "launch.config_file (change it with --set launch.config_file=PATH)")
    plan = expand(spec, args.preset, args.results)
    runs = select(plan, parse_only(args.only, plan), shard)
    if args.dry_run:
        print_plan(spec, args.preset, plan, runs, launch_file=args.launch)
        return
    if args.status:  # records and the SLURM queue: submits and runs nothing
        from mdm.bench.executors.status import print_status  # deferred: only for --status

        print_status(spec, args.preset, runs, args.results)
        return
    if args.slurm and args.executor != "slurm":
        raise ConfigError("--slurm", "sets the slurm executor's options; add --executor slurm")
    from mdm.bench.executors import get_executor  # deferred: executors are found by name

    get_executor(args.executor)(spec, runs, args)


def run_local(spec, runs, args) -> None:
    """The local executor: a process pool on this machine (mdm.bench.runner.run_plan)."""
    from mdm.bench.runner import run_plan  # deferred: imports torch

    if gpu_preset(spec.bench.presets[args.preset]):  # everything it needs on this machine, before compute
        check_ready(spec, args.preset, runs, args.jobs, args.results)
    counts = run_plan(spec, runs, jobs=args.jobs, rerun_stale=args.rerun_stale)
    if counts.get("stopped_by"):
        print(f"mdm bench: interrupted by {counts['stopped_by']}: {counts['interrupted']} running run(s) recorded "
              f"'interrupted', {counts['done']} done; rerun the same command to resume", file=sys.stderr)
        raise SystemExit(130)
    if counts["failed"] or counts["interrupted"]:
        raise SystemExit(1)


def gpu_preset(preset) -> bool:
    """A preset launched on GPUs: a launch config and a GPU as its hardware (the tiny preset's CPU launches, e.g.
    benchmarks/accelerate/cpu_2proc.yaml, name a CPU or no hardware)."""
    # deferred: the spec's imports stay light until a GPU preset is run
    from mdm.bench.memory import device_gib

    hw = preset.hardware
    return preset.launch is not None and hw is not None and not hw.tokens_per_s and device_gib(hw) is not None


def check_ready(spec, preset_name: str, runs, jobs: int, results: str) -> None:
    """mdm.bench.preflight: one line per missing item with its fix on stderr, then exit 2."""
    # deferred: plan_cost, preflight and dry_run import torch: only for a GPU preset's run
    from mdm.bench.dry_run import estimate, record_status
    from mdm.bench.plan_cost import disk_needed
    from mdm.bench.preflight import preflight

    preset = spec.bench.presets[preset_name]
    todo = [r for r in runs if record_status(r) != "done"]
    if not todo:
        return
    disk = disk_needed(preset, todo, {r.index: estimate(r, preset) for r in todo})
    problems = preflight(spec, preset_name, todo, jobs, results, disk)
    if not problems:
        return
    print(f"mdm bench: {spec.path} --preset {preset_name} cannot start ({len(todo)} runs to do); missing:",
          file=sys.stderr)
    for line in problems:
        print(f"  {line}", file=sys.stderr)
    print(f"fetch what the plan needs: make prefetch PRESET={preset_name} (= mdm prefetch {spec.path} --preset "
          f"{preset_name}); check the plan: mdm bench {spec.path} --preset {preset_name} --dry-run", file=sys.stderr)
    raise SystemExit(2)


def cmd_prefetch(args) -> None:
    # deferred: mdm.bench.spec imports pydantic and the task registry: only when the command runs
    from mdm.bench.spec import expand, load_spec

    runs = []
    for path in args.spec:
        spec = load_spec(path, args.set, args.preset)
        runs += expand(spec, args.preset, args.results)
    from mdm.bench.preflight import prefetch  # deferred: huggingface_hub

    failed = prefetch(runs)
    if failed:
        print(f"mdm prefetch: {len(failed)} item(s) not fetched:", file=sys.stderr)
        for line in failed:
            print(f"  {line}", file=sys.stderr)
        raise SystemExit(1)
    print(f"mdm prefetch: everything {', '.join(args.spec)} --preset {args.preset} loads is in the HF cache "
          "(streamed datasets: the hub was reachable)")


def register(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark spec (tasks x methods x seeds): resumable, one record per run")
    p.add_argument("spec", help="benchmark spec YAML, e.g. benchmarks/table1.yaml")
    p.add_argument("--preset", default="tiny", help="preset of the spec (default: tiny)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of the preset before validation, as in `mdm train --set`, e.g. "
                        "--set model.source=/path/to/llada --set training.max_steps=10")
    p.add_argument("--dry-run", action="store_true", help="print the plan and estimated compute; load nothing")
    p.add_argument("--launch", default=None, metavar="ACCELERATE.yaml",
                   help="--dry-run: estimate per-GPU memory under this accelerate config instead of the preset's "
                        "launch.config_file (e.g. benchmarks/accelerate/fsdp.yaml)")
    p.add_argument("--only", default=None, metavar="KEY=VALUE,...",
                   help="filter runs by task, method, seed, family (mdm, arm, arm:<name>) or preset")
    p.add_argument("--shard", default=None, metavar="I/N", help="run the I-th of N deterministic shards (1-based)")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (CPU threads are split between them)")
    p.add_argument("--results", default="results/runs", help="records root (default: results/runs)")
    p.add_argument("--rerun-stale", action="store_true",
                   help="runs whose folder holds another configuration's run: move it aside (.stale-N) and rerun")
    p.add_argument("--executor", default="local", metavar="NAME",
                   help="where runs execute: local (a process pool here, the default) or slurm (one SLURM job per "
                        "run via submitit; the spec's slurm: section sets partition, account, time, ...)")
    p.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the spec's slurm: section, e.g. --slurm partition=gpu --slurm time=720")
    p.add_argument("--status", action="store_true",
                   help="print each run's state (done/queued/running/failed/interrupted/not started), its SLURM job "
                        "and the totals; submits and runs nothing")
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("prefetch", help="download every model, tokenizer, dataset, image tokenizer and CLIP weight "
                       "a benchmark preset loads into the HF cache (run online, before the GPUs)")
    p.add_argument("spec", nargs="+", help="benchmark spec YAML(s), e.g. benchmarks/table1.yaml")
    p.add_argument("--preset", default="paper", help="preset of the spec(s) (default: paper)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as in mdm bench --set")
    p.add_argument("--results", default="results/runs", help="records root (as in mdm bench; names runs only)")
    p.set_defaults(func=cmd_prefetch)


