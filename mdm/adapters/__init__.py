"""Model adapters: what the objective, trainer, likelihood and sampler need to know about a backbone family.

    model, tokenizer = load_model("path/or/hub-id", causal=False, dtype=torch.float32)
    adapter = checked(model)                                    # probed once per model, cached on it
    logits = adapter.logits(model, input_ids, attention_mask)   # the padding shown the way this model honours it

An adapter is found from `config.model_type` (`ADAPTERS`), else from a `*ForMaskedLM` architecture (`MaskedLM`);
anything else is a transformers-native model: the generic `Adapter`. Families: the tiny Gemma3, LLaDA, MMaDA,
dllm's A2D conversions (`a2d`), masked-LM encoders (`mlm`), the logit-shifted Dream (`shifted`); `families()`
says what each does (`mdm methods`). `checked` runs one forward (`probe`) that measures the attention the model really has under
the project's padding and refuses, with one line, a model that is causal or pad-dependent when it must not be.
"""

from __future__ import annotations

import sys

import torch

from mdm.adapters.a2d import A2D
from mdm.adapters.core import Adapter, read_config
from mdm.adapters.gemma3 import Gemma3
from mdm.adapters.llada import LLaDA
from mdm.adapters.mlm import Bert, MaskedLM, ModernBert
from mdm.adapters.mmada import MMaDA
from mdm.adapters.shifted import Dream
from mdm.errors import ConfigError

ADAPTERS: dict[str, type[Adapter]] = {
    "gemma3_text": Gemma3, "gemma3": Gemma3, "llada": LLaDA, "mmada": MMaDA,
    "a2d-qwen3": A2D, "a2d-qwen2": A2D, "a2d-llama": A2D,  # dllm's AR-to-diffusion conversions
    "modernbert": ModernBert, "bert": Bert, "roberta": Bert,  # masked-LM encoders
    "dream": Dream,  # logit-shifted
}
REFUSED: dict[str, str] = {}  # model_type -> why it cannot be trained or decoded (none at present)


def find(model_type, architectures=None) -> type[Adapter]:
    """The adapter class of a config's `model_type` (case-insensitive), else of a `*ForMaskedLM` architecture, else
    the generic transformers adapter."""
    cls = ADAPTERS.get(str(model_type or "").lower())
    if cls is None and any(str(a).endswith("ForMaskedLM") for a in architectures or ()):
        cls = MaskedLM
    return cls or Adapter


def families() -> list[tuple[str, str, dict[str, str]]]:
    """(adapter name, model_types, facts) of every family, for `mdm methods`."""
    by_cls: dict[type[Adapter], list[str]] = {}
    for model_type, cls in ADAPTERS.items():
        by_cls.setdefault(cls, []).append(model_type)
    by_cls.setdefault(MaskedLM, []).append("any *ForMaskedLM")
    by_cls.setdefault(Adapter, []).append("other transformers models")
    out = []
    for cls, types in by_cls.items():
        facts = dict(cls.facts)
        facts["shift"] = "1 (output i-1 predicts token i; position 0 never a target)" if cls.shift else "none"
        facts["padding"] = " / ".join(cls.paddings) + f" ({facts['padding']})"
        facts["LoRA targets"] = ", ".join(cls.lora_targets)
        out.append((cls.name, ", ".join(types), facts))
    return out


def config_of(model):
    return getattr(getattr(model, "module", model), "config", None)


def adapter_class(config, where: str = "model") -> type[Adapter]:
    model_type = str(getattr(config, "model_type", "") or "").lower()
    if model_type in REFUSED:
        raise ConfigError(where, f"model_type {model_type!r} is not supported: {REFUSED[model_type]}")
    return find(model_type, getattr(config, "architectures", None))


def load_model(path, *, causal: bool | None, dtype, code_dir=None):
    """(model, tokenizer) of a hub id or local folder, loaded by its family's adapter; `code_dir`: the family's
    code where it is not on the hub (MMaDA's `models/` package, `model.code_dir`)."""
    # deferred: transformers (slow import), only when a model is loaded; mdm.adapters loads torch only
    from transformers import AutoTokenizer

    config = read_config(path, "model.source", code_dir=code_dir)
    adapter = adapter_class(config, "model.source")()
    model = adapter.load(str(path), config, causal=causal, dtype=dtype)
    return model, adapter.prepare_tokenizer(AutoTokenizer.from_pretrained(str(path), trust_remote_code=True))


def mask_token_id(tokenizer, config) -> int:
    return adapter_class(config)().mask_token_id(tokenizer, config)


