"""Backbones: a tiny bidirectional Gemma3-style model built from a config (tests, tiny preset), and hub models.

Gemma3Text with `use_bidirectional_attention=True` is a real transformers architecture that keeps full
attention under a 2-D padding mask (Llama with is_causal=False silently turns causal again). The same
config with causal attention is the ARM of the same family.
"""

from __future__ import annotations

import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

from mdm.adapters import load_model
from mdm.tiny import TinySize

# Dream-org/Dream-v0-Instruct-7B is refused by `mdm.adapters` (its logits are shifted by one)
HUB_MDMS = {"GSAI-ML/LLaDA-8B-Instruct", "GSAI-ML/LLaDA-8B-Base", "Gen-Verse/MMaDA-8B-MixCoT"}


def tiny_config(tokenizer, causal: bool = False, size: TinySize | None = None) -> Gemma3TextConfig:
    size = size or TinySize()
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        use_bidirectional_attention=not causal,
        layer_types=["full_attention"] * size.num_hidden_layers,
        sliding_window=size.max_position_embeddings,
        attn_implementation="sdpa",
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": float(size.rope_theta)},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}},
        **{k: v for k, v in vars(size).items() if k != "rope_theta"},
    )
    config.mask_token_id = getattr(tokenizer, "mask_token_id", None)
    return config


def build_tiny_model(tokenizer, causal: bool = False, seed: int = 0, size: TinySize | None = None):
    """Random-init tiny backbone; the same seed gives the same weights."""
    config = tiny_config(tokenizer, causal, size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Gemma3ForCausalLM(config)
    return model


def load_hub_model(model_id: str, causal: bool | None = None, dtype=torch.bfloat16, code_dir=None):
    """Load a hub model (or local folder) and its tokenizer with its family's adapter (`mdm.adapters`)."""
    causal = model_id not in HUB_MDMS if causal is None else causal
    return load_model(model_id, causal=causal, dtype=dtype, code_dir=code_dir)


def num_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
