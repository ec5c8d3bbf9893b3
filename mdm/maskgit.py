"""MaskGIT-style image decoding for MMaDA: its `t2i_generate` loop (MMaDA's models/modeling_mmada.py, after MaskGIT's
parallel_decode) written anew over any logits function, batched, with a greedy mode.

    codes = maskgit_generate(lambda ids, bias: model(ids, attention_bias=bias).logits, ids, mask,
                             image_len=1024, text_vocab=126464, codebook=8192, mask_id=126336, steps=18)

`ids` / `mask` are `mdm.adapters.mmada_prompting.t2i_sequences` rows whose image slots hold `mask_id`. Each step:
one forward (two with classifier-free guidance: logits = (1 + s) cond - s uncond, the uncond rows being the
caption-dropped prompt with the current image), a draw of every image slot from the softmax over the codebook
(greedy: its argmax), and the tokens kept are all known ones plus the most confident new ones, so that a
cosine fraction of the image stays masked (at least one token is revealed and, until the last step, at least one
stays masked). The confidence of a new token is log p + T * Gumbel noise; as in MMaDA the temperature is multiplied
by (1 - step / steps) at every step, so it compounds. With the same torch.Generator this is MMaDA's loop draw for
draw (tests/sampler/test_maskgit.py); greedy (argmax, no noise) decodes a batch exactly as one prompt at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from mdm.adapters.mmada_prompting import attention_bias


def cosine_schedule(ratio: torch.Tensor) -> torch.Tensor:
    """Fraction of the image still masked after a `ratio` of the steps."""
    return torch.cos(ratio * math.pi * 0.5)


def _gumbel(like: torch.Tensor, generator) -> torch.Tensor:
    u = torch.zeros_like(like).uniform_(0, 1, generator=generator)
    return -torch.log((-torch.log(u.clamp(min=1e-20))).clamp(min=1e-20))


@torch.no_grad()
def maskgit_generate(logits_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], input_ids: torch.Tensor,
                     attention_mask: torch.Tensor, *, image_len: int, text_vocab: int, codebook: int, mask_id: int,
                     steps: int = 18, temperature: float = 1.0, guidance_scale: float = 0.0,
                     uncond_input_ids: torch.Tensor | None = None, uncond_attention_mask: torch.Tensor | None = None,
                     schedule: Callable = cosine_schedule, generator: torch.Generator | None = None,
                     greedy: bool = False) -> torch.Tensor:
    """Image codes [B, image_len] (0 <= code < codebook) decoded for the prompts of `input_ids` [B, L]."""
    ids = input_ids.clone()
    b, length = ids.shape
    slots = slice(length - image_len - 1, length - 1)  # between <|soi|> and <|eoi|>
    width = length - image_len - 2  # the text part, task token included
    known = ids[:, slots]
    codes = torch.where(known == mask_id, known, known - text_vocab)
    guided = uncond_input_ids is not None and guidance_scale > 0
    sampled = codes
    for step in range(steps):
        if guided:
            uncond = torch.cat([uncond_input_ids[:, :width], ids[:, width:]], dim=1)
            both = torch.cat([attention_mask, uncond_attention_mask])
            cond_logits, uncond_logits = logits_fn(torch.cat([ids, uncond]), attention_bias(both)).chunk(2)
            logits = (1 + guidance_scale) * cond_logits - guidance_scale * uncond_logits
        else:
            logits = logits_fn(ids, attention_bias(attention_mask))
        logits = logits[:, slots, text_vocab:text_vocab + codebook]
        probs = logits.softmax(dim=-1)
        if greedy:
            sampled = probs.argmax(dim=-1)
        else:
            sampled = torch.multinomial(probs.reshape(-1, codebook), 1, generator=generator)[:, 0].view(b, image_len)
        unknown = codes == mask_id
        sampled = torch.where(unknown, sampled, codes)
        ratio = (step + 1) / steps
        confidence = torch.gather(probs, -1, sampled.long()[..., None]).squeeze(-1)
        confidence = torch.where(unknown, confidence, torch.finfo(confidence.dtype).max)
        still_masked = (image_len * schedule(torch.tensor(ratio))).floor().unsqueeze(0).to(logits.device)
        still_masked = torch.max(torch.tensor([1], device=logits.device),
                                 torch.min(unknown.sum(dim=-1, keepdim=True) - 1, still_masked))
        temperature = temperature * (1.0 - ratio)  # compounds, as in MMaDA
        score = torch.log(confidence.clamp(min=1e-20))
        if not greedy:
            score = score + temperature * _gumbel(confidence, generator)
        cut = torch.gather(score.sort(dim=-1).values, 1, still_masked.long())
        remask = score < cut
        ids[:, slots] = torch.where(remask, mask_id, sampled + text_vocab)
        codes = torch.where(remask, mask_id, sampled)
    return sampled
