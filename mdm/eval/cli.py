"""`mdm eval RUN_DIR [--task T ...]`: decode, score and measure held-out likelihood; results go into the run record."""

from __future__ import annotations

import json
import os
from pathlib import Path


def cmd_eval(args) -> None:
    from mdm.eval.api import evaluate_run  # deferred: the CLI's subcommands import only what they run

    settings = {"tasks": args.task, "n": args.n, "split": args.split, "data_seed": args.data_seed,
                "batch_size": args.batch_size, "likelihood": False if args.no_likelihood else None, "likelihood_n": args.likelihood_n,
                "t_grid": args.t_grid, "device": args.device, "dtype": args.dtype, "write": False if args.no_write else None}  # fmt: skip
    decoding = {"gen_length": args.gen_length, "steps": args.steps, "block_length": args.block_length,
                "temperature": args.temperature, "remasking": args.remasking, "seed": args.seed}  # fmt: skip
    if args.no_early_stop:
        decoding["early_stop"] = False
    settings["decoding"] = {k: v for k, v in decoding.items() if v is not None}
    if args.hitab_root:
        settings["task_options"] = {"root": args.hitab_root}
    settings = {k: v for k, v in settings.items() if v is not None}
    if args.settings:  # a settings file (mdm bench's launched evaluation): the flags given override it
        base = _read_settings(args.settings)
        decoding = dict(base.get("decoding") or {}) | settings.pop("decoding", {})
        settings = base | settings | ({"decoding": decoding} if decoding else {})
    result = evaluate_run(args.run_dir, settings)
    if int(os.environ.get("RANK", "0")) != 0:  # inside a launch: rank 0 reports
        return
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return
    for task, r in result["tasks"].items():
        s = r["scores"]
        shown = ", ".join(f"{k}={v:.4f}" for k, v in s.items() if isinstance(v, float))
        d = r["decoding"]
        knobs = " ".join(f"{k}={d[k]}" for k in ("gen_length", "steps", "block_length", "temperature", "remasking")
                         if k in d)  # fmt: skip
        print(f"{task} ({r['model_kind']}, n={r['n']}): {shown}")
        if r.get("from_checkpoint"):
            print(f"  note: {r['from_checkpoint']['note']}")
        print(f"  decoding: {knobs}")
        if r.get("likelihood"):
            lk = r["likelihood"]
            print(f"  held-out {lk['metric']}: {lk['nll_per_token']:.4f} nats/token over {lk['n_tokens']} tokens")
        if r.get("samples_file"):
            print(f"  samples: {r['samples_file']}")
    if settings.get("write") is False:  # nothing was written: no path that does not exist
        print("record: not written (--no-write)")
    else:
        print(f"record: {result['record']}")


def _read_settings(path: str) -> dict:
    from mdm.errors import ConfigError  # deferred: the CLI's subcommands import only what they run

    try:
        settings = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(path, f"cannot read the evaluation settings: {e}") from None
    if not isinstance(settings, dict):
        raise ConfigError(path, "the evaluation settings must be a JSON object (mdm.eval.api's settings)")
    return settings


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a run: decode test prompts, score, held-out ELBO/NLL; writes the record")
    p.add_argument("run_dir", help="run folder (with final/, checkpoint/ or model/) or a model folder")
    p.add_argument("--task", action="append", help="task to evaluate (repeatable); default: the record's task")
    p.add_argument("--n", type=int, help="examples per task (default: all real data; 200 generated)")
    p.add_argument("--split", help="data split (default test)")
    p.add_argument("--data-seed", type=int, help="seed of generated tasks")
    p.add_argument("--hitab-root", help="HiTab checkout (or env MDM_HITAB_DIR)")
    g = p.add_argument_group("decoding (defaults: PAPER.md settings per task)")
    g.add_argument("--gen-length", type=int)
    g.add_argument("--steps", type=int)
    g.add_argument("--block-length", type=int)
    g.add_argument("--temperature", type=float)
    g.add_argument("--remasking", help="low_confidence | random")
    g.add_argument("--seed", type=int, help="decoding seed (temperature > 0 or random remasking)")
    g.add_argument("--no-early-stop", action="store_true", help="decode every block even after EOS")
    p.add_argument("--batch-size", type=int, help="prompts decoded together (default 16)")
    p.add_argument("--no-likelihood", action="store_true", help="skip the held-out ELBO / NLL")
    p.add_argument("--likelihood-n", type=int, help="sequences for the held-out metric (default min(n, 256))")
    p.add_argument("--t-grid", type=int, help="t-grid size of the held-out ELBO (default 16)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--dtype", help="float32 | bfloat16 | float16 (default: bfloat16 on cuda, float32 on cpu)")
    p.add_argument("--no-write", action="store_true", help="do not touch the record or write sample files")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--settings", help="JSON file of evaluation settings (mdm.eval.api); flags override it. Under "
                   "`accelerate launch` the prompts are sharded over the processes (mdm.eval.distributed)")
    p.set_defaults(func=cmd_eval)
