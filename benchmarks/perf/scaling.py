"""How pilot, training-step and generation time grow with sequence length L and batch B (tiny model, CPU).

    python benchmarks/perf/scaling.py [--lengths 64,128,256] [--batches 1,4,16] [--threads 1] [--json OUT]

For every (L, B), median wall time (after a warm-up) of
  pilot     one pilot forward chunk: B masked copies of an L-token sequence, forward only, Standard loss per row
            (mdm.variance.pilot.run_mdm with a token budget of B x L: one model call)
  train     one Standard training step (MDMObjective forward + backward + AdamW) on B rows of L tokens
  generate  one denoising step of mdm.sampler.generate: B prompts of L/2 tokens, a canvas of L/2 masks
            (gen_length = block_length = L/2, 8 steps, no early stop; time / 8)
Each series is fitted by least squares with  time = c0 + c1 * (B L) + c2 * (B L^2):  c0 is fixed overhead per
call, c1 the cost of a token (the weights' matmuls), c2 the attention term (a token times its context length).
Use them to extrapolate to other sizes of this model on this machine (time grows linearly in B and, through
c2, quadratically in L).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mdm.models import build_tiny_model, num_parameters  # noqa: E402
from mdm.objective import MDMBatch, MDMObjective, Method  # noqa: E402
from mdm.sampler import DecodeConfig, generate  # noqa: E402
from mdm.variance.pilot import run_mdm  # noqa: E402
from tests.helpers import FakeTokenizer  # noqa: E402

VOCAB = 1024


def full_batch(n: int, length: int, seed: int = 0) -> MDMBatch:
    """n rows of exactly `length` real tokens, the first quarter prompt."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (n, length), generator=g)
    return MDMBatch(ids, torch.ones_like(ids), torch.full((n,), length // 4))


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(model, tok, length: int, batch: int, repeats: int) -> dict:
    mask_id = tok.mask_token_id
    x0 = full_batch(1, length)
    std = Method.build("standard")
    t = np.linspace(0.05, 0.95, batch)

    def pilot():
        with torch.no_grad():
            run_mdm(model, x0, std, t, 1, mask_token_id=mask_id, seed=0, token_budget=batch * length)

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    objective = MDMObjective("standard", mask_id)
    rows = full_batch(batch, length, seed=1)

    def train():
        model.train()
        out = objective(model, rows, seed=0, step=0)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    prompts = full_batch(batch, length // 2, seed=2).input_ids.tolist()
    steps = 8
    config = DecodeConfig(gen_length=length // 2, steps=steps, block_length=length // 2, early_stop=False)

    def gen():
        generate(model, prompts, config, mask_token_id=mask_id, eos_token_id=tok.eos_token_id,
                 pad_token_id=tok.pad_token_id, batch_size=batch)  # fmt: skip

    return {"L": length, "B": batch, "tokens": batch * length,
            "pilot_s": median_time(pilot, repeats), "train_s": median_time(train, repeats),
            "generate_step_s": median_time(gen, max(1, repeats // 2)) / steps}


def fit(rows: list[dict], key: str) -> dict:
    B = np.array([r["B"] for r in rows], dtype=float)
    L = np.array([r["L"] for r in rows], dtype=float)
    y = np.array([r[key] for r in rows])
    X = np.stack([np.ones_like(B), B * L, B * L * L], 1)
    # relative least squares (every size matters, not just the largest), coefficients kept >= 0
    coef, *_ = np.linalg.lstsq(X / y[:, None], np.ones_like(y), rcond=None)
    coef = np.clip(coef, 0, None)
    pred = X @ coef
    return {"overhead_ms": 1e3 * coef[0], "per_token_us": 1e6 * coef[1], "per_token_per_context_ns": 1e9 * coef[2],
            "max_rel_error": float(np.max(np.abs(pred - y) / y))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="64,128,256")
    ap.add_argument("--batches", default="1,4,16")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tok = FakeTokenizer(VOCAB)
    model = build_tiny_model(tok)
    rows = []
    for length in map(int, args.lengths.split(",")):
        for batch in map(int, args.batches.split(",")):
            rows.append(measure(model, tok, length, batch, args.repeats))
            r = rows[-1]
            print(f"L={length:4d} B={batch:3d}: pilot {1e3 * r['pilot_s']:8.1f} ms  train step {1e3 * r['train_s']:8.1f} ms"
                  f"  generation step {1e3 * r['generate_step_s']:8.1f} ms", flush=True)
    fits = {k: fit(rows, k) for k in ("pilot_s", "train_s", "generate_step_s")}
    for k, f in fits.items():
        print(f"{k:16s} time = {f['overhead_ms']:.2f} ms + {f['per_token_us']:.2f} us x (B L) + "
              f"{f['per_token_per_context_ns']:.3f} ns x (B L^2)   (max rel. error {100 * f['max_rel_error']:.0f}%)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"params": num_parameters(model), "threads": torch.get_num_threads(),
                                         "rows": rows, "fits": fits}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
