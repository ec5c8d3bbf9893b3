"""Shared test fixtures: a synthetic batch with a fixed per-token loss table, and a fake tokenizer."""

from __future__ import annotations

import torch

from mdm.objective import MDMBatch

MASK_ID = 1


class FakeTokenizer:
    """Just enough of a tokenizer for building the tiny backbone with random token ids."""

    pad_token_id, bos_token_id, eos_token_id, mask_token_id = 0, 2, 3, MASK_ID

    def __init__(self, vocab: int = 64):
        self.vocab = vocab

    def __len__(self):
        return self.vocab


def synthetic_batch(n: int = 8, length: int = 24, seed: int = 0, vocab: int = 64) -> MDMBatch:
    """Rows with different prompt lengths and right padding; token ids >= 4 (never the mask id)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (n, length), generator=g)
    lengths = torch.randint(length // 2, length + 1, (n,), generator=g)
    prompt = torch.randint(2, length // 3, (n,), generator=g)
    attention = (torch.arange(length)[None] < lengths[:, None]).long()
    ids = ids * attention
    delim = torch.zeros(n, length, dtype=torch.bool)
    syntax = torch.zeros(n, length, dtype=torch.bool)
    for r in range(n):
        delim[r, lengths[r] - 3 : lengths[r] - 1] = True
        syntax[r, 0 : prompt[r] : 2] = True
    return MDMBatch(ids, attention, prompt, delimiter_mask=delim, syntax_mask=syntax)


def table_ce(table: torch.Tensor, depends_on_mask: bool = False):
    """Per-token CE from a fixed table indexed by (target token, position).

    With depends_on_mask the CE also grows with the fraction of the row that is masked, so E[l | t]
    varies with t (the loss of a real model sees x_t); without it the table is exactly fixed.
    """

    def token_ce(noised, attention_mask, targets, masked):
        pos = torch.arange(targets.shape[1])[None].expand_as(targets)
        ce = table[targets, pos]
        if depends_on_mask:
            frac = masked.sum(1, keepdim=True) / attention_mask.sum(1, keepdim=True)
            ce = ce * (0.5 + 2.0 * frac)
        return torch.where(masked, ce, torch.zeros(()))

    return token_ce
