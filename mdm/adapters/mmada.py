"""MMaDA (Gen-Verse/MMaDA-8B-*), text side: LLaDA's architecture (`MMadaModelLM` subclasses `LLaDAModelLM`) with
MAGVIT-v2 image codes appended to the vocabulary; its code is not on the hub.

- Code: an MMaDA checkpoint's config.json (`model_type: mmada`) has no `auto_map`; the code is the `models/` package
  of MMaDA's repository, found from `model.code_dir` (else `$MDM_MMADA_CODE`), else from an `auto_map` in config.json
  (a model folder saved by mdm: `save_pretrained` copies the LLM's code files next to the weights). Neither: one line
  saying how to get it.
- Import: only the LLM modules, `modeling_mmada` and what it imports relatively (`configuration_llada`,
  `modeling_llada`, `sampling`), as submodules of MMaDA's package under a private name whose `__init__.py` is
  never run: that `__init__` imports MAGVIT-v2 (`modeling_magvitv2`: diffusers internals removed in the pinned
  diffusers 0.42, einops, jaxtyping, typeguard, omegaconf), which the text model never uses. So nothing is stubbed,
  no file of MMaDA's is touched and no dependency is added.
- Loading on transformers 5.x: LLaDA's shim (`patch_for_transformers5`, `use_cache = False`); MMadaModelLM's print
  of its whole config at construction is kept off stdout (`mdm eval --json` prints JSON there).
- Mask token: config `mask_token_id` (126336 in MMaDA-8B) checked against the tokenizer's `<|mdm_mask|>`, as LLaDA.
- Padding: "bias", a 4-D `attention_bias`, as MMaDA itself passes it; the probe confirms bidirectional attention
  (a 2-D mask with a 0 makes this code causal).
- Vocabulary: `vocab_size` rows = `llm_vocab_size` LLM rows (126464: LLaDA's text tokenizer and its padding rows)
  + `codebook_size` image codes (8192: 134656 rows, `new_vocab_size`). The text objective's targets and every
  decoded token are ids below len(tokenizer); the rows from there to `vocab_size` (LLaDA's padding, then the image
  codes) stay in the softmax, as in MMaDA's own text loss, but are never targets and never proposed by the sampler.
  A tokenizer longer than `llm_vocab_size` (text ids that would be image codes) is refused.
- Activation checkpointing, LoRA targets, no logits shift: LLaDA's.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.machinery
import importlib.util
import io
import os
import sys

from mdm.adapters.llada import LLaDA, patch_for_transformers5
from mdm.errors import ConfigError
from mdm.remote_code import CLONE, ENV, check_code_dir


class MMaDA(LLaDA):
    name = "mmada"
    paddings = ("bias",)  # MMaDA's code honours attention_bias: no fallback to EOS padding
    facts = {**LLaDA.facts, "padding": "4-D attention_bias"}
    config_mask_default = None  # MMadaConfig has no default mask_token_id

    @classmethod
    def read_config(cls, path, raw: dict, *, code_dir=None, where: str = "model"):
        """MMadaConfig from `code_dir` (else $MDM_MMADA_CODE), else from config.json's auto_map (the folder's own
        code, even when another copy was imported before: transformers 5 prefers a registered class)."""
        code_dir = code_dir or os.environ.get(ENV) or None
        auto = (raw.get("auto_map") or {}).get("AutoConfig")
        if code_dir is not None:
            config_cls = import_llm(code_dir).MMadaConfig
        elif auto:
            # deferred: transformers (slow import), only for a config named by auto_map
            from transformers.dynamic_module_utils import get_class_from_dynamic_module

            config_cls = get_class_from_dynamic_module(auto, str(path))
        else:
            raise ConfigError("model.code_dir", f"{path} is an MMaDA checkpoint (model_type 'mmada') and MMaDA's "
                              f"code is not on the hub: {CLONE} and set model.code_dir=<clone>/models (or ${ENV})")
        fields = sys.modules[config_cls.__module__].ModelConfig.__dataclass_fields__
        missing = [f for f in fields if f not in raw]
        if missing:  # MMadaConfig, unlike LLaDAConfig, fills in no defaults: the model's constructor would fail
            raise ConfigError(where, f"{path}/config.json lacks keys MMadaModelLM needs: {', '.join(missing)}")
        return config_cls.from_pretrained(str(path))

    def load(self, path, config, *, causal: bool, dtype):
        config.use_cache = False
        cls = sys.modules[type(config).__module__].MMadaModelLM  # MMadaConfig and the model share modeling_mmada
        patch_for_transformers5(cls)
        type(config).register_for_auto_class()  # save_pretrained writes an auto_map and copies the code files
        cls.register_for_auto_class("AutoModel")
        with quiet_stdout():
            return cls.from_pretrained(path, config=config, dtype=dtype)

    def mask_token_id(self, tokenizer, config) -> int:
        mask_id = super().mask_token_id(tokenizer, config)
        llm_vocab = getattr(config, "llm_vocab_size", None)
        if llm_vocab is not None and hasattr(tokenizer, "__len__") and len(tokenizer) > int(llm_vocab):
            raise ConfigError("model", f"the tokenizer has {len(tokenizer)} tokens but config llm_vocab_size is "
                              f"{llm_vocab}: text ids from {llm_vocab} on are MMaDA's image codes; use MMaDA's "
                              "(LLaDA's) text tokenizer")
        return mask_id


def import_llm(code_dir):
    """MMaDA's `modeling_mmada` module from `code_dir`, imported as a submodule of the package without running the
    package's `__init__.py` (MAGVIT-v2, diffusers): a private package name per folder, so two clones never mix."""
    return import_code(check_code_dir(code_dir), "modeling_mmada", "LLM", "transformers")


def import_code(folder, module: str, what: str, against: str):
    """`module` of MMaDA's package in `folder`; one ConfigError line saying how to fix a failed import."""
    try:
        return importlib.import_module(f"{mmada_package(folder)}.{module}")
    except ImportError as e:
        fix = f"pip install {e.name}" if isinstance(e, ModuleNotFoundError) and e.name else \
            f"use MMaDA's code at a commit that matches the installed {against}"
        raise ConfigError("model.code_dir", f"{folder}: MMaDA's {what} code does not import ({e}); {fix}") from None


def mmada_package(folder) -> str:
    """The private package name of MMaDA's `models/` folder `folder` (a resolved path), created on first use with
    `folder` as its only search location and its `__init__.py` never run (it imports every model of the package)."""
    name = f"_mdm_mmada_{hashlib.sha256(str(folder).encode()).hexdigest()[:12]}"
    if name not in sys.modules:
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        sys.modules[name] = importlib.util.module_from_spec(spec)
    return name


@contextlib.contextmanager
def quiet_stdout():
    """MMadaModelLM prints its config when built; stdout carries the CLI's results (--json)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield
