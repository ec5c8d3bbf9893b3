"""GPU rows: model FLOP utilisation (bf16), peak memory and the largest batch of a ~1B MDM training step.

    python benchmarks/perf/gpu_mfu.py [--length 512 --batch 8 --steps 10] [--peak-tflops 989] [--json OUT]
                                      [--skip-without-cuda]

Model: a bidirectional Gemma3 of about 1B parameters built from its config (random init, bf16 weights, no
download; Gemma-3-1B's shape: hidden 1152, 26 layers, 4 heads of 256 (1 KV head), MLP 6912, vocab 262,144),
trained with the Standard MDM objective (mdm.objective) and AdamW, SDPA attention.
FLOP accounting (nanoGPT's `estimate_mfu`, PaLM appendix B): per token, forward + backward,
    6 N  +  12 n_layer n_head head_dim L
N = parameters (embedding included: it is also the tied output projection), L = sequence length; the attention
term counts QK^T and AV over the full (bidirectional) context. MFU = achieved FLOP/s / peak, with the peak of an
H100 SXM in dense bf16 (989 TFLOP/s) unless --peak-tflops says otherwise.
Largest batch: doubled from --batch until CUDA runs out of memory (then bisected), at --length tokens.
Without CUDA the script says so and exits (status 1, or 0 with --skip-without-cuda), writing
{"measured": false, "reason": ...} to --json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

H100_BF16_PEAK_TFLOPS = 989.0
GEMMA3_1B = dict(hidden_size=1152, num_hidden_layers=26, num_attention_heads=4, num_key_value_heads=1, head_dim=256,
                 intermediate_size=6912, vocab_size=262_144)


def build_model(device):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    size = GEMMA3_1B
    config = Gemma3TextConfig(**size, use_bidirectional_attention=True, attn_implementation="sdpa",
                              layer_types=["full_attention"] * size["num_hidden_layers"], sliding_window=4096,
                              max_position_embeddings=8192, tie_word_embeddings=True, pad_token_id=0, bos_token_id=2,
                              eos_token_id=1)  # fmt: skip
    config.mask_token_id = size["vocab_size"] - 1
    with torch.device(device):
        model = Gemma3ForCausalLM(config).to(torch.bfloat16)
    return model, config


def flops_per_token(n_params: int, config, length: int) -> float:
    attention = 12 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * length
    return 6 * n_params + attention


def train_step(model, opt, objective, batch):
    out = objective(model, batch, seed=0, step=0)
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    opt.step()


def make_batch(n: int, length: int, vocab: int, device):
    from mdm.objective import MDMBatch

    ids = torch.randint(4, vocab - 2, (n, length), device=device)
    return MDMBatch(ids, torch.ones_like(ids), torch.full((n,), length // 4, device=device))


def fits(model, opt, objective, n, length, vocab, device) -> bool:
    try:
        train_step(model, opt, objective, make_batch(n, length, vocab, device))
        torch.cuda.synchronize()
        return True
    except torch.OutOfMemoryError:
        opt.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--peak-tflops", type=float, default=H100_BF16_PEAK_TFLOPS)
    ap.add_argument("--max-batch-limit", type=int, default=1024, help="stop the largest-batch search here")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--skip-without-cuda", action="store_true", help="exit 0 (not 1) when there is no CUDA device")
    args = ap.parse_args()

    def write(obj):
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(obj, indent=2) + "\n")

    if not torch.cuda.is_available():
        reason = (f"no CUDA device (torch {torch.__version__}, cuda available: False): the GPU rows (1B bf16 MFU, "
                  "peak memory, largest batch) need an NVIDIA GPU; run this script on one")
        print(f"gpu_mfu.py: {reason}", file=sys.stderr)
        write({"measured": False, "reason": reason})
        return 0 if args.skip_without_cuda else 1

    from mdm.models import num_parameters
    from mdm.objective import MDMObjective

    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    model, config = build_model(device)
    model.train()
    n_params = num_parameters(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    objective = MDMObjective("standard", config.mask_token_id)
    batch = make_batch(args.batch, args.length, config.vocab_size, device)
    for _ in range(2):
        train_step(model, opt, objective, batch)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        train_step(model, opt, objective, batch)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    peak_gib = torch.cuda.max_memory_allocated() / 2**30
    tokens = args.batch * args.length
    achieved = flops_per_token(n_params, config, args.length) * tokens / step_s
    mfu = achieved / (args.peak_tflops * 1e12)

    lo, hi = args.batch, None  # largest batch: double, then bisect
    while hi is None and lo * 2 <= args.max_batch_limit:
        if fits(model, opt, objective, lo * 2, args.length, config.vocab_size, device):
            lo *= 2
        else:
            hi = lo * 2
    while hi is not None and hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(model, opt, objective, mid, args.length, config.vocab_size, device) else (lo, mid)
    result = {"measured": True, "device": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "params": n_params, "length": args.length, "batch": args.batch, "step_ms": 1e3 * step_s,
              "tokens_per_s": tokens / step_s, "achieved_tflops": achieved / 1e12, "peak_tflops": args.peak_tflops,
              "mfu": mfu, "peak_memory_gib": peak_gib, "largest_batch": lo,
              "largest_batch_capped": hi is None}  # fmt: skip
    print(f"{result['device']}: {n_params / 1e9:.2f}B params, batch {args.batch} x {args.length}: "
          f"{1e3 * step_s:.0f} ms/step, {achieved / 1e12:.0f} TFLOP/s = MFU {100 * mfu:.1f}% of {args.peak_tflops:.0f}; "
          f"peak memory {peak_gib:.1f} GiB; largest batch at L={args.length}: {lo}{'+' if hi is None else ''}")
    write(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
