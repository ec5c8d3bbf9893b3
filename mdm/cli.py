"""`mdm` command line. Each subcommand is a small function; bad input exits with one line, no traceback."""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from mdm.errors import ConfigError, is_disk_full


def cmd_methods(args) -> None:
    # deferred: mdm.objective imports torch; `mdm --help` stays torch-free
    from mdm.objective.method import PRESETS, Method

    rows = []
    for name, (_, description) in PRESETS.items():
        spec = {"preset": name, "t_sampler": {"density": "flat"}} if "ppots" in name else name
        info = Method.build(spec).describe()
        info["name"], info["targets"] = name, list(info["targets"])
        rows.append({k: info[k] for k in ("name", "targets", "unbiased", "cost", "released")}
                    | {"description": description})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    # deferred: rich, only for the table output
    from rich.console import Console
    from rich.table import Table

    table = Table(title="mdm method presets (combine with '+', e.g. ppots+mirror+strats)")
    for col in ("name", "targets", "unbiased", "cost (passes)", "description"):
        table.add_column(col)
    for r in rows:
        label = r["name"] + (" (released code)" if r["released"] else "")
        table.add_row(label, "".join(r["targets"]) or "-", "yes" if r["unbiased"] else "no", f"{r['cost']:g}", r["description"])
    Console(width=140).print(table)
    _print_families(Console(width=140), Table)


def _print_families(console, table_cls) -> None:
    """The model families mdm adapts (mdm.adapters): what each adapter does."""
    from mdm.adapters import families  # deferred: mdm.adapters imports torch

    cols = ("mask id", "shift", "padding", "checkpointing", "LoRA targets")
    table = table_cls(title="model families (mdm.adapters; every model is probed once: bidirectional, padding-invariant)")
    for col in ("adapter", "model_type", *cols):
        table.add_column(col)
    for name, types, facts in families():
        table.add_row(name, types, *(facts[c] for c in cols))
    console.print(table)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mdm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("methods", help="list method presets (variance term targeted, bias, cost) and model families")
    p.add_argument("--json", action="store_true", help="print a JSON list of {name, targets, unbiased, cost}")
    p.set_defaults(func=cmd_methods)
    for register in _subcommand_modules():
        register(sub)
    return parser


def _subcommand_modules():
    """Each subsystem (variance, train, bench, eval, generate, report) adds its own subcommands."""
    for module in ("mdm.profiling.cli", "mdm.train.cli", "mdm.bench.cli", "mdm.eval.cli", "mdm.generate.cli",
                   "mdm.report.cli"):
        yield importlib.import_module(module).register


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ConfigError as e:
        print(f"mdm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line (a run keeps its checkpoints; a rerun resumes)
        print(f"mdm {args.command}: interrupted", file=sys.stderr)
        return 130
    except (OSError, RuntimeError) as e:  # a full disk under a write the command does not name itself
        if not is_disk_full(e):
            raise
        where = getattr(e, "filename", None) or "a write"
        print(f"mdm {args.command}: error: {where}: no space left on the device ({str(e).splitlines()[0]})",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