# ---------------------------------------------------------------- the probe

PROBE_LENGTH, PROBE_PADS = 8, 1  # a pad at each end: left (sampler) and right (training) padding
_TOL = 1e-4  # relative to the largest logit: float rounding is far below it, a real dependence far above


def checked(model, causal: bool = False) -> Adapter:
    """The adapter of `model` with the padding it really honours (first of `paddings` that passes `probe`)."""
    inner = getattr(model, "module", model)
    cache = inner.__dict__.setdefault("_mdm_adapters", {})
    if causal in cache:
        return cache[causal]
    config = getattr(inner, "config", None)
    cls = adapter_class(config)
    if config is None:  # not a transformers model (a test double, a wrapper without config): taken as it is
        cache[causal] = cls()
        return cache[causal]
    verdicts = []
    for padding in cls.paddings:
        adapter = cls(padding)
        verdict = probe(inner, adapter, causal)
        if verdict is None:
            if padding != cls.paddings[0]:
                print(f"mdm: {adapter.name}: the model ignores {cls.paddings[0]!r} padding; using {padding!r} "
                      "(EOS padding that carries loss; decoding and likelihood never pad)", file=sys.stderr)
            cache[causal] = adapter
            return adapter
        verdicts.append(f"{padding}: {verdict}")
    want = "causal" if causal else "bidirectional"
    raise ConfigError("model", f"{type(inner).__name__} ({cls.name}) does not have {want} attention under the "
                      f"project's padding ({'; '.join(verdicts)}); refusing to train or decode it")


def checked_on_main(model, causal: bool, accelerator) -> Adapter:
    """`checked` in a launch: the main process probes (under FSDP's RAM-efficient loading the other ranks hold
    meta tensors until `prepare` broadcasts rank 0's weights) and its verdict, the padding or the refusal, is
    broadcast, so every rank uses the same adapter or stops with the same line."""
    if accelerator is None or accelerator.num_processes == 1:
        return checked(model, causal)
    from accelerate.utils import broadcast_object_list  # deferred: accelerate, only in a multi-process launch

    verdict: list = [None, None]
    if accelerator.is_main_process:
        try:
            verdict = [checked(model, causal).padding, None]
        except ConfigError as e:
            verdict = [None, (e.where, e.problem)]
    broadcast_object_list(verdict, from_process=0)
    if verdict[1] is not None:
        raise ConfigError(*verdict[1])
    inner = getattr(model, "module", model)
    cache = inner.__dict__.setdefault("_mdm_adapters", {})
    cache[causal] = cache.get(causal) or adapter_class(config_of(model))(verdict[0])
    return cache[causal]


@torch.no_grad()
def probe(model, adapter: Adapter, causal: bool) -> str | None:
    """One forward of 3 rows: x, x with its last real token changed, x with its pads changed. None when the model's
    attention is as it must be (position 0 sees the last token iff bidirectional; pads never matter), else why not."""
    vocab = int(getattr(model.config, "vocab_size", 0) or model.get_input_embeddings().num_embeddings)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, min(vocab, 256), (3, PROBE_LENGTH), generator=g)
    real = torch.ones(PROBE_LENGTH, dtype=torch.long)
    if adapter.can_pad:
        real[:PROBE_PADS] = real[-PROBE_PADS:] = 0
    # a shifted model's first real position gets the output of the position before it (a pad, or nothing): it is
    # never a target (Adapter.check_first_position), so the checks start `shift` positions later
    first, last = int(real.argmax()) + adapter.shift, int(real.nonzero().max())
    judged = real.bool().clone()
    judged[: first] = False
    x[1:] = x[0]
    x[1, last] = (x[0, last] + 1) % vocab
    x[2, real == 0] = (x[0, real == 0] + 7) % vocab
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        logits = adapter.logits(model, x.to(device), real.expand(3, -1).to(device)).float().cpu()
    finally:
        model.train(was_training)
    tol = _TOL * float(logits[0].abs().max())
    sees_last = float((logits[1, first] - logits[0, first]).abs().max()) > tol
    if sees_last == causal:
        return "position 0 sees the last token" if causal else "position 0 does not see the last token (causal)"
    if adapter.can_pad and float((logits[2] - logits[0])[judged].abs().max()) > tol:
        return "padding tokens change the logits of real tokens (the mask is ignored)"
    return None


__all__ = ["ADAPTERS", "Adapter", "adapter_class", "checked", "config_of", "families", "find", "load_model",
           "mask_token_id", "probe"]
