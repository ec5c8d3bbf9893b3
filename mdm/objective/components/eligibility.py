"""Eligibility: which tokens may be masked and carry loss. |E| normalises the sequence loss."""

from __future__ import annotations

import torch

from mdm.objective.batch import MDMBatch
from mdm.registry import ELIGIBILITY, Component


class Eligibility(Component):
    def eligible(self, batch: MDMBatch) -> torch.Tensor:
        return batch.response_mask()


@ELIGIBILITY.register("response")
class Response(Eligibility):
    """Response tokens that are not padding (LLaDA SFT)."""


@ELIGIBILITY.register("syrm")
class SyRM(Eligibility):
    """SyRM: response tokens plus prompt syntax tokens (e.g. HTML table tags). Biased on purpose (targets A).

    The syntax tokens are really masked in x_t and predicted (unlike the released code, which restored
    the prompt after masking and so only rescaled the loss), and |E| counts them.
    """

    targets = "A"
    unbiased = False

    def eligible(self, batch):
        if batch.syntax_mask is None:
            raise ValueError("syrm needs batch.syntax_mask (the task's prompt syntax tokens, from the data layer)")
        idx = torch.arange(batch.input_ids.shape[1], device=batch.input_ids.device)
        in_prompt = idx[None, :] < batch.prompt_lengths[:, None]
        return batch.response_mask() | (batch.syntax_mask & in_prompt & batch.attention_mask.bool())
