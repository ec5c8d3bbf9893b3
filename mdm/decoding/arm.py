"""Autoregressive (ARM) decoding with transformers' `generate`, behind the sampler's interface."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import torch

from mdm.decoding.rules import GenerationOutput
from mdm.objective.rng import derive_seed


@torch.no_grad()
def autoregressive_generate(
    model,
    prompts: Sequence[Sequence[int]],
    config=None,
    *,
    eos_token_id: int | None,
    pad_token_id: int | None = None,
    batch_size: int = 16,
    device=None,
    shard: tuple[int, int] | None = None,
) -> GenerationOutput:
    """ARM decoding with transformers' `generate` (left padding): up to `gen_length` new tokens, greedy at
    temperature 0, else sampled (seeded by `config.seed`). `steps`/`block_length`/`remasking` do not apply.
    `shard` (rank, world): only every world-th batch, as `generate`."""
    config = config or SimpleNamespace(gen_length=128, temperature=0.0, seed=0)  # DecodeConfig()'s
    device = device or next(model.parameters()).device
    pad = pad_token_id if pad_token_id is not None else eos_token_id
    model.eval()
    prompts = [list(p) for p in prompts]
    tokens: list = [None] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    calls = 0
    for c in range(0, len(order), batch_size):
        if shard is not None and (c // batch_size) % shard[1] != shard[0]:
            continue
        idx = order[c : c + batch_size]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        attn = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            p = prompts[i]
            ids[r, width - len(p) :] = torch.tensor(p)
            attn[r, width - len(p) :] = 1
        kwargs = {"do_sample": False}
        if config.temperature > 0:
            torch.manual_seed(derive_seed("decode-arm", config.seed, c))
            kwargs = {"do_sample": True, "temperature": float(config.temperature), "top_k": 0, "top_p": 1.0}
        out = model.generate(
            input_ids=ids.to(device), attention_mask=attn.to(device), max_new_tokens=config.gen_length,
            eos_token_id=eos_token_id, pad_token_id=pad, **kwargs,
        )  # fmt: skip
        calls += 1
        for r, i in enumerate(idx):
            row = out[r, width:].tolist()
            if eos_token_id is not None and eos_token_id in row:
                row = row[: row.index(eos_token_id) + 1]
            tokens[i] = row
    d = {"sampler": "autoregressive", "gen_length": config.gen_length, "temperature": config.temperature,
         "seed": config.seed}  # fmt: skip
    rows = sum(t is not None for t in tokens)
    return GenerationOutput(tokens, [len(t) if t is not None else 0 for t in tokens], calls, rows, d)


def is_autoregressive(model) -> bool:
    """True for causal LMs: a Gemma3 config with bidirectional attention off, or any model that is not a known MDM."""
    config = getattr(model, "config", None)
    if hasattr(config, "use_bidirectional_attention"):
        return not config.use_bidirectional_attention
    model_type = str(getattr(config, "model_type", "")).lower()
    return not any(name in model_type for name in ("llada", "dream", "mmada"))
