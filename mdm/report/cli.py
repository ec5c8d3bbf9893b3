"""`mdm report RUNS_DIR_OR_CSV... --out DIR`."""

from __future__ import annotations

import sys
from pathlib import Path


def cmd_report(args) -> None:
    from mdm.report.render import write_report
    from mdm.report.tables import load_scores

    df = load_scores(args.inputs, warn=lambda line: print(f"mdm report: {line}", file=sys.stderr))
    benchmarks = sorted(df.benchmark.dropna().unique()) if "benchmark" in df else [args.name]
    extras = [p for root in map(Path, args.inputs) if root.is_dir() for p in root.rglob("*.json")
              if p.name in ("variance.json", "ppots.json")]
    for bench in benchmarks or [args.name]:
        rows = df[df.benchmark == bench] if "benchmark" in df else df
        out = Path(args.out) / bench if len(benchmarks) > 1 else Path(args.out)
        links = text_to_image_summary(rows, args.inputs, out)
        write_report(rows, out, bench, extras=extras, metric_label=args.metric_label, links=links)
        print(f"wrote {out}/README.md")


def text_to_image_summary(rows, inputs, out: Path) -> list[str]:
    """Text-to-image records also get mdm.t2i's summary (attribute accuracy per attribute, the tiny CLIP's
    retrieval check, a grid of generated samples); returns the README lines that link it."""
    from mdm.data import is_text_to_image

    t2i = [t for t in rows.task.dropna().unique() if is_text_to_image(t)]
    roots = [Path(p) for p in inputs if Path(p).is_dir()]
    if not t2i or not roots:
        return []
    from mdm.t2i.table2 import summarize_runs

    for root in roots:
        summarize_runs(root, out, echo=lambda *_: None)
    return ["- [text-to-image: CLIP score, attribute accuracy per attribute, tiny-CLIP check](text_to_image.md)",
            "", "![generated samples: the same held-out captions for ground truth and every method](samples_grid.png)"]


def register(sub) -> None:
    p = sub.add_parser("report", help="leaderboards, synergy tables and plots from run records or CSVs")
    p.add_argument("inputs", nargs="+", help="run-record folders and/or CSVs (model_family,method,task,seed,score)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--name", default="report", help="benchmark name when the inputs do not say")
    p.add_argument("--metric-label", default="score (accuracy %, or CLIP score)")
    p.set_defaults(func=cmd_report)
