"""Key/value caches for block-wise decoding (Fast-dLLM's prefix and dual caches), computed by an adapter-side
forward over the model's own layers and weights (the downloaded model code is never edited or monkey-patched).

    kv = kv_forward(model, adapter)           # None: this family cannot be cached (the sampler refuses)
    logits, cache = kv(ids, positions, key_mask, keep=(s, e))                # full forward; cache: per-layer K/V
    logits = kv(ids[:, lo:hi], positions[:, lo:hi], key_mask, keep=(s - lo, e - lo), cache=cache, span=(lo, hi))

With `cache` and `span`, only the columns [lo, hi) are forwarded: their queries attend to the cached keys and
values of every other column and to their own fresh ones (spliced in at [lo, hi)). Keys are stored after the
rotary embedding, so a cached key keeps its own position. A cached column's K/V is what the full forward computed
when the cache was made: exact as long as no token has changed since (the tests check logits equal to the
uncached forward then), an approximation after (the canvas's committed tokens would change them).

Each family states its forward (`Gemma3KV`, `LLaDAKV`) from the same pieces its model uses (norms, projections,
rotary tables); `kv_forward` checks it against the model's own forward once per model (`verify`) and refuses one
that does not reproduce it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mdm.errors import ConfigError

VERIFY_TOL = 1e-4  # relative to the largest logit: float rounding is far below, a wrong forward far above


def attend(q, k, v, key_mask, scale: float | None):
    """SDPA of q [b, h, t, d] over k, v [b, kvh, L, d] (grouped heads repeated); key_mask [b, L] bool or None."""
    rep = q.shape[1] // k.shape[1]
    if rep > 1:
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    mask = None if key_mask is None else key_mask[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def splice(cached, fresh, span):
    """The full-length K or V [b, h, L, d] of a step: `fresh` at columns span = (lo, hi), `cached` elsewhere."""
    if cached is None:
        return fresh
    lo, hi = span
    return torch.cat([cached[:, :, :lo], fresh, cached[:, :, hi:]], dim=2)


class KVForward:
    """Base: `__call__` runs the layers; a family supplies `embed`, `layers`, `layer` and `head`."""

    family = "?"

    def __init__(self, model):
        self.model = model

    def __call__(self, ids, positions, key_mask=None, *, keep=None, cache=None, span=None):
        if key_mask is not None and bool(key_mask.all()):
            key_mask = None
        key_mask = None if key_mask is None else key_mask.bool()
        h = self.embed(ids)
        rope = self.rotary(h, positions)
        new_cache = []
        for i, layer in enumerate(self.layers()):
            past = None if cache is None else cache[i]
            h, kv = self.layer(layer, h, rope, key_mask, past, span)
            new_cache.append(kv)
        if keep is not None:
            h = h[:, keep[0] : keep[1]]
        logits = self.head(h)
        return logits if cache is not None else (logits, new_cache)


class Gemma3KV(KVForward):
    """transformers' Gemma3 text model with bidirectional attention on full-attention layers only (the tiny backbone)."""

    family = "gemma3"

    @staticmethod
    def unsupported(model) -> str | None:
        c = model.config
        if not getattr(c, "use_bidirectional_attention", False):
            return "its attention is causal"
        if any(t != "full_attention" for t in getattr(c, "layer_types", None) or ()):
            return "it has sliding-window layers (the adapter-side forward covers full attention only)"
        if getattr(c, "attn_logit_softcapping", None) is not None:
            return "it soft-caps attention logits (not in the adapter-side forward)"
        if not (hasattr(model, "lm_head") and hasattr(getattr(model, "model", None), "layers")):
            return f"{type(model).__name__} is not a Gemma3 causal-LM head over a text model"
        return None

    def embed(self, ids):
        return self.model.model.embed_tokens(ids)

    def rotary(self, h, positions):
        return self.model.model.rotary_emb(h, positions, "full_attention")

    def layers(self):
        m = self.model.model
        return m.layers[: m.config.num_hidden_layers]

    def layer(self, layer, h, rope, key_mask, past, span):
        # deferred: transformers' own rotary helper, only when a Gemma3 model is decoded with a cache
        from transformers.models.gemma3.modeling_gemma3 import apply_rotary_pos_emb

        a = layer.self_attn
        b, t, _ = h.shape
        x = layer.input_layernorm(h)
        q = a.q_norm(a.q_proj(x).view(b, t, -1, a.head_dim).transpose(1, 2))
        k = a.k_norm(a.k_proj(x).view(b, t, -1, a.head_dim).transpose(1, 2))
        v = a.v_proj(x).view(b, t, -1, a.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, *rope)
        k_all = splice(None if past is None else past[0], k, span)
        v_all = splice(None if past is None else past[1], v, span)
        o = attend(q, k_all, v_all, key_mask, a.scaling).transpose(1, 2).reshape(b, t, -1)
        h = h + layer.post_attention_layernorm(a.o_proj(o))
        h = h + layer.post_feedforward_layernorm(layer.mlp(layer.pre_feedforward_layernorm(h)))
        return h, (k_all, v_all)

    def head(self, h):
        logits = self.model.lm_head(self.model.model.norm(h))
        cap = self.model.config.final_logit_softcapping
        return logits if cap is None else torch.tanh(logits / cap) * cap


