"""`mdm report RUNS_DIR_OR_CSV... --out DIR`."""

from __future__ import annotations

from pathlib import Path


def cmd_report(args) -> None:
    from mdm.report.render import write_report
    from mdm.report.tables import load_scores

    df = load_scores(args.inputs)
    benchmarks = sorted(df.benchmark.dropna().unique()) if "benchmark" in df else [args.name]
    extras = [p for root in map(Path, args.inputs) if root.is_dir() for p in root.rglob("*.json")
              if p.name in ("variance.json", "ppots.json")]
    for bench in benchmarks or [args.name]:
        rows = df[df.benchmark == bench] if "benchmark" in df else df
        out = Path(args.out) / bench if len(benchmarks) > 1 else Path(args.out)
        write_report(rows, out, bench, extras=extras, metric_label=args.metric_label)
        print(f"wrote {out}/README.md")


def register(sub) -> None:
    p = sub.add_parser("report", help="leaderboards, synergy tables and plots from run records or CSVs")
    p.add_argument("inputs", nargs="+", help="run-record folders and/or CSVs (model_family,method,task,seed,score)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--name", default="report", help="benchmark name when the inputs do not say")
    p.add_argument("--metric-label", default="score (accuracy %, or CLIP score)")
    p.set_defaults(func=cmd_report)
