"""Tiny hub-shaped LLaDA folders built from the real remote code (`../shared/reference/remote_code/`).

`llada_folder(dest, variant)` writes what `GSAI-ML/LLaDA-8B-Instruct` holds, at tiny size: config.json with
`auto_map`, the two .py files copied unmodified, `model.safetensors` of a randomly initialised model, and a
tokenizer shaped like LLaDA's (`<|mdm_mask|>` in the vocabulary but no `mask_token`, EOS = pad). Variants:
"llada" (MMaDA's copy: honours `attention_bias`) and "llada_hub" (the hub's code: ignores every mask).

`mmada_folder(dest)` writes what `Gen-Verse/MMaDA-8B-*` holds, at tiny size: config.json with `model_type: mmada`
and no `auto_map` (the code is MMaDA's repository's `models/` package: `MMADA_CODE`, passed as model.code_dir),
`model.safetensors` of a random LLaDA-architecture model whose embedding has LLM rows (the tokenizer + padding rows)
then `codebook` image-code rows, and the same LLaDA-shaped tokenizer.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

REMOTE = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "remote_code"
VARIANTS = ("llada", "llada_hub")
FILES = ("configuration_llada.py", "modeling_llada.py")

requires_remote_code = pytest.mark.skipif(
    not all((REMOTE / v / f).is_file() for v in VARIANTS for f in FILES),
    reason=f"LLaDA remote-code fixtures not found at {REMOTE} (they ship with the project's shared reference data)",
)


def llada_tokenizer():
    """The tests' tiny BPE re-saved the way LLaDA's tokenizer is: `<|mdm_mask|>` present, no mask_token, EOS = pad."""
    from transformers import PreTrainedTokenizerFast

    from mdm.data.tokenizer import ASSISTANT, BOS, EOS, USER
    from tests.eval.test_eval_fixtures import tiny_tokenizer

    base = tiny_tokenizer()
    tok = PreTrainedTokenizerFast(tokenizer_object=base.backend_tokenizer, bos_token=BOS, eos_token=EOS,
                                  pad_token=EOS, additional_special_tokens=[USER, ASSISTANT],
                                  model_max_length=1 << 20)
    assert tok.mask_token is None and "<|mdm_mask|>" in tok.get_vocab()
    return tok


def llada_config(tokenizer, *, hidden: int = 32, layers: int = 2, heads: int = 2, padded_vocab: int = 24,
                 mask_token_id: bool = True) -> dict:
    """config.json of LLaDA-8B-Instruct at tiny size; the embedding has `padded_vocab` rows beyond the tokenizer
    (the real checkpoint pads its 126464-row embedding beyond its tokenizer)."""
    vocab = len(tokenizer) + padded_vocab
    cfg = {
        "architectures": ["LLaDAModelLM"], "model_type": "llada",
        "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig",
                     "AutoModel": "modeling_llada.LLaDAModelLM",
                     "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"},
        "activation_type": "silu", "alibi": False, "attention_dropout": 0.0, "attention_layer_norm": False,
        "block_group_size": 1, "block_type": "llama", "d_model": hidden, "embedding_dropout": 0.0,
        "embedding_size": vocab, "vocab_size": vocab, "flash_attention": False, "include_bias": False,
        "include_qkv_bias": False, "init_device": "meta", "init_fn": "mitchell", "init_std": 0.02,
        "input_emb_norm": False, "layer_norm_type": "rms", "layer_norm_with_affine": True,
        "max_sequence_length": 512, "mlp_hidden_size": 2 * hidden, "mlp_ratio": 4, "n_heads": heads,
        "n_kv_heads": heads, "n_layers": layers, "residual_dropout": 0.0, "rms_norm_eps": 1e-5, "rope": True,
        "rope_full_precision": True, "rope_theta": 500000.0, "scale_logits": False, "use_cache": False,
        "weight_tying": False, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
    }
    if mask_token_id:
        cfg["mask_token_id"] = tokenizer.convert_tokens_to_ids("<|mdm_mask|>")
    return cfg


def _remote_package(folder: Path):
    """The folder's two .py files imported as a package (they import each other relatively), no loader involved."""
    name = f"_llada_fixture_{abs(hash(str(folder.resolve())))}"
    if name not in sys.modules:
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        sys.modules[name] = importlib.util.module_from_spec(spec)
    return importlib.import_module(f"{name}.configuration_llada"), importlib.import_module(f"{name}.modeling_llada")


