"""LLaDA-style masked-diffusion decoding, batched over prompts of different lengths.

    config = DecodeConfig(gen_length=128, steps=128, block_length=32)     # PAPER.md GSM8K settings
    out = generate(model, [prompt_ids_1, prompt_ids_2], config, mask_token_id=m, eos_token_id=e)
    out.tokens[0]                                                          # ids up to and including EOS

The algorithm is LLaDA's `generate` (ML-GSAI/LLaDA, generate.py): a canvas of `gen_length` mask tokens after the
prompt, split into `gen_length / block_length` blocks decoded left to right (semi-autoregressive); each block gets
`steps / num_blocks` steps; at every step the model predicts all positions of the full canvas (future blocks stay
masked but visible), a candidate token is drawn for each masked position of the current block (argmax, or Gumbel-max
at `temperature` > 0, in float64), and the `k` candidates with the highest confidence are committed (`k` from
LLaDA's `get_num_transfer_tokens`: block_length // steps_per_block, the remainder going to the first steps).
Confidence is the float64 softmax probability of the candidate under the untempered logits (`low_confidence`) or a
uniform draw (`random`). Committed tokens are never revisited. As in LLaDA, no token of the tokenizer is excluded
from the candidates (an untrained model can propose the mask token itself; that position then stays masked); ids
at or above `vocab_size` (len(tokenizer): padded embedding rows) are.

What this implementation adds, none of which changes the algorithm (outputs are tested equal to LLaDA's):
- Batching. Prompts are left-padded to a common width (attention mask 0 on pads) so every canvas starts at the
  same column, and position ids are counted from each row's first real token, so a row sees exactly what it
  would see alone. Greedy decoding of a prompt therefore does not depend on the other prompts of the batch
  (tested: batched == one-at-a-time). Models that cannot be shown padding (`mdm.adapters`: the hub's LLaDA code
  ignores masks) only batch prompts of one length. Models whose `forward` takes no `position_ids` (LLaDA) see
  positions shifted by the padding; with rotary embeddings that changes nothing but rounding, since attention
  only sees relative positions.
- Randomness is per prompt: the Gumbel noise and random-remasking draws of prompt i come from a generator keyed
  by (seed, i), so sampled outputs do not depend on the batch size or on which prompts share a batch.
- Early stop. A row is finished once the first EOS of its canvas has no mask token before it: every token up to
  that EOS is committed and can never change, so the decoded text (cut at the first EOS) is final. Finished rows
  leave the batch, and a batch stops when all rows have finished. This includes the case "a completed block is all
  EOS" and stops no later; outputs are identical with `early_stop=False` (tested).
- Only the current block's logits are projected onto the vocabulary when the model accepts `logits_to_keep`
  (transformers models), a batch without padding is run without an attention mask (as LLaDA's reference does;
  transformers then builds none), and steps that commit no token (steps_per_block > block_length) skip the model
  call. Float64 work is done a chunk of rows at a time (LLaDA's vocabulary has 126k entries).

Faster decodings (`mdm.decoding`, not the paper's; each recorded under its own key): `strategy` threshold or
factor commits, within the current block, every position the rule accepts (at least one a step) and ends the block
when it has no mask; `cache` prefix / dual runs the block's first step as the full forward and keeps its keys and
values (`mdm.adapters.kv`), later steps forward only the block and what follows it (prefix) or only the block
(dual). The default (exact, no cache) is the algorithm above, unchanged.

Output tokens are cut after the first EOS; `decode_text` drops special tokens. Autoregressive (ARM) runs use
`autoregressive_generate` (transformers' `generate`, greedy or sampled) with the same interface.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from mdm.adapters import checked
from mdm.adapters.core import batches
from mdm.adapters.kv import kv_forward
from mdm.decoding import CACHES, KNOBS, STRATEGIES
from mdm.decoding.arm import autoregressive_generate, is_autoregressive
from mdm.decoding.rules import GenerationOutput, build, propose, row_generator
from mdm.decoding.text import chat_prompt_ids, decode_text
from mdm.errors import ConfigError

__all__ = ["DecodeConfig", "GenerationOutput", "TASK_DECODING", "autoregressive_generate", "chat_prompt_ids",
           "decode_text", "generate", "is_autoregressive", "num_transfer_schedule"]

REMASKING = ("low_confidence", "random")


@dataclass(frozen=True)
class DecodeConfig:
    """The decoding knobs; record them with every score (PAPER.md: scores move by points with them)."""

    gen_length: int = 128
    steps: int = 128
    block_length: int = 32
    temperature: float = 0.0
    remasking: str = "low_confidence"
    early_stop: bool = True
    seed: int = 0
    strategy: str = "exact"  # mdm.decoding: exact (LLaDA's schedule) | threshold | factor
    threshold: float = 0.9  # threshold: commit every masked position of the block whose confidence exceeds it
    factor: float = 1.0  # factor: Fast-dLLM's factor rule
    cache: str = "none"  # none | prefix | dual (mdm.adapters.kv)

    def __post_init__(self):
        for name in ("gen_length", "steps", "block_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"decoding.{name}", f"must be a positive integer, got {value!r}")
        if self.gen_length % self.block_length:
            raise ConfigError(
                "decoding.block_length",
                f"gen_length ({self.gen_length}) must be a multiple of block_length ({self.block_length})",
            )
        if self.steps % self.num_blocks:
            raise ConfigError(
                "decoding.steps",
                f"steps ({self.steps}) must be a multiple of the number of blocks "
                f"(gen_length / block_length = {self.num_blocks})",
            )
        if not isinstance(self.temperature, (int, float)) or self.temperature < 0:
            raise ConfigError("decoding.temperature", f"must be a number >= 0, got {self.temperature!r}")
        if self.remasking not in REMASKING:
            raise ConfigError(
                "decoding.remasking", f"unknown remasking {self.remasking!r}; allowed: {', '.join(REMASKING)}"
            )
        STRATEGIES.get(self.strategy, "decoding.strategy")
        for name in ("threshold", "factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"decoding.{name}", f"must be a number >= 0, got {value!r}")
        if self.cache not in CACHES:
            raise ConfigError("decoding.cache", f"unknown cache {self.cache!r}; allowed: {', '.join(CACHES)}")
        if self.strategy != "exact" and self.remasking != "low_confidence":
            raise ConfigError("decoding.remasking", f"strategy {self.strategy!r} compares the model's confidence; "
                              "it needs remasking: low_confidence")

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    @property
    def steps_per_block(self) -> int:
        return self.steps // self.num_blocks

    def to_dict(self) -> dict:
        """The knobs as recorded; the paper's decoding (exact, no cache) records LLaDA's knobs only, as it always did."""
        d = {"sampler": "llada"} | asdict(self)
        used = {"strategy", "cache"} | ({self.strategy} & {"threshold", "factor"})
        default = self.strategy == "exact" and self.cache == "none"
        return {k: v for k, v in d.items() if k not in KNOBS or (not default and k in used)}

    @classmethod
    def from_dict(cls, d: dict | None, base: DecodeConfig | None = None) -> DecodeConfig:
        """Build from a mapping (e.g. settings / CLI); unknown keys are a ConfigError."""
        d = {k: v for k, v in (d or {}).items() if v is not None and k != "sampler"}
        allowed = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise ConfigError(f"decoding.{unknown[0]}", f"unknown decoding option; allowed: {', '.join(sorted(allowed))}")
        base_d = asdict(base) if base is not None else {}
        return cls(**(base_d | d))


# PAPER.md "Decoding for evaluation"; the tiny generated tasks use short canvases (their answers are short).
TASK_DECODING: dict[str, DecodeConfig] = {
    "gsm8k": DecodeConfig(gen_length=128, steps=128, block_length=32),
    "hitab": DecodeConfig(gen_length=512, steps=256, block_length=16),
    "openscience": DecodeConfig(gen_length=256, steps=256, block_length=256),
    "arith": DecodeConfig(gen_length=64, steps=64, block_length=16),
    "tables": DecodeConfig(gen_length=64, steps=64, block_length=16),
}


def num_transfer_schedule(block_length: int, steps: int) -> list[int]:
    """Tokens committed at each step of a block (LLaDA's get_num_transfer_tokens for a fully masked block)."""
    base, remainder = divmod(block_length, steps)
    return [base + (1 if i < remainder else 0) for i in range(steps)]


def _forward_options(model) -> set[str]:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return set()
    return {n for n in ("position_ids", "logits_to_keep", "use_cache") if n in params}


def _prebuilt_mask_ok(model) -> bool:
    """True when the model's own mask for a 2D padding mask is just "attend to every non-pad key": a transformers
    bidirectional Gemma3-style model on SDPA (boolean masks). Such a model takes a prepared 4D mask as is
    (transformers' masking utils return a 4D mask unchanged), so the sampler builds it once per batch instead of
    transformers rebuilding it (with vmap, once per layer type) at every one of the steps."""
    config = getattr(model, "config", None)
    return (getattr(config, "use_bidirectional_attention", False) is True
            and getattr(config, "_attn_implementation", None) == "sdpa")  # fmt: skip


class _Denoiser:
    """Calls the model on a canvas and returns the logits of positions [start, end) over the first `vocab_size` ids
    (rows above `len(tokenizer)` are padded embedding rows, never sampled)."""

    def __init__(self, model, vocab_size: int | None = None):
        self.model, self.vocab_size = model, vocab_size
        self.adapter = checked(model)  # one probe forward per model: refuses attention that is not bidirectional
        self.options = _forward_options(model)
        self.prebuilt_mask = _prebuilt_mask_ok(model)
        self.calls = 0
        self.rows = 0
        self.tokens = 0  # rows x forwarded columns
        self.kv = None  # the adapter-side cached forward (mdm.adapters.kv) when a cache is asked for
        self._mask_of = self._mask = None

    def _attention_mask(self, attention_mask):
        """The model's attention mask for a 2D padding mask: the 2D mask itself, or (see `_prebuilt_mask_ok`) the
        4D boolean key-padding mask [b, 1, q, kv] the model would build, made once per canvas (cached by identity;
        the canvas's mask only changes when finished rows leave)."""
        if attention_mask is None or not self.prebuilt_mask:
            return attention_mask
        config = self.model.config
        n = attention_mask.shape[1]
        window = getattr(config, "sliding_window", None)
        if any(t != "full_attention" for t in getattr(config, "layer_types", None) or ()) and (window is None or n > window):
            return attention_mask  # sliding layers see a narrower mask than full ones: let the model build both
        if self._mask_of is not attention_mask:
            self._mask_of = attention_mask
            self._mask = attention_mask.bool()[:, None, None, :].expand(-1, 1, n, n)
        return self._mask

    def __call__(self, x, attention_mask, position_ids, start: int, end: int) -> torch.Tensor:
        # no padding: no mask (transformers then skips building one, ~3 ms a call for a tiny model)
        kwargs = {"input_ids": x, **self.adapter.mask_kwargs(self._attention_mask(attention_mask), x)}
        start, end = self.adapter.window(start, end)  # a shifted model (Dream): the outputs one position earlier
        if "position_ids" in self.options:
            kwargs["position_ids"] = position_ids
        if "logits_to_keep" in self.options:
            kwargs["logits_to_keep"] = torch.arange(start, end, device=x.device)
        if "use_cache" in self.options:
            kwargs["use_cache"] = False
        out = self.model(**kwargs)
        logits = out.logits if hasattr(out, "logits") else out
        self.calls += 1
        self.rows += x.shape[0]
        self.tokens += x.numel()
        logits = logits if logits.shape[1] == end - start else logits[:, start:end]
        return logits if self.vocab_size is None else logits[..., : self.vocab_size]

    def cached(self, x, attention_mask, position_ids, start: int, end: int, cache, mode: str):
        """(logits of [start, end), cache): without a cache, the full forward that makes one (what the uncached call
        computes); with one, only the columns [start, L) (prefix) or [start, end) (dual) are forwarded."""
        if "position_ids" not in self.options:  # LLaDA: positions are column indices, as in its own forward
            position_ids = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
        if cache is None:
            logits, cache = self.kv(x, position_ids, attention_mask, keep=(start, end))
            self.tokens += x.numel()
        else:
            lo, hi = (start, x.shape[1]) if mode == "prefix" else (start, end)
            logits = self.kv(x[:, lo:hi], position_ids[:, lo:hi], attention_mask, keep=(start - lo, end - lo),
                             cache=cache, span=(lo, hi))
            self.tokens += x.shape[0] * (hi - lo)
        self.calls += 1
        self.rows += x.shape[0]
        return (logits if self.vocab_size is None else logits[..., : self.vocab_size]), cache


@torch.inference_mode()
def _generate_batch(denoise: _Denoiser, prompts, keys, config: DecodeConfig, mask_id: int, eos_id, pad_id, device,
                    rule):
    b = len(prompts)
    width = max(len(p) for p in prompts)
    length = width + config.gen_length
    x = torch.full((b, length), mask_id, dtype=torch.long)
    attn = torch.ones((b, length), dtype=torch.long)
    for i, p in enumerate(prompts):
        start = width - len(p)
        x[i, :start] = pad_id
        attn[i, :start] = 0
        x[i, start:width] = torch.as_tensor(list(p), dtype=torch.long)
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    x, attn, pos = x.to(device), attn.to(device), pos.to(device)

    needs_rng = config.temperature > 0 or config.remasking == "random"
    gens = [row_generator(config.seed, k, device) for k in keys] if needs_rng else None
    active = torch.arange(b, device=device)
    xa, attna, posa = x, attn, pos
    steps_run = [0] * b
    schedule = num_transfer_schedule(config.block_length, config.steps_per_block)
    gen_cols = torch.arange(config.gen_length, device=device)
    check_stop = config.early_stop and eos_id is not None
    unpadded = bool(attn.all())

    for blk in range(config.num_blocks):
        s = width + blk * config.block_length
        e = s + config.block_length
        cache = None  # refreshed by the block's first model call
        for k in schedule if rule.scheduled else [None] * config.block_length:
            if rule.scheduled:
                for r in active.tolist():
                    steps_run[r] += 1
                if k == 0:  # LLaDA calls the model and commits nothing
                    continue
            else:  # until the block has no mask left (a row whose block is done rides along, committing nothing)
                left = (xa[:, s:e] == mask_id).any(1).tolist()
                if not any(left):
                    break
                for r, m in zip(active.tolist(), left):
                    steps_run[r] += m
            if denoise.kv is None:
                logits = denoise(xa, None if unpadded else attna, posa, s, e)
            else:
                logits, cache = denoise.cached(xa, None if unpadded else attna, posa, s, e, cache, config.cache)
            block = xa[:, s:e]
            masked = block == mask_id
            x0, conf = propose(logits, config, gens)
            conf = torch.where(masked, conf, torch.full_like(conf, float("-inf")))
            transfer = rule.commit(conf, masked, k)
            xa[:, s:e] = torch.where(transfer, x0, block)
            if check_stop:
                gen = xa[:, width:]
                is_eos = gen == eos_id
                first = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(active, length))
                pending = ((gen == mask_id) & (gen_cols[None] < first[:, None])).any(1)
                done = is_eos.any(1) & ~pending
                if bool(done.any()):
                    x[active[done]] = xa[done]
                    keep = ~done
                    if gens is not None:
                        gens = [g for g, kp in zip(gens, keep.tolist()) if kp]
                    if cache is not None:
                        cache = [(kc[keep], vc[keep]) for kc, vc in cache]
                    active, xa, attna, posa = active[keep], xa[keep], attna[keep], posa[keep]
                    unpadded = bool(attna.all())
                    if active.numel() == 0:
                        break
        if active.numel() == 0:
            break
    if active.numel() and xa is not x:
        x[active] = xa
    out = []
    for row in x[:, width:].tolist():
        if eos_id is not None and eos_id in row:
            row = row[: row.index(eos_id) + 1]
        out.append(row)
    return out, steps_run


