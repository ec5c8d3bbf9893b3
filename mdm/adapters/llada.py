"""LLaDA (GSAI-ML/LLaDA-8B-*, and MMaDA's copy of its code): remote code, loaded with a transformers 5.x shim.

- Loading: `trust_remote_code`; on transformers 5.x the class is patched at load time (the downloaded files are
  not touched): `__init__` gains the `post_init()` it never calls, `tie_weights` accepts the keyword arguments
  transformers now passes, and the config gets `use_cache = False` (LLaDA has no KV cache).
- Mask token: config `mask_token_id` (126336 in the real checkpoint) checked against the tokenizer's
  `<|mdm_mask|>`; LLaDAConfig's default 50256 (a config without the key) is refused.
- Padding: a 2-D attention_mask with a 0 makes this code causal (OLMo heritage), so it is never passed. MMaDA's copy
  honours `attention_bias` ("bias"); the hub's code ignores every mask ("eos": LLaDA's SFT convention). The probe
  (`mdm.adapters.probe`) tells which.
- LoRA (`lora_targets`): q/k/v_proj, attn_out, ff_proj, up_proj, ff_out of every block (the output layer, also
  named ff_out, is excluded by the trainer).
- No logits shift. Activation checkpointing: `model.model.set_activation_checkpointing(whole_layer)`.
"""

from __future__ import annotations

import functools
import sys

from mdm.adapters.core import Adapter


class LLaDA(Adapter):
    name = "llada"
    paddings = ("bias", "eos")
    facts = {"mask id": "config mask_token_id = tokenizer <|mdm_mask|>, checked",
             "padding": "4-D attention_bias, else EOS padding carrying loss", "checkpointing": "LLaDA's whole_layer"}
    config_mask_default = 50256
    # the llama block of LLaDA-8B (MMaDA's and the hub's code): fused att_proj / ff_proj in other block types
    lora_targets = ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")

    def load(self, path, config, *, causal: bool, dtype):
        # deferred: transformers (slow import), only when a model is loaded
        from transformers.dynamic_module_utils import get_class_from_dynamic_module

        config.use_cache = False
        ref = config.auto_map.get("AutoModel") or config.auto_map["AutoModelForCausalLM"]
        cls = get_class_from_dynamic_module(ref, str(path))
        patch_for_transformers5(cls)
        cls.register_for_auto_class("AutoModel")  # save_pretrained copies the code files, as AutoModel would
        return cls.from_pretrained(path, config=config, dtype=dtype)

    def enable_checkpointing(self, model) -> None:
        strategy = sys.modules[type(model.config).__module__].ActivationCheckpointingStrategy.whole_layer
        model.model.set_activation_checkpointing(strategy)


def patch_for_transformers5(cls) -> None:
    """Make a remote-code PreTrainedModel written for transformers 4.x load on 5.x (idempotent; a subclass of a
    patched class, MMaDA's MMadaModelLM of LLaDAModelLM, is patched in its own right)."""
    if cls.__dict__.get("_mdm_patched", False):
        return
    init, tie = cls.__init__, cls.tie_weights

    @functools.wraps(init)
    def __init__(self, config, *args, **kwargs):
        init(self, config, *args, **kwargs)
        if not hasattr(self, "all_tied_weights_keys"):  # set by post_init(), which 5.x needs and 4.x did not
            self.post_init()

    @functools.wraps(tie)
    def tie_weights(self, *args, **kwargs):  # 5.x passes recompute_mapping= (and others)
        return tie(self)

    cls.__init__, cls.tie_weights, cls._mdm_patched = __init__, tie_weights, True
