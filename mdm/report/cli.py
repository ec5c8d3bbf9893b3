"""`mdm report RUNS_DIR_OR_CSV... --out DIR`."""

from __future__ import annotations

import sys
from pathlib import Path


def cmd_report(args) -> None:
    # deferred: the CLI's subcommands import only what they run
    from mdm.report.records import load_scores
    from mdm.report.render import write_report

    df = load_scores(args.inputs, warn=lambda line: print(f"mdm report: {line}", file=sys.stderr))
    benchmarks = sorted(df.benchmark.dropna().unique()) if "benchmark" in df else [args.name]
    extras = [p for root in map(Path, args.inputs) if root.is_dir() for p in root.rglob("*.json")
              if p.name in ("variance.json", "ppots.json")]
    for bench in benchmarks or [args.name]:
        rows = df[df.benchmark == bench] if "benchmark" in df else df
        out = Path(args.out) / bench if len(benchmarks) > 1 else Path(args.out)
        links = task_reports(rows, args.inputs, out)
        write_report(rows, out, bench, extras=extras, metric_label=args.metric_label, links=links)
        print(f"wrote {out}/README.md")
    if args.readme:
        from mdm.report.status import readme_block, update_readme  # deferred: only with --readme

        reports = sorted(Path(args.out).resolve().parent.glob("*/status.md"))
        done = update_readme(Path(args.readme), readme_block(reports))
        print(f"{'updated' if done else 'left alone (no generated:status markers)'}: {args.readme}")


def task_reports(rows, inputs, out: Path) -> list[str]:
    """Each task plugin's own report files (its `report` hook, which reads artifacts and never trains); returns
    the README lines that link them."""
    from mdm.data import TASKS  # deferred: the CLI's subcommands import only what they run

    roots = [Path(p) for p in inputs if Path(p).is_dir()]
    links = []
    for task in rows.task.dropna().unique() if "task" in rows else []:
        hook = TASKS[task].hook("report") if task in TASKS else None
        if hook is not None and roots:
            links += hook(rows, roots, out)
    return links


def register(sub) -> None:
    p = sub.add_parser("report", help="leaderboards, synergy tables and plots from run records or CSVs")
    p.add_argument("inputs", nargs="+", help="run-record folders and/or CSVs (model_family,method,task,seed,score)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--name", default="report", help="benchmark name when the inputs do not say")
    p.add_argument("--metric-label", default="score (accuracy %, or CLIP score)")
    p.add_argument("--readme", help="a README whose generated:status block is rewritten from the status.md of "
                                    "every report folder beside --out (README left alone without the markers)")
    p.set_defaults(func=cmd_report)
