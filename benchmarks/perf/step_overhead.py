"""Training-step time of each method preset vs a bare hand-written MDM step (same model, batch, optimizer).

    python benchmarks/perf/step_overhead.py [--methods all|standard,mirror,...] [--batch 16 --length 256]
                                            [--threads 1] [--json OUT]

Both steps are timed in one run, interleaved (bare, method, bare, method, ...) so drift hits both; the
ratio of medians is printed per step and per forward/backward pass (MIRROR and multisample2 do 2).
For a method with more than one pass per sequence, a bare step on the same number of rows (2 x batch, the
views of the method as independent rows) is timed as well: `ratio_vs_bare_same_rows` separates our overhead
(the objective's code) from the model's own cost of a 2x wider batch (on CPU it is superlinear: cache).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from mdm.models import TinySize, build_tiny_model, num_parameters  # noqa: E402
from mdm.objective import MDMObjective, Method  # noqa: E402
from mdm.provenance import cpu_name  # noqa: E402
from tests.helpers import FakeTokenizer, synthetic_batch  # noqa: E402

EPS = 1e-3


def bare_step(model, opt, batch, mask_id, gen):
    """What one writes by hand: t ~ U, Bernoulli mask on the response, CE / p, per-sequence 1/|E|."""
    eligible = batch.response_mask()
    t = torch.rand(batch.size, generator=gen)
    p = (1 - EPS) * t + EPS
    masked = (torch.rand(eligible.shape, generator=gen) < p[:, None]) & eligible
    noised = torch.where(masked, torch.full_like(batch.input_ids, mask_id), batch.input_ids)
    logits = model(input_ids=noised, attention_mask=batch.attention_mask).logits
    ce = torch.zeros(masked.shape)
    ce[masked] = F.cross_entropy(logits[masked].float(), batch.input_ids[masked], reduction="none")
    loss = ((ce / p[:, None]).sum(1) / eligible.sum(1).clamp(min=1)).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def method_step(model, opt, batch, objective, step):
    out = objective(model, batch, seed=0, step=step)
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    opt.step()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def method_spec(method: str):
    """P-POTS without a fitted density runs on a flat one (the weights do not change the cost)."""
    if "ppots" in method and "adaptive" not in method:
        return {"preset": method, "t_sampler": {"density": "flat"}}
    return method


def measure(method: str, batch_size: int, length: int, rounds: int, vocab: int) -> dict:
    import mdm.variance  # noqa: F401  (registers ppots_adaptive)

    torch.manual_seed(0)
    tok = FakeTokenizer(vocab)
    model = build_tiny_model(tok, size=TinySize()).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = synthetic_batch(batch_size, length=length, vocab=vocab)
    objective = MDMObjective(Method.build(method_spec(method)), tok.mask_token_id)
    cost = objective.method.cost
    wide = synthetic_batch(2 * batch_size, length=length, vocab=vocab) if cost > 1 else None
    gen = torch.Generator().manual_seed(0)
    for step in range(3):  # warm-up
        bare_step(model, opt, batch, tok.mask_token_id, gen)
        method_step(model, opt, batch, objective, step)
        if wide is not None:
            bare_step(model, opt, wide, tok.mask_token_id, gen)
    bare, ours, bare_wide = [], [], []
    for step in range(rounds):
        bare.append(timed(lambda: bare_step(model, opt, batch, tok.mask_token_id, gen)))
        ours.append(timed(lambda s=step: method_step(model, opt, batch, objective, s)))
        if wide is not None:
            bare_wide.append(timed(lambda: bare_step(model, opt, wide, tok.mask_token_id, gen)))
    b, m = statistics.median(bare), statistics.median(ours)
    row = {"method": method, "bare_ms": 1e3 * b, "method_ms": 1e3 * m, "ratio_per_step": m / b,
           "passes": cost, "ratio_per_pass": m / (b * cost), "params": num_parameters(model)}
    if wide is not None:
        w = statistics.median(bare_wide)
        row |= {"bare_2x_rows_ms": 1e3 * w, "bare_2x_over_bare": w / b, "ratio_vs_bare_same_rows": m / w}
    return row


def machine() -> dict:
    import os

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="standard")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 = stable on a busy box)")
    parser.add_argument("--json", type=Path, help="also write the rows (and the machine) here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.methods == "all":
        from mdm.objective.method import PRESETS

        methods = list(PRESETS)
    else:
        methods = [m for m in args.methods.split(",") if m]
    rows = [measure(m, args.batch, args.length, args.rounds, args.vocab) for m in methods]
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['threads']} threads, torch {info['torch']}; "
          f"batch {args.batch} x {args.length} tokens, {rows[0]['params']:,} params")
    print(f"{'method':<22}{'bare ms':>9}{'method ms':>11}{'ratio/step':>12}{'ratio/pass':>12}{'vs bare 2B':>12}")
    for r in rows:
        same = f"{r['ratio_vs_bare_same_rows']:>12.3f}" if "ratio_vs_bare_same_rows" in r else f"{'':>12}"
        print(f"{r['method']:<22}{r['bare_ms']:>9.1f}{r['method_ms']:>11.1f}{r['ratio_per_step']:>12.3f}"
              f"{r['ratio_per_pass']:>12.3f}{same}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        settings = {"batch": args.batch, "length": args.length, "rounds": args.rounds, "vocab": args.vocab}
        args.json.write_text(json.dumps({"machine": info, "settings": settings, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
