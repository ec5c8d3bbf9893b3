"""`mdm train RUN.yaml [--set key=value ...] [--output-dir DIR] [--rerun-stale]`."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def cmd_train(args) -> None:
    from mdm.train.config import load_run_config  # deferred: the CLI's subcommands import only what they run

    cfg = load_run_config(args.config, args.set, args.output_dir)  # config errors come before torch is imported
    from mdm.io import read_json  # deferred: the CLI's subcommands import only what they run

    # deferred: mdm.train.trainer imports torch: after the config's errors
    from mdm.train.trainer import RESULT, set_aside, stale_reason, train_run

    main = int(os.environ.get("RANK", "0")) == 0
    if args.rerun_stale and main and (why := stale_reason(cfg.output_dir, cfg)):
        print(f"mdm train: {cfg.output_dir} holds another configuration ({why}); moved to "
              f"{set_aside(Path(cfg.output_dir)).name}", file=sys.stderr)
    finished = (read_json(Path(cfg.output_dir) / RESULT) or {}).get("status") == "done"
    from mdm.train.preempt import Preempted  # deferred: with the trainer

    try:
        result = train_run(cfg)
    except Preempted as e:  # a SLURM job's warning signal: checkpoint written; the job requeues (mdm.train.preempt)
        if main:
            print(f"mdm train: {e} ({cfg.output_dir})", file=sys.stderr)
        raise SystemExit(130) from None
    if not main:  # one summary line per launch
        return
    if result["status"] != "done":
        print(f"mdm train: run failed: {result['reason']} ({cfg.output_dir})", file=sys.stderr)
        raise SystemExit(1)
    m = result["metrics"]
    held = f", held-out loss {m['heldout_loss']:.4f}" if m.get("heldout_loss") is not None else ""
    verb = "already done (nothing trained)" if finished else "done"
    print(f"mdm train: {verb} in {result['steps']} steps, {result['wall_time_s']:.1f}s{held} -> {cfg.output_dir}")


def register(sub) -> None:
    p = sub.add_parser("train", help="train one run (MDM with any method, or ARM) from a YAML config; resumes")
    p.add_argument("config", help="run config YAML (sections: model, data, method, training, eval, output_dir)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set training.lr=1e-4 --set method=ppots+mirror")
    p.add_argument("--output-dir", default=None, help="override output_dir")
    p.add_argument("--rerun-stale", action="store_true",
                   help="output_dir holds a run of another configuration: move it aside (.stale-N) and train anew")
    p.set_defaults(func=cmd_train)
