"""Cost of the P-POTS pilot against one paper-preset SFT run, and of the adaptive sampler.

    python benchmarks/perf/pilot_cost.py                 # counts on GSM8K (offline) + adaptive overhead
    python benchmarks/perf/pilot_cost.py --quality       # + fit quality of smaller pilots (tiny model, ~2 min)
    python benchmarks/perf/pilot_cost.py --json OUT      # also write every number printed here to OUT

Compute unit: one token through one forward pass. A pilot row is forward-only (eval, no grad): 1 unit per
token. A training row is forward + backward, about 3 units per token (the backward costs about two
forwards). The paper preset (../shared/spec/PAPER.md): GSM8K train (7,473 rows), 90% used for training,
5 epochs, every sequence once per epoch; MIRROR doubles the passes per row. The pilot's a clean sequences
are drawn from the same data, so its expected cost is a*b*c*E[L] and the ratio to the SFT run does not
depend on the tokenizer to first order (both scale with E[L]); the script prints the measured lengths.
Padding is counted separately: the pilot sorts its rows by length (all b*c rows of one x0 have the same
length, so it pads almost nothing); the SFT run pads each micro-batch (4 per GPU) to its longest row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from mdm.data import build_tokenizer, format_chat, make_task  # noqa: E402

PAPER = {"epochs": 5, "train_fraction": 0.9, "micro_batch": 4, "backward_factor": 3.0}
SIZES = [(15, 70, 15), (15, 70, 5), (15, 35, 8), (12, 35, 6), (8, 24, 8)]
RESULT: dict = {}  # what --json writes


def tokenizer_for_counting():
    """LLaDA's tokenizer when it is in the local HF cache, else a byte-level BPE (vocab 8192) on GSM8K."""
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained("GSAI-ML/LLaDA-8B-Instruct", trust_remote_code=True), "LLaDA-8B-Instruct"
    except Exception:  # offline without a cache: any sensible tokenizer gives the same ratio
        examples = make_task("gsm8k", "train")
        tok = build_tokenizer([e["prompt"] + "\n" + e["response"] for e in examples], 8192)
        return tok, "byte-level BPE, vocab 8192 (LLaDA's tokenizer is not cached here)"