def random_state_dict(folder: Path, seed: int, code: Path | None = None) -> dict:
    """The weights of a randomly initialised LLaDA of the folder's config (LLaDA's own init, `mitchell`), built with
    the code in `code` (default: the folder's own .py files)."""
    configuration, modeling = _remote_package(code or folder)
    cfg = json.loads((folder / "config.json").read_text())
    fields = configuration.ModelConfig.__dataclass_fields__
    model_config = configuration.ModelConfig(**{k: v for k, v in cfg.items() if k in fields})
    model_config.init_device = "cpu"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        core = modeling.LLaDAModel(model_config, init_params=True)
    return {f"model.{k}": v.contiguous() for k, v in core.state_dict().items()}


def llada_folder(dest: Path, variant: str = "llada", *, seed: int = 0, mask_token_id: bool = True, **size) -> Path:
    """Write a hub-shaped tiny LLaDA folder at `dest` and return it."""
    from safetensors.torch import save_file

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for f in FILES:
        shutil.copy(REMOTE / variant / f, dest / f)
    tokenizer = llada_tokenizer()
    tokenizer.save_pretrained(dest)
    (dest / "config.json").write_text(json.dumps(llada_config(tokenizer, mask_token_id=mask_token_id, **size),
                                                 indent=2))
    save_file(random_state_dict(dest, seed), str(dest / "model.safetensors"), metadata={"format": "pt"})
    return dest


MMADA_CODE = REMOTE / "mmada"  # MMaDA's models/ package, as in a clone of github.com/Gen-Verse/MMaDA
requires_mmada_code = pytest.mark.skipif(
    not (MMADA_CODE / "modeling_mmada.py").is_file(),
    reason=f"MMaDA remote-code fixtures not found at {MMADA_CODE} (they ship with the project's shared reference data)",
)


def mmada_config(tokenizer, *, codebook: int = 16, mask_token_id: int | None = None, **size) -> dict:
    """config.json of MMaDA-8B at tiny size: LLaDA's keys, model_type mmada, no auto_map, and the vocabulary of
    `llm_vocab_size` LLM rows followed by `codebook_size` image codes (126464 + 8192 = 134656 in MMaDA-8B)."""
    cfg = llada_config(tokenizer, **size)
    cfg.pop("auto_map")
    llm_vocab = cfg["vocab_size"]
    # MMadaConfig, unlike LLaDAConfig, fills in no defaults: MMaDA-8B's config.json holds every ModelConfig key
    cfg.update({"alibi_bias_max": 8.0, "multi_query_attention": None, "attention_layer_norm_with_affine": True,
                "bias_for_layer_norm": False, "init_cutoff_factor": None, "precision": "amp_bf16"})
    cfg.update({"architectures": ["MMadaModelLM"], "model_type": "mmada", "llm_vocab_size": llm_vocab,
                "codebook_size": codebook, "num_vq_tokens": 4, "num_new_special_tokens": 0,
                "new_vocab_size": llm_vocab + codebook, "vocab_size": llm_vocab + codebook,
                "embedding_size": llm_vocab + codebook, "llm_model_path": "GSAI-ML/LLaDA-8B-Instruct"})
    if mask_token_id is not None:
        cfg["mask_token_id"] = mask_token_id
    return cfg


def mmada_folder(dest: Path, *, seed: int = 0, **config) -> Path:
    """Write a hub-shaped tiny MMaDA folder (no code files) at `dest` and return it."""
    from safetensors.torch import save_file

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = llada_tokenizer()
    tokenizer.save_pretrained(dest)
    (dest / "config.json").write_text(json.dumps(mmada_config(tokenizer, **config), indent=2))
    save_file(random_state_dict(dest, seed, code=MMADA_CODE), str(dest / "model.safetensors"),
              metadata={"format": "pt"})
    return dest
