"""The tiny Gemma3 stand-in (`mdm.models`): a transformers model that honours a 2-D padding mask, bidirectional
with `use_bidirectional_attention=True` (the MDM) and causal without (the ARM of the same family)."""

from __future__ import annotations

from mdm.adapters.core import Adapter


class Gemma3(Adapter):
    name = "gemma3"
    facts = {"mask id": "tokenizer <|mdm_mask|>", "padding": "2-D attention_mask, bidirectional config",
             "checkpointing": "transformers"}

    def load(self, path, config, *, causal: bool | None, dtype):
        if causal is False and config.use_bidirectional_attention is False:
            config.use_bidirectional_attention = True  # an ARM checkpoint loaded as an MDM: same weights, full attention
        return super().load(path, config, causal=causal, dtype=dtype)
