"""The generic adapter (transformers-native models) and what every adapter states.

An adapter says, for one model family:
- how it loads (`read_config`: where its code is found, e.g. MMaDA's `model.code_dir`; `load`: dtype,
  trust_remote_code, compatibility shims);
- its mask token id (`mask_token_id`: the config's and the tokenizer's, checked against each other);
- how a padded batch is shown to it (`paddings`, in order of preference):
    "mask": a 2-D attention_mask (transformers models that honour it);
    "bias": a 4-D key-padding bias `attention_bias` [B, 1, 1, L] (LLaDA code that passes it to SDPA);
    "eos":  no mask at all (code that ignores masks, e.g. the hub's LLaDA): training batches are padded with
            EOS tokens that carry loss (LLaDA's SFT convention: a row's loss then depends on the batch's width, so
            the layout invariances of tests/README.md do not hold), and decoding / likelihood never pad;
- logits shift (`shift`): 0, logits at position i predict token i; 1 (Dream, `mdm.adapters.shifted`), the model's
  output at position i - 1 predicts token i. `logits` returns them aligned (position i predicts token i) for every
  consumer (objective, held-out likelihood, variance profiler, lm-eval plugin); the sampler asks for the shifted
  window itself (`window`). First-position rule: position 0 has nothing before it, so it is never a target of a
  shifted model (`check_first_position`: a prompt needs >= 1 token; a batch masking position 0 is refused);
- how to turn on activation checkpointing (`enable_checkpointing`: an error when it cannot);
- its vocabulary range: ids >= len(tokenizer) are padded embedding rows and are never sampled;
- the Linear layers LoRA adapts by default (`lora_targets`: attention and MLP projections).
Which padding a model actually gets is decided by `mdm.adapters.probe`, never assumed.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import ClassVar

import torch

from mdm.errors import ConfigError
from mdm.remote_code import looks_like_path

MASK_TOKEN = "<|mdm_mask|>"


class Adapter:
    name: ClassVar[str] = "transformers"
    paddings: ClassVar[tuple[str, ...]] = ("mask",)
    config_mask_default: ClassVar[int | None] = None  # the config class's own default (not a real mask token)
    lora_targets: ClassVar[tuple[str, ...]] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                               "down_proj")  # Llama / Gemma / Qwen naming
    mask_token_names: ClassVar[tuple[str, ...]] = (MASK_TOKEN,)  # looked up by name when the tokenizer has no mask_token
    shift: ClassVar[int] = 0  # 1: the output at position i - 1 predicts token i (Dream)
    # what `mdm methods` says of the family: mask id, padding, checkpointing (shift and LoRA targets are read above)
    facts: ClassVar[dict[str, str]] = {"mask id": "config mask_token_id / tokenizer mask token, checked",
                                       "padding": "2-D attention_mask", "checkpointing": "transformers"}

    def __init__(self, padding: str | None = None):
        self.padding = padding or self.paddings[0]

    def __repr__(self) -> str:
        return f"{self.name}(padding={self.padding})"

    @property
    def can_pad(self) -> bool:
        """False: batches of sequences of different lengths must not be padded (decoding, likelihood)."""
        return self.padding != "eos"

    # ------------------------------------------------------------ loading

    @classmethod
    def read_config(cls, path, raw: dict, *, code_dir=None, where: str = "model"):
        """The model's config from its folder or hub id; `raw` is config.json as a dict, `code_dir` a folder of the
        family's code where that is not on the hub (MMaDA)."""
        # deferred: transformers (slow import), only when a config is read
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(str(path), trust_remote_code=True)

    def load(self, path, config, *, causal: bool | None, dtype):
        """The model in `dtype`; causal None: as saved (an evaluation of a finished run)."""
        # deferred: transformers (slow import), only when a model is loaded
        from transformers import AutoModel, AutoModelForCausalLM

        try:
            return AutoModelForCausalLM.from_pretrained(path, config=config, dtype=dtype, trust_remote_code=True)
        except ValueError:
            if causal:
                raise
            return AutoModel.from_pretrained(path, config=config, dtype=dtype, trust_remote_code=True)

    # ------------------------------------------------------------ forward

    def mask_kwargs(self, attention_mask, input_ids=None) -> dict:
        """The forward's keyword arguments that show a 2-D padding mask (1 = real token) to the model; `input_ids`:
        the batch (its shape and device, for adapters that must pass a mask even without padding)."""
        if self.padding == "mask":
            return {"attention_mask": attention_mask}
        if attention_mask is None or bool(attention_mask.all()):
            return {}
        if self.padding == "bias":
            return {"attention_bias": attention_mask.bool()[:, None, None, :]}
        raise RuntimeError(f"{self}: this model cannot be shown padding; batches must be unpadded")

    def logits(self, model, input_ids, attention_mask=None, **kwargs) -> torch.Tensor:
        """Logits [B, L, V] of one forward; logits[:, i] predicts token i (a shifted model's are aligned here)."""
        if "use_cache" in forward_params(model):
            kwargs["use_cache"] = False
        out = model(input_ids=input_ids, **self.mask_kwargs(attention_mask, input_ids), **kwargs)
        logits = out.logits if hasattr(out, "logits") else out
        if self.shift:  # aligned: position i gets the output of i - 1; position 0 keeps its own (never a target)
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        return logits

    def window(self, start: int, end: int) -> tuple[int, int]:
        """The output positions whose logits predict tokens [start, end)."""
        if start - self.shift < 0:
            raise ValueError(f"{self.name}: the output at position i - {self.shift} predicts token i; token "
                             f"{start} has no position before it (a shifted model needs a non-empty prompt)")
        return start - self.shift, end - self.shift

    def check_first_position(self, masked) -> None:
        """The first-position rule of a shifted model: position 0 is never a target (nothing precedes it)."""
        if self.shift and bool(masked[:, : self.shift].any()):
            raise ValueError(f"{self.name}: position 0 is masked, but a shifted model predicts token i from "
                             "position i - 1; position 0 must be a prompt token (BOS) that carries no loss")

    # ------------------------------------------------------------ facts

    def mask_token_id(self, tokenizer, config) -> int:
        """The mask token id: config `mask_token_id` and the tokenizer's (`mask_token` or `<|mdm_mask|>`) must agree;
        either alone is used; neither, or a config value that is only the config class's default, is an error."""
        from_config = getattr(config, "mask_token_id", None)
        from_tok = getattr(tokenizer, "mask_token_id", None)
        if from_tok is None and hasattr(tokenizer, "get_vocab"):
            vocab = tokenizer.get_vocab()
            from_tok = next((vocab[n] for n in self.mask_token_names if n in vocab), None)
        if from_config is not None and from_tok is not None and int(from_config) != int(from_tok):
            default = " (LLaDAConfig's default: config.json has no mask_token_id)" \
                if self.config_mask_default == int(from_config) else ""
            raise ConfigError("model", f"config mask_token_id {from_config}{default} but the tokenizer's mask token "
                              f"is {from_tok}; set mask_token_id in config.json to the tokenizer's {MASK_TOKEN}")
        if from_config is not None and from_tok is None and self.config_mask_default == int(from_config):
            raise ConfigError("model", f"config mask_token_id {from_config} is LLaDAConfig's default, not a mask token, "
                              f"and the tokenizer has no {MASK_TOKEN}; set mask_token_id in config.json")
        if from_config is None and from_tok is None:
            raise ConfigError("model", f"no mask token: the config has no mask_token_id, the tokenizer no mask_token "
                              f"and none of {', '.join(self.mask_token_names)}; set mask_token_id in config.json or "
                              "tokenizer.mask_token")
        return int(from_config if from_config is not None else from_tok)

    def prepare_tokenizer(self, tokenizer):
        """The family's tokenizer conventions, applied where every tokenizer is loaded (`mdm.adapters.load_model`)."""
        return tokenizer

    def enable_checkpointing(self, model) -> None:
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise ConfigError("training.gradient_checkpointing",
                              f"{type(model).__name__} cannot checkpoint activations; set it to false")
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def batches(lengths, batch_size: int, padded: bool = True) -> list[list[int]]:
    """Index batches of at most `batch_size`, in order; unpadded (`Adapter.can_pad` False): each batch holds sequences of
    one length (stable order by length), so no row is ever padded."""
    order = list(range(len(lengths))) if padded else sorted(range(len(lengths)), key=lambda i: lengths[i])
    out: list[list[int]] = []
    for i in order:
        if out and len(out[-1]) < batch_size and (padded or lengths[out[-1][-1]] == lengths[i]):
            out[-1].append(i)
        else:
            out.append([i])
    return out


