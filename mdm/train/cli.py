"""`mdm train RUN.yaml [--set key=value ...] [--output-dir DIR]`."""

from __future__ import annotations

import os
import sys


def cmd_train(args) -> None:
    from mdm.train import load_run_config, train_run

    cfg = load_run_config(args.config, args.set, args.output_dir)
    result = train_run(cfg)
    if int(os.environ.get("RANK", "0")) != 0:  # one summary line per launch
        return
    if result["status"] != "done":
        print(f"mdm train: run failed: {result['reason']} ({cfg.output_dir})", file=sys.stderr)
        raise SystemExit(1)
    m = result["metrics"]
    held = f", held-out loss {m['heldout_loss']:.4f}" if m.get("heldout_loss") is not None else ""
    print(f"mdm train: done in {result['steps']} steps, {result['wall_time_s']:.1f}s{held} -> {cfg.output_dir}")


def register(sub) -> None:
    p = sub.add_parser("train", help="train one run (MDM with any method, or ARM) from a YAML config; resumes")
    p.add_argument("config", help="run config YAML (sections: model, data, method, training, eval, output_dir)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set training.lr=1e-4 --set method=ppots+mirror")
    p.add_argument("--output-dir", default=None, help="override output_dir")
    p.set_defaults(func=cmd_train)
