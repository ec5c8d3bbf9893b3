"""Logit-shifted MDMs: models adapted from an ARM that keep its shift, the output at position i - 1 predicting
token i. Dream (Dream-org/Dream-v0-*-7B; dllm's Dream pipeline) is the one family here. Facts read from dllm
(github.com/ZHZisZZ/dllm: dllm/pipelines/dream/models/configuration_dream.py, modeling_dream.py; the MDLM trainer's
and sampler's `right_shift_logits`, on for Dream):

- config.json: `model_type` "Dream", `auto_map` to its remote code (DreamConfig, DreamModel); DreamConfig has
  Qwen2's fields plus `mask_token_id` (151666, the tokenizer's `<|mask|>`).
- Weights: Qwen2's decoder with every parameter name of transformers' Qwen2ForCausalLM (q/k/v with bias, o, gate/up/
  down, RMSNorms, `model.*`, `lm_head`); attention is full (SDPA with is_causal False and the mask as given).
- Shift: logits = cat([logits[:, :1], logits[:, :-1]]): position i gets the output of i - 1, position 0 its own
  (dllm prepends BOS so that position 0 carries no loss).

Here Dream's remote code is never run: the weights load into transformers' Qwen2ForCausalLM, bidirectional through
the 4-D mask of `mdm.adapters.a2d`, and the shift is declared (`shift = 1`): `Adapter.logits` aligns the logits for
the objective, the held-out likelihood, the variance profiler and the lm-eval plugin; the sampler asks for the
window one position earlier (`Adapter.window`); position 0 is never a target (`Adapter.check_first_position`).
"""

from __future__ import annotations

from mdm.adapters.a2d import TransformersBackbone


class Dream(TransformersBackbone):
    name = "dream"
    shift = 1
    bases = {"dream": ("Qwen2Config", "Qwen2ForCausalLM")}
    facts = {"mask id": "config mask_token_id = tokenizer <|mask|>, checked",
             "padding": "4-D bidirectional key-padding mask", "checkpointing": "transformers"}