def shard(chunks: list, rank: int, world: int) -> list[tuple]:
    """(chunk, keep) of this rank: every world-th chunk, then repeats of the first one (keep False) until every rank
    has the same number of forwards (FSDP and ZeRO-3 gather parameters in each forward, on all ranks together)."""
    mine = chunks[rank::world]
    return [(c, True) for c in mine] + [(chunks[0], False)] * (-(-len(chunks) // world) - len(mine))


def forward_params(model) -> set[str]:
    try:
        inner = getattr(model, "module", model)
        return set(inspect.signature(getattr(inner, "forward", inner)).parameters)
    except (TypeError, ValueError):
        return set()


def read_config(path, where: str = "model", code_dir=None):
    """The config of a hub id or local folder, read by its family's adapter (found from config.json's model_type)."""
    # deferred: transformers (slow import), only when a config is read
    from transformers import PretrainedConfig

    from mdm.adapters import find  # deferred: mdm.adapters imports this module (circular)

    if looks_like_path(str(path)) and not Path(path).expanduser().is_dir():
        raise ConfigError(where, f"{path}: no such model folder (a local folder holds config.json and the weights "
                          "written by save_pretrained; a hub id is 'org/name')")
    if not (Path(path) / "config.json").is_file() and Path(path).exists():
        raise ConfigError(where, f"{path} is not a saved model folder (no config.json)")
    path = str(Path(path).expanduser()) if looks_like_path(str(path)) else str(path)
    try:
        raw, _ = PretrainedConfig.get_config_dict(path)
        cls = find(raw.get("model_type"), raw.get("architectures"))
        return cls.read_config(path, raw, code_dir=code_dir, where=where)
    except OSError as e:  # a hub id that is not in the local cache while offline, a typo, no internet
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        why = "HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache" if offline else \
            str(e).splitlines()[0]
        raise ConfigError(where, f"cannot load {path!r} from the hub: {why}; download it first "
                          f"(huggingface-cli download {path}) or give a local model folder") from None
