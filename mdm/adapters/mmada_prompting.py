"""MMaDA's text-to-image sequences, by the rules of its `UniversalPrompting` (training/prompting_utils.py), written
anew for the project (tests/adapters/test_mmada_prompting.py checks them token for token against MMaDA's code):

    [iPAD]...[iPAD] <|t2i|> <bos> caption <eos> <|soi|> image_1 ... image_m <|eoi|>

- Left padding to `max_text_len + 1` text positions (the task token counts) with MMaDA's reserved `[iPAD]`
  (126093), which the 1-D mask marks 0; a longer caption is cut and ends with <eos>.
- Image tokens are the codes offset by the text vocabulary: `len(tokenizer)` (MMaDA: `len(text_tokenizer) +
  num_new_special_tokens`, 0 with the reserved ids of the real checkpoints).
- Training labels are the sequence with [iPAD] set to `ignore_id` and the image slots holding the code labels.
- Classifier-free guidance drops the caption (`<|t2i|> <bos> <eos>`); MMaDA draws that with torch.rand inside the
  prompting, here the caller passes `drop` (keyed draws, so a run is reproducible).
- The model sees a 4-D attention bias: query and key both real (`attention_bias`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

RESERVED = {"<|soi|>": 126084, "<|eoi|>": 126085, "<|sov|>": 126086, "<|eov|>": 126087, "<|t2i|>": 126088,
            "<|mmu|>": 126089, "<|t2v|>": 126090, "<|v2v|>": 126091, "<|lvg|>": 126092, "[iPAD]": 126093,
            "<|r2i|>": 126094}  # MMaDA's reserved ids in LLaDA's vocabulary (prompting_utils.reserved_token_mapping)


@dataclass(frozen=True)
class T2IIds:
    bos: int
    eos: int
    t2i: int = RESERVED["<|t2i|>"]
    soi: int = RESERVED["<|soi|>"]
    eoi: int = RESERVED["<|eoi|>"]
    pad: int = RESERVED["[iPAD]"]

    @classmethod
    def of(cls, tokenizer) -> T2IIds:
        return cls(bos=tokenizer.bos_token_id, eos=tokenizer.eos_token_id)


def image_token_ids(codes: torch.Tensor, text_vocab: int) -> torch.Tensor:
    """Image codes as token ids: after the text vocabulary (MMaDA-8B: 126464 + code, 8192 codes)."""
    return codes + text_vocab


def _text_part(text: Sequence[int], ids: T2IIds, max_text_len: int, drop: bool) -> tuple[list[int], int]:
    """The left-padded text positions and how many of them are padding."""
    text = list(text)
    if not text or text[0] != ids.bos:
        text = [ids.bos] + text
    part = [ids.t2i, ids.bos, ids.eos] if drop else [ids.t2i] + text + [ids.eos]
    width = max_text_len + 1  # the task token counts
    if len(part) > width:
        return part[: width - 1] + [ids.eos], 0
    return [ids.pad] * (width - len(part)) + part, width - len(part)


def t2i_sequences(texts: Sequence[Sequence[int]], image_ids: torch.Tensor, ids: T2IIds, max_text_len: int,
                  labels: torch.Tensor | None = None, drop: Sequence[bool] | None = None,
                  ignore_id: int = -100) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(sequence ids [B, L], 1-D attention mask [B, L], labels [B, L] or None) of captions `texts` (token ids) and
    image tokens `image_ids` [B, M] (training: the masked image; generation: all mask tokens). `labels` [B, M]: the
    image's true tokens (training); `drop[i]`: caption i dropped for classifier-free guidance."""
    rows, masks, label_rows = [], [], []
    m = image_ids.shape[-1]
    for i, text in enumerate(texts):
        part, pads = _text_part(text, ids, max_text_len, bool(drop[i]) if drop is not None else False)
        head = torch.tensor(part, dtype=torch.long, device=image_ids.device)
        soi, eoi = (torch.tensor([x], dtype=torch.long, device=image_ids.device) for x in (ids.soi, ids.eoi))
        rows.append(torch.cat([head, soi, image_ids[i], eoi]))
        masks.append(torch.tensor([0] * pads + [1] * (len(part) - pads + m + 2), device=image_ids.device))
        if labels is not None:
            lab = torch.cat([head, soi, labels[i], eoi])
            label_rows.append(torch.where(lab == ids.pad, torch.full_like(lab, ignore_id), lab))
    out_labels = torch.stack(label_rows) if labels is not None else None
    return torch.stack(rows), torch.stack(masks), out_labels


def attention_bias(attention_mask: torch.Tensor) -> torch.Tensor:
    """MMaDA's 4-D bias [B, 1, L, L]: position q attends to k iff both are real tokens."""
    m = attention_mask.bool()
    return (m[:, :, None] & m[:, None, :]).unsqueeze(1)
