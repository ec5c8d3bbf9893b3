"""The one tiny size: the default backbone of every tiny model the project builds (mdm train, the bases, the
variance profiler, tests), a bidirectional Gemma3 (`mdm.models.build_tiny_model`). Torch-free, so that the run
config (`mdm.train.config.TinySizeConfig`) takes its defaults from here before torch is imported.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TinySize:
    hidden_size: int = 96
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 24
    intermediate_size: int = 256
    max_position_embeddings: int = 1024
    # Gemma3 scales attention logits by query_pre_attn_scalar ** -0.5 after q/k RMSNorm; its default (256, for
    # head_dim 256) caps a tiny model's logits near +-sqrt(head_dim ** 2 / 256): attention stays too flat to copy
    query_pre_attn_scalar: int = 256
    # RoPE base of the full-attention layers (Gemma3's default 1e6; with head_dim 16 half the rotary frequencies
    # are below 1/200, i.e. ~constant over a tiny-preset sequence)
    rope_theta: float = 1_000_000.0
    # in a tiny MDM pretrained from scratch the tied embeddings of interchangeable tokens (the arith objects)
    # collapse to cosine ~0.99 (~0.5 in the ARM); untied, the input side stays at ~0.84
    tie_word_embeddings: bool = True