class LLaDAKV(KVForward):
    """LLaDA's remote code (and MMaDA's copy): llama blocks, rotary embeddings, no ALiBi, one block per group.
    Positions are column indices, as in the model's own forward (which takes no position ids)."""

    family = "llada"

    @staticmethod
    def unsupported(model) -> str | None:
        c = model.config
        transformer = getattr(getattr(model, "model", None), "transformer", None)
        if transformer is None or not hasattr(transformer, "blocks"):
            return "its blocks are not in model.model.transformer.blocks (block_group_size > 1?)"
        if str(getattr(c, "block_type", "")).split(".")[-1].lower() != "llama":
            return f"block_type {getattr(c, 'block_type', None)!r} (the adapter-side forward covers llama blocks)"
        if getattr(c, "alibi", False) or not getattr(c, "rope", True):
            return "it uses ALiBi / no rotary embeddings"
        return None

    def embed(self, ids):
        t = self.model.model.transformer
        h = t.wte(ids)
        if self.model.config.input_emb_norm:
            h = h * (self.model.config.d_model**0.5)
        return h

    def rotary(self, h, positions):
        block = self.model.model.transformer.blocks[0]
        n = int(positions.max()) + 1
        sin, cos = block.rotary_emb.get_rotary_embedding(n, h.device)
        cols = positions[0] if positions.dim() == 2 else positions  # LLaDA: column indices, the same for every row
        return sin[:, :, cols], cos[:, :, cols]

    def layers(self):
        return self.model.model.transformer.blocks

    def layer(self, block, h, rope, key_mask, past, span):
        c = self.model.config
        b, t, d = h.shape
        x = block.attn_norm(h)
        q, k, v = block.q_proj(x), block.k_proj(x), block.v_proj(x)
        if block.q_norm is not None and block.k_norm is not None:
            q, k = block.q_norm(q).to(k.dtype), block.k_norm(k).to(k.dtype)
        hd = d // c.n_heads
        q = q.view(b, t, c.n_heads, hd).transpose(1, 2)
        k = k.view(b, t, -1, hd).transpose(1, 2)
        v = v.view(b, t, -1, hd).transpose(1, 2)
        sin, cos = rope
        rot = block.rotary_emb
        q_, k_ = (q.float(), k.float()) if c.rope_full_precision else (q, k)
        q = rot.apply_rotary_pos_emb(sin.type_as(q_), cos.type_as(q_), q_).type_as(q)
        k = rot.apply_rotary_pos_emb(sin.type_as(k_), cos.type_as(k_), k_).type_as(k)
        k_all = splice(None if past is None else past[0], k, span)
        v_all = splice(None if past is None else past[1], v, span)
        o = attend(q, k_all, v_all, key_mask, None).transpose(1, 2).reshape(b, t, d)
        h = h + block.attn_out(o)
        x = block.ff_norm(h)
        x = block.act(block.ff_proj(x)) * block.up_proj(x)
        return h + block.ff_out(x), (k_all, v_all)

    def head(self, h):
        t, c = self.model.model.transformer, self.model.config
        h = t.ln_f(h)
        logits = F.linear(h, t.wte.weight) if c.weight_tying else t.ff_out(h)
        return logits / math.sqrt(c.d_model) if c.scale_logits else logits


FAMILIES = {"gemma3": Gemma3KV, "llada": LLaDAKV, "mmada": LLaDAKV}


@torch.no_grad()
def verify(kv: KVForward, adapter, length: int = 12) -> str | None:
    """None when the adapter-side forward reproduces the model's own logits on a random sequence (a padded one when
    the model can be shown padding), else why not."""
    model = kv.model
    vocab = int(model.get_input_embeddings().num_embeddings)
    g = torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    ids = torch.randint(0, min(vocab, 256), (2, length), generator=g).to(device)
    mask = torch.ones(2, length, dtype=torch.long, device=device)
    if adapter.can_pad:
        mask[1, :3] = 0
    pos = (mask.cumsum(1) - 1).clamp(min=0) if kv.family == "gemma3" else torch.arange(length, device=device)[None]
    ref = adapter.logits(model, ids, mask, **({"position_ids": pos} if kv.family == "gemma3" else {})).float()
    ours, cache = kv(ids, pos.expand(2, -1), mask)
    real = mask.bool()
    err = float((ours.float() - ref)[real].abs().max())
    if err > VERIFY_TOL * float(ref[real].abs().max()):
        return f"the adapter-side forward differs from the model's by {err:.3g} in the logits"
    part = kv(ids[:, 5:9], pos.expand(2, -1)[:, 5:9], mask, cache=cache, span=(5, 9))  # cached, same tokens: exact
    err = float((part.float() - ref[:, 5:9]).abs().max())
    if err > VERIFY_TOL * float(ref.abs().max()):
        return f"its cached forward differs from the uncached one by {err:.3g} on an unchanged canvas"
    return None


def kv_forward(model, adapter, cache: str) -> KVForward:
    """The adapter-side cached forward of `model`, checked once (`verify`); a ConfigError in one line when the model
    cannot be cached."""
    inner = getattr(model, "module", model)
    memo = inner.__dict__.setdefault("_mdm_kv", {})
    if "kv" in memo:
        return memo["kv"]
    cls = FAMILIES.get(getattr(adapter, "name", ""))
    config = getattr(inner, "config", None)
    why = f"no KV-cache forward for {getattr(adapter, 'name', type(inner).__name__)} models (mdm has one for " \
          f"{', '.join(sorted(FAMILIES))})" if cls is None or config is None else cls.unsupported(inner)
    if why is None:
        kv = cls(inner)
        why = verify(kv, adapter)
    if why is not None:
        raise ConfigError("decoding.cache", f"{cache!r} cannot be used with {type(inner).__name__}: {why}; "
                          "decode with cache: none")
    memo["kv"] = kv
    return kv
