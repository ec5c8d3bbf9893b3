"""dllm's A2D (AR-to-diffusion) conversions: an autoregressive Qwen3 / Qwen2 / Llama checkpoint trained as an MDM
with full attention (dllm-hub/Qwen3-0.6B-diffusion-mdlm-v0.1, ...-bd3lm-v0.1, Qwen2.5-Coder-0.5B-Instruct-diffusion-
mdlm-v0.1). Facts read from dllm (github.com/ZHZisZZ/dllm, dllm/pipelines/a2d/models/*/modeling_*.py, convert.py,
dllm/utils/models.py):

- config.json: `model_type` "a2d-qwen3" / "a2d-qwen2" / "a2d-llama", a subclass of transformers' Qwen3Config /
  Qwen2Config / LlamaConfig with nothing added; convert.py strips `auto_map` (the classes are registered by
  importing dllm, so transformers alone does not know the model type).
- Weights: dllm's LM-head class subclasses Qwen3ForCausalLM (etc.) and keeps every parameter name; only the
  decoder's mask changes: a padding-only 4-D mask, no causal part. Logits are unshifted (no right_shift_logits).
- Mask token: dllm adds `<|mask|>` to the tokenizer as its mask_token (`get_tokenizer`).
- Chat: for A2D Qwen, dllm's `get_tokenizer` makes `enable_thinking=False` the default of apply_chat_template
  (Qwen3's template then closes an empty <think></think> block after the assistant header): the prompts the
  released checkpoints were trained and scored with. Here the same default is set inside the template itself
  (`prepare_tokenizer`: a string, so it is saved with a run's tokenizer and survives pickling).

Here (no dllm code, nothing downloaded is edited): the config is read into a subclass of the transformers config
that keeps the A2D model_type (so a saved run reloads as A2D, never as a causal Qwen3), the weights are loaded
into the transformers-native `*ForCausalLM`, and attention is made bidirectional by the mask the adapter passes in
every forward: a 4-D boolean key-padding mask [B, 1, L, L] (all true without padding; transformers uses a 4-D mask
as given and SDPA then never applies its causal flag). The model is loaded with SDPA attention (a boolean mask); the
probe (`mdm.adapters.probe`) checks the attention really is bidirectional and padding-invariant. Gradient
checkpointing: transformers' own. LoRA: the q/k/v/o and gate/up/down projections.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from mdm.adapters.core import MASK_TOKEN, Adapter
from mdm.errors import ConfigError

# model_type -> the transformers (config, model) classes whose weights it has
BASES = {"a2d-qwen3": ("Qwen3Config", "Qwen3ForCausalLM"), "a2d-qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
         "a2d-llama": ("LlamaConfig", "LlamaForCausalLM")}
_CONFIGS: dict[str, type] = {}


def config_class(model_type: str, base: str):
    """transformers' `base` config under `model_type`, registered with AutoConfig once (AutoTokenizer reads it)."""
    if model_type not in _CONFIGS:
        import transformers  # deferred: transformers (slow import), only when a config is read

        name = "".join(p.capitalize() for p in model_type.replace("-", "_").split("_")) + "Config"
        cls = type(name, (getattr(transformers, base),), {"model_type": model_type, "__module__": __name__})
        transformers.AutoConfig.register(model_type, cls, exist_ok=True)
        _CONFIGS[model_type] = cls
    return _CONFIGS[model_type]


def full_mask(attention_mask, input_ids) -> dict:
    """The 4-D boolean mask [B, 1, L, L] letting every query see every real key (bidirectional, padding-only)."""
    if attention_mask is None:
        b, n = input_ids.shape
        keys = torch.ones((b, n), dtype=torch.bool, device=input_ids.device)
    else:
        keys = attention_mask.bool()
        n = keys.shape[1]
    return {"attention_mask": keys[:, None, None, :].expand(-1, 1, n, n)}


class TransformersBackbone(Adapter):
    """Weights of a transformers-native decoder made bidirectional by the mask passed in every forward."""

    bases: ClassVar[dict[str, tuple[str, str]]] = BASES
    paddings = ("mask4d",)
    mask_token_names: ClassVar[tuple[str, ...]] = ("<|mask|>", MASK_TOKEN)
    facts = {"mask id": "tokenizer mask_token (<|mask|>)", "padding": "4-D bidirectional key-padding mask",
             "checkpointing": "transformers"}

    @classmethod
    def read_config(cls, path, raw: dict, *, code_dir=None, where: str = "model"):
        model_type = str(raw.get("model_type", ""))
        if model_type.lower() not in cls.bases:
            raise ConfigError(where, f"{path}: model_type {model_type!r} is not one of {', '.join(sorted(cls.bases))}")
        return config_class(model_type, cls.bases[model_type.lower()][0]).from_pretrained(str(path))

    def load(self, path, config, *, causal: bool | None, dtype):
        import transformers  # deferred: transformers (slow import), only when a model is loaded

        model_cls = getattr(transformers, self.bases[str(config.model_type).lower()][1])
        config.use_cache = False
        return model_cls.from_pretrained(path, config=config, dtype=dtype, attn_implementation="sdpa")

    def mask_kwargs(self, attention_mask, input_ids=None) -> dict:
        if self.padding != "mask4d":
            return super().mask_kwargs(attention_mask, input_ids)
        if attention_mask is None and input_ids is None:
            raise RuntimeError(f"{self}: a forward needs the batch (input_ids) to build its mask")
        return full_mask(attention_mask, input_ids)


NO_THINKING = "{%- if enable_thinking is not defined %}{%- set enable_thinking = false %}{%- endif %}"


class A2D(TransformersBackbone):
    name = "a2d"

    def prepare_tokenizer(self, tokenizer):
        """dllm's chat default for A2D Qwen: thinking off unless a caller asks for it (module docstring)."""
        template = getattr(tokenizer, "chat_template", None)
        if isinstance(template, str) and "enable_thinking" in template and not template.startswith(NO_THINKING):
            tokenizer.chat_template = NO_THINKING + template
        return tokenizer
