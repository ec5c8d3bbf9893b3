"""`training.peft.lora`: LoRA adapters applied with peft after the model is built.

The trainer trains the backbone itself (`PeftModel.get_base_model()`: the same transformers model, with LoRA
layers injected and every other weight frozen), so the objective, the methods and the adapters see the model they
always see. At the end of a run, `<run>/adapter/` holds the adapter (peft's `save_pretrained`) and `<run>/model/`
the merged weights: a plain model for `mdm eval` and the sampler.
"""

from __future__ import annotations

import warnings

import torch

from mdm.adapters.gemma3 import Gemma3
from mdm.errors import ConfigError

WHERE = "training.peft.lora.target_modules"


def output_layer(model) -> str | None:
    """The module name of the output layer (never adapted: it is often tied to the input embedding)."""
    head = getattr(model, "get_output_embeddings", lambda: None)()
    return next((n for n, m in model.named_modules() if m is head), None) if head is not None else None


def linear_names(model) -> list[str]:
    """Distinct last name parts of the Linear layers but the output layer, in order (what target_modules match)."""
    head = output_layer(model)
    return list(dict.fromkeys(n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                              if isinstance(m, torch.nn.Linear) and n != head))


def targets(model, lora, adapter) -> list[str]:
    """The target_modules (the config's, else the adapter's default); each must match a Linear layer."""
    names = lora.target_modules or list(adapter.lora_targets)
    have = linear_names(model)
    missing = [n for n in names if n not in have]
    if missing:
        verb = "matches" if len(missing) == 1 else "match"
        raise ConfigError(WHERE, f"{', '.join(map(repr, missing))} {verb} no Linear layer of {type(model).__name__} "
                          f"(the output layer is never adapted); its Linear layers: {', '.join(have)}")
    return names


def check_tiny(cfg) -> None:
    """A tiny run's targets checked on its architecture (meta device: no weights, no compute), before its base model
    may be pretrained."""
    from transformers import Gemma3ForCausalLM  # deferred: transformers (slow import), only for a tiny run

    from mdm.models import TinySize, tiny_config  # deferred: mdm.models imports transformers
    from mdm.train.model import tiny_tokenizer  # deferred: mdm.train.model loads pydantic, for tiny runs only

    m = cfg.model
    tokenizer = tiny_tokenizer(m, cfg.data.task, cfg.data.options)
    with torch.device("meta"):
        skeleton = Gemma3ForCausalLM(tiny_config(tokenizer, size=TinySize(**m.size.model_dump())))
    targets(skeleton, cfg.training.peft.lora, Gemma3())


def apply_lora(model, lora, adapter):
    """The PeftModel around `model` (LoRA injected into `model` in place; only the adapters require grad)."""
    from peft import LoraConfig, get_peft_model  # deferred: peft (imports transformers), only when LoRA is on

    names = targets(model, lora, adapter)
    head = output_layer(model)
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=names,
                        exclude_modules=[head] if head else None)
    with warnings.catch_warnings():  # peft reads transformers' deprecated is_gradient_checkpointing
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, config)


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
