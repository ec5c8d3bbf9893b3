"""Evaluation cost of a plan for `mdm bench --dry-run`, in GPU-hours, beside training's (mdm.bench.estimate).

Per run, with P parameters, n scored prompts (eval.accuracy.n, else the task's test split), a prompt of about half
a training sequence (avg_tokens / 2) and a canvas of gen_length tokens:
  MDM decoding  every step is one forward of prompt + canvas:   2 P x n x steps x (avg/2 + gen_length)
                (an upper bound: early stop skips the blocks after EOS)
  ARM decoding  one token a forward with a KV cache:             2 P x n x (avg/2 + gen_length)
  held-out      MDM: t_grid forwards of each held-out sequence, ARM: one:   2 P x heldout x avg x (t_grid | 1)
Hours = FLOPs / (peak x MFU) on one GPU (hardware.mfu: decoding's small batches may reach less).
"""

from __future__ import annotations

from mdm.bench.estimate import PEAK_TFLOPS, model_params

TEST_SIZES = {"gsm8k": 1319}  # the test split of a task whose eval.accuracy.n is not given


def run_eval_cost(run, preset) -> dict:
    cfg = run.config
    ts = preset.tasks[run.task]
    avg = (ts.avg_tokens if ts and ts.avg_tokens else None) or cfg.data.max_length / 2
    params = model_params(cfg.model, run.arm.params if run.arm else preset.params) or 0.0
    acc = cfg.eval.accuracy or {}
    n = acc.get("n") or TEST_SIZES.get(run.task, 0)
    gen = int(acc.get("gen_length") or 128)
    forwards = 1 if run.arm is not None else int(acc.get("steps") or gen)
    decode = 2 * params * n * (forwards if run.arm is None else 1) * (avg / 2 + gen)
    n_train = cfg.data.n_train or 0
    heldout = round(cfg.data.heldout_fraction * n_train) if cfg.eval.heldout else 0
    likelihood = 2 * params * heldout * avg * (1 if run.arm is not None else cfg.eval.t_grid)
    return {"prompts": n, "forwards_per_prompt": forwards if run.arm is None else gen, "flops": decode + likelihood}


def plan_eval_cost(runs, preset) -> dict:
    hw = preset.hardware
    peak = (hw.peak_tflops or PEAK_TFLOPS.get(hw.name) or 0.0) * 1e12 * hw.mfu
    costs = [run_eval_cost(r, preset) for r in runs]
    flops = sum(c["flops"] for c in costs)
    return {"flops": flops, "hours": flops / peak / 3600 if peak else float("nan"),
            "prompts": sum(c["prompts"] for c in costs),
            "forwards_per_prompt": max((c["forwards_per_prompt"] for c in costs), default=0)}