def generate(
    model,
    prompts: Sequence[Sequence[int]],
    config: DecodeConfig | None = None,
    *,
    mask_token_id: int,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    batch_size: int = 16,
    row_keys: Sequence | None = None,
    vocab_size: int | None = None,
    device=None,
    shard: tuple[int, int] | None = None,
) -> GenerationOutput:
    """Decode every prompt (a list of token ids); prompts are sorted by length and decoded `batch_size` at a time
    (models that cannot be shown padding: only prompts of one length share a batch).

    `row_keys` key each prompt's random draws (default: its index in `prompts`); `vocab_size` (len(tokenizer)):
    ids at or above it are never proposed. `shard` (rank, world): decode only every world-th of the batches the
    whole list is cut into (the others' tokens stay None; `mdm.eval.distributed` gathers them), so each prompt is
    decoded in the very batch one process would decode it in. Returns the generated ids in input order."""
    config = config or DecodeConfig()
    if mask_token_id is None:
        raise ValueError("mask_token_id is required (see mdm.data.mask_token_id_of)")
    if batch_size < 1:
        raise ConfigError("batch_size", f"must be >= 1, got {batch_size}")
    prompts = [list(p) for p in prompts]
    if any(len(p) == 0 for p in prompts):
        raise ValueError("empty prompt: every prompt needs at least one token (e.g. BOS)")
    keys = list(range(len(prompts))) if row_keys is None else list(row_keys)
    if len(keys) != len(prompts):
        raise ValueError(f"{len(keys)} row_keys for {len(prompts)} prompts")
    if device is None:
        device = next(model.parameters()).device if hasattr(model, "parameters") else torch.device("cpu")
    pad = pad_token_id if pad_token_id is not None else (eos_token_id if eos_token_id is not None else mask_token_id)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    denoise = _Denoiser(model, vocab_size)
    rule = build(config)
    if config.cache != "none":  # one line and no decoding for a model that cannot be cached
        denoise.kv = kv_forward(model, denoise.adapter, config.cache)
    tokens: list = [None] * len(prompts)
    steps_run = [0] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    try:
        for k, pos in enumerate(batches([len(prompts[i]) for i in order], batch_size, denoise.adapter.can_pad)):
            if shard is not None and k % shard[1] != shard[0]:
                continue
            idx = [order[p] for p in pos]
            out, steps = _generate_batch(
                denoise, [prompts[i] for i in idx], [keys[i] for i in idx], config, int(mask_token_id),
                eos_token_id, pad, device, rule,
            )  # fmt: skip
            for i, toks, st in zip(idx, out, steps):
                tokens[i], steps_run[i] = toks, st
    finally:
        if was_training:
            model.train()
    return GenerationOutput(tokens, steps_run, denoise.calls, denoise.rows, config.to_dict(), denoise.tokens)
