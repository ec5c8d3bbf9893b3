"""Training throughput and peak memory of every Table 1 method on the tiny preset, through the real trainer.

    python benchmarks/perf/train_throughput.py [--task arith] [--steps 20] [--methods standard,mirror,...]

Each method runs in its own fresh process (so peak memory is its own): the run config is the one
`mdm bench benchmarks/table1.yaml --preset tiny` would train (random init instead of the cached base, P-POTS
with a flat density: the weights do not change the cost; the P-POTS pilot is a one-off, not included).
After `--warmup` steps, `--steps` optimizer steps are timed. Reported per method:
  tokens/s        sequence tokens of the global batch per second (what the data advances)
  passes/seq      forward/backward passes per sequence (MIRROR, multisample2: up to 2)
  ms/step         median wall time of one optimizer step (the median resists other load on the machine)
  ms/pass         per forward/backward sequence pass (ms/step / passes per step)
  pass-tok/s      tokens through the model per second (tokens/s x passes/seq)
  step MB         peak memory of the timed steps: CPU: RSS growth over the steady state (sampled every ms; the
                  tiny model's activations are a few MB, near the noise); CUDA: max allocated
  peak RSS MB     CPU: the worker process's peak resident memory (imports, data and model included)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

DEFAULT_METHODS = ["standard", "ppots", "mirror", "ppots+mirror", "isad", "syrm", "strats", "ema", "clipped",
                   "multisample2", "arm"]


def run_config(task: str, method: str, steps: int, workdir: str):
    from mdm.bench.spec import expand, load_spec

    spec = load_spec(ROOT / "benchmarks" / "table1.yaml")
    plan = expand(spec, "tiny", workdir)
    if method == "arm":
        run = next(r for r in plan if r.task == task and r.arm is not None)
        method_spec = "standard"
    else:
        run = next(r for r in plan if r.task == task and r.arm is None)
        method_spec = {"preset": method, "t_sampler": {"density": "flat"}} if "ppots" in method else method
    cfg = run.config.model_dump()
    cfg["model"]["base"] = None
    cfg["method"] = method_spec
    cfg["training"].update(max_steps=steps, checkpoint_every=None, progress=False)
    cfg["eval"]["heldout"] = False
    cfg["output_dir"] = str(Path(workdir) / method)
    return cfg


class PeakRSS:
    """Samples this process's RSS every millisecond in a thread (torch ops release the GIL)."""

    def __init__(self):
        import psutil

        self.proc, self.peak, self.stop = psutil.Process(), 0, False

    def __enter__(self):
        import threading

        self.base = self.proc.memory_info().rss
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self.stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()

    @property
    def growth_mb(self) -> float:
        return max(0, self.peak - self.base) / 2**20


def worker(task: str, method: str, warmup: int, steps: int) -> dict:
    import statistics

    import torch

    from mdm.train import RunConfig, Trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = RunConfig.model_validate(run_config(task, method, warmup + steps, tmp))
        trainer = Trainer(cfg)
        trainer.setup()
        for s in range(warmup):
            trainer.train_step(s)
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        entries, times = [], []
        with PeakRSS() as rss:
            for s in range(warmup, warmup + steps):
                start = time.perf_counter()
                entries.append(trainer.train_step(s))
                if cuda:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else rss.growth_mb
        import resource

        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # whole process, setup included
    # per-step medians: robust to other processes on a shared machine
    step_s = statistics.median(times)
    per_step = {k: sum(e[k] for e in entries) / steps for k in ("tokens", "passes", "batch_size", "token_passes")}
    return {"method": method, "task": task, "steps": steps, "tokens_per_s": per_step["tokens"] / step_s,
            "passes_per_seq": per_step["passes"] / per_step["batch_size"], "ms_per_step": 1e3 * step_s,
            "ms_per_pass": 1e3 * step_s / per_step["passes"], "token_passes_per_s": per_step["token_passes"] / step_s,
            "peak_mb": peak, "peak_rss_mb": peak_rss, "device": "cuda" if cuda else "cpu", "threads": torch.get_num_threads(),
            "params": trainer.n_params}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="arith", choices=["arith", "tables"])
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads of each worker (default: torch's)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    p.add_argument("--json-out", type=Path, help="also write the rows as JSON to this file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        print(json.dumps(worker(args.task, args.worker, args.warmup, args.steps)))
        return 0
    methods = [m for m in args.methods.split(",") if m]
    if args.task == "arith" and "syrm" in methods:
        methods.remove("syrm")  # SyRM needs structured prompts (tables)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    rows = []
    for m in methods:
        cmd = [sys.executable, __file__, "--worker", m, "--task", args.task, "--steps", str(args.steps),
               "--warmup", str(args.warmup)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode:
            print(f"{m}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            return 1
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(rows, indent=2) + "\n")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    r0 = rows[0]
    print(f"tiny preset, task {args.task}: {r0['params']:,} parameters, {args.steps} timed steps after "
          f"{args.warmup} warm-up, device {r0['device']} ({r0['threads']} threads)")
    print(f"{'method':<14}{'tokens/s':>10}{'passes/seq':>11}{'ms/step':>9}{'ms/pass':>9}{'pass-tok/s':>11}"
          f"{'step MB':>9}{'peak RSS MB':>12}")
    for r in rows:
        print(f"{r['method']:<14}{r['tokens_per_s']:>10.0f}{r['passes_per_seq']:>11.2f}{r['ms_per_step']:>9.1f}"
              f"{r['ms_per_pass']:>9.2f}{r['token_passes_per_s']:>11.0f}{r['peak_mb']:>9.1f}{r['peak_rss_mb']:>12.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
