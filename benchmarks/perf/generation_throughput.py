"""Generation throughput (examples/s) of the batched mdm sampler vs the same algorithm one prompt at a time (how
LLaDA's reference evaluation runs) vs diffusers' LLaDA2Pipeline, same tiny model, prompts and settings, one run.

    python benchmarks/perf/generation_throughput.py [--n 32 --batch-size 32 --gen-length 128 --steps 128
                                                     --block-length 32 --threads 1 --model RUN_OR_MODEL_DIR]

Rows:
  mdm batched          mdm.sampler.generate, `--batch-size` prompts per batch (left-padded, sorted by length)
  mdm batched, pre-fix the same, with the attention mask rebuilt by transformers at every model call (the sampler
                       before it passed a prepared 4D mask; `--skip prefix` drops the row)
  mdm one-at-a-time    the same function with batch_size=1: the baseline (same algorithm and implementation)
  LLaDA reference      LLaDA's generate.py transcribed (tests/sampler/test_sampler.py), one prompt at a time, as its
                       eval_llada.py runs it: full-canvas logits and float64 softmax at every step
  diffusers batched    LLaDA2Pipeline + BlockRefinementScheduler, greedy, threshold > 1 (pure top-k), no editing,
                       EOS early stop, num_inference_steps = steps per block, prompts left-padded to one length
  diffusers one-at-a-time
diffusers' algorithm is not LLaDA's (it feeds the model only the blocks up to the current one and aligns blocks to
absolute positions; tests/sampler/test_sampler_diffusers.py lists the differences), so its numbers compare implementations
of a similar amount of work, not identical outputs. With an untrained model (the default) EOS is rare, so early
stopping plays almost no part; pass a trained checkpoint with --model to include it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from mdm.data import build_tokenizer, make_task, mask_token_id_of  # noqa: E402
from mdm.models import build_tiny_model, num_parameters  # noqa: E402
from mdm.sampler import DecodeConfig, chat_prompt_ids, generate  # noqa: E402
from tests.sampler.test_sampler import llada_reference_generate  # noqa: E402


def load(args):
    if args.model:
        from mdm.eval.api import load_model

        model, tok, _ = load_model(args.model, device=args.device, dtype="float32")
        return model, tok
    texts = [e["prompt"] + "\n" + e["response"] for e in make_task("arith", "train", n=2000, seed=0)]
    tok = build_tokenizer(texts, vocab_size=512)
    return build_tiny_model(tok, seed=0).to(args.device).eval(), tok


def run_mdm(model, tok, prompts, config, batch_size):
    out = generate(model, prompts, config, mask_token_id=mask_token_id_of(tok, model.config),
                   eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, batch_size=batch_size)  # fmt: skip
    return out.tokens, out.forward_passes


def run_mdm_prefix(model, tok, prompts, config, batch_size):
    """The batched sampler as it was before it prepared the 4D attention mask once per canvas."""
    import mdm.sampler as sampler

    saved = sampler._prebuilt_mask_ok
    sampler._prebuilt_mask_ok = lambda model: False
    try:
        return run_mdm(model, tok, prompts, config, batch_size)
    finally:
        sampler._prebuilt_mask_ok = saved


def run_reference(model, tok, prompts, config, _batch_size):
    mask_id, eos = mask_token_id_of(tok, model.config), tok.eos_token_id
    tokens = []
    for p in prompts:
        seq = llada_reference_generate(model, torch.tensor([p], device=model.device), config.steps, config.gen_length,
                                       config.block_length, mask_id=mask_id)[0, len(p) :].tolist()  # fmt: skip
        tokens.append(seq[: seq.index(eos) + 1] if eos in seq else seq)
    return tokens, len(prompts) * config.steps


def diffusers_pipeline(model):
    from diffusers import BlockRefinementScheduler, LLaDA2Pipeline

    pipe = LLaDA2Pipeline(model=model, scheduler=BlockRefinementScheduler(), tokenizer=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_diffusers(model, tok, prompts, config, batch_size, pipe=None):
    pipe = pipe or diffusers_pipeline(model)
    mask_id, eos = mask_token_id_of(tok, model.config), tok.eos_token_id
    tokens, calls = [None] * len(prompts), 0
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for c in range(0, len(order), batch_size):
        idx = order[c : c + batch_size]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), tok.pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            attn[r, width - len(prompts[i]) :] = 1

        def count(pipe, step, timestep, kwargs):
            nonlocal calls
            calls += 1
            return kwargs

        out = pipe(input_ids=ids.to(model.device), attention_mask=attn.to(model.device), gen_length=config.gen_length,
                   block_length=config.block_length, num_inference_steps=config.steps_per_block, temperature=0.0,
                   sampling_method="greedy", threshold=1.01, editing_threshold=None, eos_early_stop=True,
                   mask_token_id=mask_id, eos_token_id=eos, output_type="seq", callback_on_step_end=count)  # fmt: skip
        for r, i in enumerate(idx):
            seq = out.sequences[r].tolist()
            tokens[i] = seq[: seq.index(eos) + 1] if eos in seq else seq
    return tokens, calls


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=32, help="prompts")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--task", default="arith", help="prompts from this task's test split (arith, gsm8k, tables)")
    ap.add_argument("--gen-length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 = stable timings on a busy box)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", help="run or model folder (default: the untrained tiny preset backbone)")
    ap.add_argument("--skip", default="",
                    help="comma list of rows to skip: prefix,one,reference,diffusers,diffusers-one")
    ap.add_argument("--json-out", "--json", dest="json_out", help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load(args)
    prompts = [chat_prompt_ids(tok, e["prompt"]) for e in make_task(args.task, "test", n=args.n)]
    config = DecodeConfig(gen_length=args.gen_length, steps=args.steps, block_length=args.block_length)
    skip = set(filter(None, args.skip.split(",")))
    print(f"model: {num_parameters(model) / 1e6:.2f}M params, {args.device}, {args.threads} thread(s), torch "
          f"{torch.__version__}, {platform.processor() or platform.machine()}")  # fmt: skip
    print(f"prompts: {len(prompts)} from {args.task} test, {min(map(len, prompts))}-{max(map(len, prompts))} tokens; "
          f"decoding: gen_length={config.gen_length} steps={config.steps} block_length={config.block_length} "
          f"greedy low-confidence, batch size {args.batch_size}")  # fmt: skip
    with torch.no_grad():
        warm = DecodeConfig(gen_length=config.block_length, steps=2, block_length=config.block_length)
        run_mdm(model, tok, prompts[:2], warm, 2)
        pipe = None
        if "diffusers" not in skip:
            pipe = diffusers_pipeline(model)  # import and build outside the timed region
            run_diffusers(model, tok, prompts[:2], warm, 2, pipe)
        rows = {}
        s, (toks, calls) = timed(run_mdm, model, tok, prompts, config, args.batch_size)
        rows["mdm batched"] = {"seconds": s, "forward_passes": calls, "tokens": toks}
        if "prefix" not in skip:
            s, (toks, calls) = timed(run_mdm_prefix, model, tok, prompts, config, args.batch_size)
            rows["mdm batched, pre-fix (mask rebuilt per call)"] = {"seconds": s, "forward_passes": calls, "tokens": toks}
        if "one" not in skip:
            s, (toks, calls) = timed(run_mdm, model, tok, prompts, config, 1)
            rows["mdm one-at-a-time"] = {"seconds": s, "forward_passes": calls, "tokens": toks}
        if "reference" not in skip:
            s, (toks, calls) = timed(run_reference, model, tok, prompts, config, 1)
            rows["LLaDA reference one-at-a-time"] = {"seconds": s, "forward_passes": calls, "tokens": toks}
        if "diffusers" not in skip:
            s, (toks, calls) = timed(run_diffusers, model, tok, prompts, config, args.batch_size, pipe)
            rows["diffusers batched"] = {"seconds": s, "forward_passes": calls, "tokens": toks}
        if "diffusers-one" not in skip and "diffusers" not in skip:
            s, (toks, calls) = timed(run_diffusers, model, tok, prompts, config, 1, pipe)
            rows["diffusers one-at-a-time"] = {"seconds": s, "forward_passes": calls, "tokens": toks}
    base = rows.get("mdm one-at-a-time", rows["mdm batched"])["seconds"]
    print(f"\n{'':46s}{'examples/s':>12s}{'seconds':>10s}{'model calls':>13s}{'vs one-at-a-time':>18s}")
    for name, r in rows.items():
        r["examples_per_s"] = len(prompts) / r["seconds"]
        r["speedup_vs_one_at_a_time"] = base / r["seconds"]
        print(f"{name:46s}{r['examples_per_s']:12.2f}{r['seconds']:10.2f}{r['forward_passes']:13d}"
              f"{r['speedup_vs_one_at_a_time']:17.2f}x")  # fmt: skip
    same = "mdm one-at-a-time" in rows and rows["mdm batched"]["tokens"] == rows["mdm one-at-a-time"]["tokens"]
    print(f"\nmdm batched outputs == one-at-a-time outputs: {same if 'mdm one-at-a-time' in rows else 'n/a'}")
    if "LLaDA reference one-at-a-time" in rows:
        ref_same = rows["mdm batched"]["tokens"] == rows["LLaDA reference one-at-a-time"]["tokens"]
        print(f"mdm batched outputs == LLaDA reference outputs: {ref_same} (an untrained model's near-tied "
              "confidences can order differently under other float rounding)")  # fmt: skip
    if args.json_out:
        payload = {"settings": vars(args) | config.to_dict(),
                   "rows": {k: {kk: vv for kk, vv in v.items() if kk != "tokens"} for k, v in rows.items()},
                   "batched_equals_one_at_a_time": same,
                   "machine": {"threads": torch.get_num_threads(), "torch": torch.__version__,
                               "params": num_parameters(model)}}  # fmt: skip
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
