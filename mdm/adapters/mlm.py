"""Masked-LM encoders as MDMs: transformers-native `*ForMaskedLM` checkpoints (dllm's BERT-Chat:
dllm-hub/ModernBERT-{base,large}-chat-v0.1, a `ModernBertForMaskedLM` fine-tuned as an MDM; BERT, RoBERTa).

- Loading: `AutoModelForMaskedLM` (with the LM head; `AutoModel` would drop it). Found by `model_type` (modernbert,
  bert, roberta) or by a `*ForMaskedLM` architecture in config.json.
- Mask token: the tokenizer's own ([MASK] for ModernBERT and BERT, <mask> for RoBERTa).
- Attention: bidirectional by construction; padding through the 2-D attention_mask (the probe checks both).
- LoRA: ModernBERT's fused Wqkv, the attention and MLP output Wo, the MLP input Wi; BERT/RoBERTa's query/key/value/
  dense. The prediction head's decoder (tied to the embedding) is never adapted.
- No logits shift. Gradient checkpointing: transformers' own.
"""

from __future__ import annotations

from mdm.adapters.core import Adapter

LORA = {"modernbert": ("Wqkv", "Wo", "Wi"), "bert": ("query", "key", "value", "dense"),
        "roberta": ("query", "key", "value", "dense")}


class MaskedLM(Adapter):
    name = "masked-lm"
    lora_targets = LORA["modernbert"]
    facts = {"mask id": "tokenizer mask_token ([MASK])", "padding": "2-D attention_mask",
             "checkpointing": "transformers"}

    def load(self, path, config, *, causal: bool | None, dtype):
        # deferred: transformers (slow import), only when a model is loaded
        from transformers import AutoModelForMaskedLM

        return AutoModelForMaskedLM.from_pretrained(path, config=config, dtype=dtype)


class ModernBert(MaskedLM):
    name = "modernbert"


class Bert(MaskedLM):
    name = "bert"
    lora_targets = LORA["bert"]
