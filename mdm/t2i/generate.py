"""Image-code generation: MaskGIT-style confidence decoding over the whole image canvas.

    cfg = ImageDecodeConfig(steps=12)
    codes = generate_codes(model, codec, captions, cfg)    # long [B, N] in [0, codebook_size)
    images = codec.image_tokenizer.decode(codes)

Each row is laid out exactly as in training, `prompt | N masks | <|eos|>`, right-padded (padding has attention
0), so a row's output does not depend on the other rows of its batch. At step s of S the model predicts every
masked canvas position; predictions are restricted to image-code ids (text ids, mask, EOS can never be
drawn); the candidate is the argmax (greedy, temperature 0: deterministic) or a Gumbel-max draw at
temperature > 0 (keyed per row by (seed, row key)); its confidence is its softmax probability among the
codes. The most confident candidates are committed so that ceil(N * gamma((s+1)/S)) positions stay
masked, gamma(r) = cos(pi r / 2) (MaskGIT's cosine schedule; "linear" = 1 - r), at least one per step;
committed codes are final.

Why not `mdm.sampler.generate`: it decodes text (LLaDA's semi-autoregressive blocks over the full vocabulary
with a linear schedule, the canvas at the end of the row); image canvases need the code-only vocabulary,
MaskGIT's schedule over the whole canvas, and the EOS that follows the image in training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from mdm.errors import ConfigError
from mdm.objective.rng import derive_seed

SCHEDULES = ("cosine", "linear")


@dataclass(frozen=True)
class ImageDecodeConfig:
    steps: int = 12
    schedule: str = "cosine"
    temperature: float = 0.0
    seed: int = 0
    batch_size: int = 64

    def __post_init__(self):
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError("decoding.steps", f"must be a positive integer, got {self.steps!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError("decoding.schedule", f"unknown schedule {self.schedule!r}; allowed: {', '.join(SCHEDULES)}")
        if self.temperature < 0:
            raise ConfigError("decoding.temperature", f"must be >= 0, got {self.temperature!r}")

    def to_dict(self) -> dict:
        return {"sampler": "maskgit"} | asdict(self)


def masked_after(step: int, steps: int, n: int, schedule: str = "cosine") -> int:
    """Canvas positions still masked after step `step` (0-based) of `steps`."""
    r = (step + 1) / steps
    gamma = math.cos(math.pi * r / 2) if schedule == "cosine" else 1.0 - r
    return max(0, min(n - (step + 1), math.ceil(n * gamma - 1e-9)))


def commit_schedule(n: int, steps: int, schedule: str = "cosine") -> list[int]:
    """Positions committed at each step (sums to n; at least one per step while any is masked)."""
    steps = min(steps, n)
    left, out = n, []
    for s in range(steps):
        target = masked_after(s, steps, n, schedule) if s < steps - 1 else 0
        out.append(left - target)
        left = target
    return out


@torch.no_grad()
def generate_codes(model, codec, captions: Sequence[str], config: ImageDecodeConfig | None = None,
                   row_keys: Sequence | None = None, device=None) -> torch.Tensor:
    """Codes [len(captions), N] for each caption (see the module docstring)."""
    config = config or ImageDecodeConfig()
    device = device or next(model.parameters()).device
    keys = list(range(len(captions))) if row_keys is None else list(row_keys)
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(captions), config.batch_size):
            prompts = [codec.prompt_ids(c) for c in captions[start : start + config.batch_size]]
            out.append(_generate_batch(model, codec, prompts, keys[start : start + config.batch_size], config, device))
    finally:
        model.train(was_training)
    n = codec.num_image_tokens
    return torch.cat(out) if out else torch.zeros((0, n), dtype=torch.long)


def _generate_batch(model, codec, prompts, keys, config: ImageDecodeConfig, device) -> torch.Tensor:
    n, k_codes, offset = codec.num_image_tokens, codec.codebook_size, codec.code_offset
    b = len(prompts)
    length = max(len(p) for p in prompts) + n + 1
    x = torch.full((b, length), codec.pad_id, dtype=torch.long)
    attn = torch.zeros((b, length), dtype=torch.long)
    for i, p in enumerate(prompts):
        x[i, : len(p)] = torch.tensor(p)
        x[i, len(p) : len(p) + n] = codec.mask_id
        x[i, len(p) + n] = codec.eos_id
        attn[i, : len(p) + n + 1] = 1
    starts = torch.tensor([len(p) for p in prompts])
    canvas_idx = (starts[:, None] + torch.arange(n)[None]).to(device)  # [b, n]
    x, attn = x.to(device), attn.to(device)
    gens = [torch.Generator().manual_seed(derive_seed("t2i-decode", config.seed, k)) for k in keys] \
        if config.temperature > 0 else None
    rows = torch.arange(b, device=device)[:, None]
    for k in commit_schedule(n, config.steps, config.schedule):
        out = model(input_ids=x, attention_mask=attn)
        logits = out.logits if hasattr(out, "logits") else out
        logits = logits[rows, canvas_idx, offset : offset + k_codes].double()  # [b, n, K]: codes only
        logp = torch.log_softmax(logits, -1)
        if gens is not None:
            u = torch.stack([torch.rand((n, k_codes), generator=g, dtype=torch.float64) for g in gens]).to(device)
            cand = (logits / config.temperature - torch.log(-torch.log(u.clamp_min(1e-300)))).argmax(-1)
        else:
            cand = logits.argmax(-1)
        conf = logp.gather(-1, cand[..., None])[..., 0]
        canvas = x[rows, canvas_idx]
        masked = canvas == codec.mask_id
        conf = torch.where(masked, conf, torch.full_like(conf, -math.inf))
        chosen = conf.topk(k, dim=-1).indices
        commit = torch.zeros_like(masked).scatter_(1, chosen, True) & masked
        x[rows, canvas_idx] = torch.where(commit, cand + offset, canvas)
    codes = x[rows, canvas_idx] - offset
    if bool((codes < 0).any() | (codes >= k_codes).any()):
        raise RuntimeError("decoding left a canvas position uncommitted")
    return codes.cpu()
