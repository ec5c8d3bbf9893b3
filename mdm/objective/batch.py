"""The training batch the objective consumes: token ids plus what the data layer knows about them."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


@dataclass
class MDMBatch:
    """A (micro-)batch of chat-formatted sequences, right-padded to a common length L.

    input_ids       [B, L] long   clean tokens x0
    attention_mask  [B, L] long   1 for real tokens, 0 for padding
    prompt_lengths  [B]    long   tokens [0, P0) are the prompt (never masked unless SyRM says so)
    positions       [B]    long   index of each row in the *global* batch of this optimizer step; all
                                  per-sample randomness is keyed on it, so it does not depend on how
                                  the global batch is split over processes and accumulation steps
    delimiter_mask  [B, L] bool   answer-delimiter tokens (ISAD), from the data layer; optional
    syntax_mask     [B, L] bool   prompt syntax tokens (SyRM), from the data layer; optional
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prompt_lengths: torch.Tensor
    positions: torch.Tensor | None = None
    delimiter_mask: torch.Tensor | None = None
    syntax_mask: torch.Tensor | None = None

    def __post_init__(self):
        if self.positions is None:
            self.positions = torch.arange(self.input_ids.shape[0])

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]

    def response_mask(self) -> torch.Tensor:
        """Eligible set of the standard objective: response tokens that are not padding."""
        idx = torch.arange(self.input_ids.shape[1], device=self.input_ids.device)
        return (idx[None, :] >= self.prompt_lengths[:, None]) & self.attention_mask.bool()

    def to(self, device) -> MDMBatch:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(self, **{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in moved.items()})

    def select(self, rows) -> MDMBatch:
        """Rows of this batch (a slice or index tensor), e.g. a micro-batch of a global batch."""
        sub = {f.name: getattr(self, f.name) for f in fields(self)}
        return MDMBatch(**{k: (v[rows] if isinstance(v, torch.Tensor) else v) for k, v in sub.items()})