def sft_units(lengths: np.ndarray, passes: float, rng) -> tuple[float, float]:
    """(useful, padded) forward-token units of one paper-preset SFT run."""
    n_train = int(PAPER["train_fraction"] * len(lengths))
    train = lengths[rng.permutation(len(lengths))[:n_train]]
    useful = PAPER["epochs"] * PAPER["backward_factor"] * passes * train.sum()
    padded = 0.0
    for _ in range(PAPER["epochs"]):
        order = train[rng.permutation(n_train)]
        mb = PAPER["micro_batch"]
        batches = order[: n_train // mb * mb].reshape(-1, mb)
        padded += batches.max(1).sum() * mb + order[n_train // mb * mb:].sum()
    return useful, PAPER["backward_factor"] * passes * padded


def counts(args) -> None:
    tok, tok_name = tokenizer_for_counting()
    examples = make_task("gsm8k", "train")
    lengths = np.array([len(format_chat(tok, e["prompt"], e["response"])[0]) for e in examples])
    rng = np.random.default_rng(0)
    print(f"GSM8K train: {len(lengths):,} sequences, tokenizer {tok_name}: mean {lengths.mean():.0f} tokens "
          f"(median {np.median(lengths):.0f}, max {lengths.max()})")
    runs = {"Standard SFT": sft_units(lengths, 1.0, rng), "P-POTS+MIRROR SFT": sft_units(lengths, 2.0, rng)}
    RESULT["counts"] = {"tokenizer": tok_name, "sequences": int(len(lengths)), "mean_length": float(lengths.mean()),
                        "sft_units": {k: {"useful": v[0], "padded": v[1]} for k, v in runs.items()}, "pilots": []}
    for name, (useful, padded) in runs.items():
        print(f"{name}: {useful:.3e} forward-token units ({padded:.3e} with micro-batch padding)")
    # the trainer caches the pilot by (start weights, pilot rows, settings): Table 1 runs P-POTS and P-POTS+MIRROR
    # with 3 seeds each per task, all from the same model and data, so one pilot serves 6 runs
    table = 3 * runs["Standard SFT"][0] + 3 * runs["P-POTS+MIRROR SFT"][0]
    print("\npilot a x b x c    forward passes   forward tokens   % of Standard SFT   % of P-POTS+MIRROR SFT"
          "   % of a table's 6 P-POTS runs (shared pilot)")
    for a, b, c in SIZES:
        x0 = lengths[rng.choice(len(lengths), size=a, replace=False)]
        tokens_expected = a * b * c * lengths.mean()
        tokens_drawn = b * c * x0.sum()
        std, pm = runs["Standard SFT"][0], runs["P-POTS+MIRROR SFT"][0]
        tag = "  (paper)" if (a, b, c) == (15, 70, 15) else ""
        RESULT["counts"]["pilots"].append({"a": a, "b": b, "c": c, "forward_passes": a * b * c,
                                           "forward_tokens": float(tokens_expected),
                                           "pct_of_standard_sft": 100 * tokens_expected / std,
                                           "pct_of_ppots_mirror_sft": 100 * tokens_expected / pm,
                                           "pct_of_table_ppots_runs_shared": 100 * tokens_expected / table})
        print(f"{a:>3} x {b:>3} x {c:>3}    {a * b * c:>14,}   {tokens_expected:>14.3e}   {100 * tokens_expected / std:>17.2f}"
              f"   {100 * tokens_expected / pm:>22.2f}   {100 * tokens_expected / table:>43.2f}{tag}")
        if (a, b, c) == (15, 70, 15):
            paper_drawn = tokens_drawn
    print(f"(one seeded draw of 15 paper-size x0: {paper_drawn:.3e} tokens, "
          f"{100 * paper_drawn / runs['Standard SFT'][0]:.2f}% of Standard SFT; the table uses E[L])")
    print("ratio formula: a*b*c / (3 * passes * epochs * 0.9 * N_train) = "
          f"{15 * 70 * 15 / (3 * 5 * 0.9 * len(lengths)):.4f} for the paper's sizes and a Standard run")


def adaptive_overhead(args) -> None:
    import mdm.variance  # noqa: F401
    from mdm.models import build_tiny_model
    from mdm.objective import MDMObjective, Method
    from mdm.objective.rng import generator
    from tests.helpers import FakeTokenizer, synthetic_batch

    sampler = Method.build({"t_sampler": {"name": "ppots_adaptive", "refit_every": 50, "warmup": 50}}).t_sampler
    n = 32
    observe_s, refit_s = [], []
    for step in range(300):
        t, _ = sampler.sample(n, generator(0, step, "t"))
        loss = 1 + 3 * t**2 + (0.1 + 8 * (1 - t) ** 6) * torch.randn(n, generator=generator(1, step), dtype=torch.float64)
        start = time.perf_counter()
        sampler.observe(t, loss)
        mid = time.perf_counter()
        refitted = sampler.end_step(step)
        end = time.perf_counter()
        observe_s.append(mid - start + (0 if refitted else end - mid))
        if refitted:
            refit_s.append(end - mid)
    per_step = np.median(observe_s) + np.mean(refit_s) / 50
    tok = FakeTokenizer(2048)
    model = build_tiny_model(tok).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = synthetic_batch(16, length=256, vocab=2048)
    obj = MDMObjective("standard", tok.mask_token_id)
    times = []
    for step in range(8):
        start = time.perf_counter()
        out = obj(model, batch, seed=0, step=step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    step_s = float(np.median(times[2:]))
    RESULT["adaptive"] = {"extra_forward_passes": 0, "observe_ms": 1e3 * float(np.median(observe_s)),
                          "refit_ms": 1e3 * float(np.mean(refit_s)), "amortised_ms_per_step": 1e3 * float(per_step),
                          "step_ms": 1e3 * step_s, "pct_of_step": 100 * float(per_step) / step_s}
    print(f"\nadaptive P-POTS (ppots_adaptive, refit every 50 steps, global batch {n}): 0 extra forward passes")
    print(f"  observe + end_step: {1e3 * np.median(observe_s):.3f} ms/step; refit (EPR, warm start + 4 restarts): "
          f"{1e3 * np.mean(refit_s):.1f} ms each ({len(refit_s)} refits)")
    print(f"  amortised {1e3 * per_step:.3f} ms/step = {100 * per_step / step_s:.2f}% of a tiny-model CPU step "
          f"({1e3 * step_s:.0f} ms, batch 16 x 256) -- an upper bound: an 8B-model step takes seconds")


def pilot_throughput(model, x0, b: int, c: int, token_budget: int, mask_token_id: int) -> dict:
    """Wall time of one Standard pilot table (a x b x c rows, forward only) with `token_budget` tokens a forward."""
    from mdm.objective import Method
    from mdm.variance.estimator import t_grid
    from mdm.variance.pilot import run_mdm

    t, _ = t_grid(b, "midpoint")
    start = time.perf_counter()
    run = run_mdm(model, x0, Method.build("standard"), t, c, mask_token_id=mask_token_id, seed=0,
                  token_budget=token_budget)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": run.forward_rows, "tokens": run.forward_tokens,
            "rows_per_s": run.forward_rows / seconds, "tokens_per_s": run.forward_tokens / seconds}


def throughput(args) -> None:
    """Batched pilot (token budget per forward, rows of one x0 together) vs one pilot row per forward (the
    reference's loop: one masked sequence through the model at a time), same tiny model, same table."""
    from mdm.models import build_tiny_model
    from tests.helpers import FakeTokenizer, synthetic_batch

    tok = FakeTokenizer(1024)
    model = build_tiny_model(tok).eval()
    a, b, c, length = args.pilot_a, args.pilot_b, args.pilot_c, args.pilot_length
    x0 = synthetic_batch(a, length=length, vocab=1024)
    pilot_throughput(model, x0, 10, 1, 16384, tok.mask_token_id)  # warm-up
    batched = pilot_throughput(model, x0, b, c, args.token_budget, tok.mask_token_id)
    single = pilot_throughput(model, x0, b, c, length, tok.mask_token_id)
    RESULT["throughput"] = {"a": a, "b": b, "c": c, "length": length, "token_budget": args.token_budget,
                            "batched": batched, "one_at_a_time": single,
                            "speedup": single["seconds"] / batched["seconds"]}
    print(f"\npilot throughput, tiny model ({a} x {b} x {c} rows, sequences <= {length} tokens, forward only):")
    print(f"  batched ({args.token_budget} tokens a forward): {batched['rows_per_s']:.1f} rows/s; one row a forward "
          f"(reference): {single['rows_per_s']:.1f} rows/s; speedup {single['seconds'] / batched['seconds']:.2f}x")


def quality(args) -> None:
    """Fit P-POTS from sub-pilots of one paper-size Standard pilot on the tiny model; evaluate each fitted
    density on the full table (the reference): total variance vs Standard, and vs the full-size fit."""
    from mdm.objective import Method
    from mdm.profiling.spec import load, load_spec, pick_x0
    from mdm.variance.estimator import moments_by_t
    from mdm.variance.fit import fit_ppots
    from mdm.variance.profile import Profiler, predicted_gain

    spec = load_spec(args.config)
    loaded = load(spec, progress=sys.stderr.isatty())
    x0 = pick_x0(loaded.items, 15, spec.seed, loaded.tokenizer, spec.data.task, spec.data.max_length)
    profiler = Profiler(loaded.model, x0, mask_token_id=loaded.mask_token_id, b=70, c=15, seed=spec.seed,
                        token_budget=spec.pilot.token_budget, progress=sys.stderr.isatty())
    start = time.perf_counter()
    raw = profiler.table(Method.build("standard")).losses
    seconds = time.perf_counter() - start
    t = profiler.t

    def evaluate(artifact):  # P-POTS total / Standard total, both on the full table
        gain = predicted_gain(profiler, artifact)
        return gain["ppots"]["total"] / gain["standard"]["total"]

    standard = predicted_gain(profiler, {"grid": [0.0, 1.0], "density": [1.0, 1.0]})["standard"]["total"]
    print(f"\nfit quality on {loaded.model_id}, {loaded.data_id}: paper-size Standard pilot took {seconds:.0f} s "
          f"({profiler.forward_tokens:,} tokens); Standard total {standard:.4g}")
    print("pilot a x b x c   P-POTS total / Standard (evaluated on the full 15 x 70 x 15 table)")
    for a, b, c in SIZES:
        cols = np.floor((np.arange(b) + 0.5) / b * 70).astype(int)  # the 70-point grid nearest a b-point one
        sub = raw[:a][:, cols][:, :, :c]
        artifact = fit_ppots(t[cols], moments_by_t(sub), restarts=20)
        print(f"{a:>3} x {b:>3} x {c:>3}   {evaluate(artifact):.4f}")
    full = fit_ppots(t, moments_by_t(raw), restarts=20, full_second_moment=True)
    print(f" 15 x  70 x  15   {evaluate(full):.4f}  (--full-second-moment: w^2 = g^2 + v + v_x0)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quality", action="store_true", help="also run the tiny-model fit-quality study")
    parser.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "variance_tiny.yaml"))
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--pilot-a", type=int, default=4, help="throughput pilot: clean sequences")
    parser.add_argument("--pilot-b", type=int, default=10, help="throughput pilot: t values")
    parser.add_argument("--pilot-c", type=int, default=6, help="throughput pilot: masks per (x0, t)")
    parser.add_argument("--pilot-length", type=int, default=192, help="throughput pilot: sequence length")
    parser.add_argument("--token-budget", type=int, default=16384, help="throughput pilot: tokens a forward")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    counts(args)
    adaptive_overhead(args)
    if not args.skip_throughput:
        throughput(args)
    if args.quality:
        quality(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        RESULT["machine"] = {"threads": torch.get_num_threads(), "torch": torch.__version__}
        args.json.write_text(json.dumps(RESULT, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
