"""Training-step time of each method preset vs a bare hand-written MDM step (same model, batch, optimizer).

    python benchmarks/perf/step_overhead.py [--methods standard,mirror,...] [--batch 16 --length 256]

Both steps are timed in one run, interleaved (bare, method, bare, method, ...) so drift hits both; the
ratio of medians is printed per step and per forward/backward pass (MIRROR and multisample2 do 2).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from mdm.models import TinySize, build_tiny_model, num_parameters  # noqa: E402
from mdm.objective import MDMObjective, Method  # noqa: E402
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


def measure(method: str, batch_size: int, length: int, rounds: int, vocab: int) -> dict:
    torch.manual_seed(0)
    tok = FakeTokenizer(vocab)
    model = build_tiny_model(tok, size=TinySize()).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = synthetic_batch(batch_size, length=length, vocab=vocab)
    spec = {"preset": method, "t_sampler": {"density": "flat"}} if "ppots" in method else method
    objective = MDMObjective(Method.build(spec), tok.mask_token_id)
    gen = torch.Generator().manual_seed(0)
    for step in range(3):  # warm-up
        bare_step(model, opt, batch, tok.mask_token_id, gen)
        method_step(model, opt, batch, objective, step)
    bare, ours = [], []
    for step in range(rounds):
        bare.append(timed(lambda: bare_step(model, opt, batch, tok.mask_token_id, gen)))
        ours.append(timed(lambda s=step: method_step(model, opt, batch, objective, s)))
    b, m = statistics.median(bare), statistics.median(ours)
    cost = objective.method.cost
    return {"method": method, "bare_ms": 1e3 * b, "method_ms": 1e3 * m, "ratio_per_step": m / b,
            "passes": cost, "ratio_per_pass": m / (b * cost), "params": num_parameters(model)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="standard")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    rows = [measure(m, args.batch, args.length, args.rounds, args.vocab) for m in args.methods.split(",")]
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; batch {args.batch} x {args.length} tokens, {rows[0]['params']:,} params")
    print(f"{'method':<22}{'bare ms':>9}{'method ms':>11}{'ratio/step':>12}{'ratio/pass':>12}")
    for r in rows:
        print(f"{r['method']:<22}{r['bare_ms']:>9.1f}{r['method_ms']:>11.1f}{r['ratio_per_step']:>12.3f}"
              f"{r['ratio_per_pass']:>12.3f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
