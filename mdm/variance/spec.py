"""The profiler's YAML spec: model + data + pilot sizes, and what it loads.

    name: variance_tiny
    seed: 0
    threads: 1                                             # optional: torch CPU threads
    data:  {task: gsm8k, split: train, n: 2000, max_length: 192}
       or: {task: dataset, options: {path: my.jsonl}}       # your own data (README "Your own data")
    model: {vocab_size: 1024, warmup_steps: 150}          # tiny backbone, warmed up, cached
       or: {checkpoint: PATH}                              # a save_pretrained folder with its tokenizer
       or: {hub: GSAI-ML/LLaDA-8B-Instruct, dtype: bfloat16}
    pilot: {a: 12, b: 24, c: 12, grid: midpoint, token_budget: 16384, batch_size: 32, bootstrap: 500}
    fit:   {mix: 0.0, restarts: 20, full_second_moment: false}
    gradient: {params: last, projection: 128, a: 8, b: 12, c: 6}   # params: lora (a LoRA run's model/)

The default model is the tiny bidirectional Gemma3 backbone (`mdm.models.build_tiny_model`) with a
byte-level BPE trained on the task's text, warmed up by `model.warmup_steps` steps of Standard MDM
training on the same data (the profiler says more about a model that has learned something). The
warmed-up weights are cached under $MDM_CACHE (default ~/.cache/mdm)/variance, keyed by a hash of
everything that determines them. ARM mode uses the causal twin, warmed up the same way with the ARM loss
(or `model.arm_checkpoint`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import ConfigDict, Field

from mdm.adapters import load_model
from mdm.cache import writable_cache
from mdm.data import get_task, make_task
from mdm.data.dataset import fingerprint
from mdm.errors import ConfigError
from mdm.objective import ARMObjective, MDMObjective
from mdm.progress import progress as progress_bar
from mdm.schema import Strict, read_yaml, validate_model

WARMUP_VERSION = "warmup-v1"  # bump when the warm-up recipe changes, so stale caches are not reused


class _Strict(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    task: str = "gsm8k"
    split: str = "train"
    n: int | None = Field(2000, ge=1, description="examples loaded (warm-up data and pilot pool)")
    max_length: int = Field(192, ge=4, description="longer sequences are dropped, never truncated")
    root: str | None = Field(None, description="data folder for gsm8k / hitab (default: their loaders')")
    seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict, description="loader options (task dataset: path, ...)")

    def spec(self):
        """The TaskSpec (a `dataset` task's is built from its options)."""
        return get_task(self.task, self.options)


class ModelConfig(_Strict):
    checkpoint: str | None = None
    hub: str | None = None
    arm_checkpoint: str | None = None
    vocab_size: int = Field(1024, ge=16)
    size: dict[str, int] = Field(default_factory=dict, description="TinySize overrides")
    init_seed: int = 0
    warmup_steps: int = Field(150, ge=0)
    warmup_batch: int = Field(16, ge=1)
    warmup_lr: float = Field(2e-3, gt=0)
    device: str = "auto"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class PilotConfig(_Strict):
    a: int = Field(12, ge=1, description="clean sequences x0")
    b: int = Field(24, ge=1, description="t grid values")
    c: int = Field(12, ge=1, description="masks per (x0, t)")
    grid: Literal["midpoint", "authors"] = "midpoint"
    token_budget: int = Field(16384, ge=1, description="max rows x views x padded length per forward")
    batch_size: int = Field(32, ge=1, description="global batch n of the batch view (StraTS)")
    bootstrap: int = Field(500, ge=0, description="bootstrap replicates over x0 for standard errors")


class FitConfig(_Strict):
    mix: float = Field(0.0, ge=0.0, lt=1.0)
    restarts: int = Field(20, ge=1)
    seed: int = 0
    full_second_moment: bool = False
    strict: bool = Field(False, description="a non-converged or failed fit is an error, not a warning")
    points: int = Field(501, ge=11, description="grid points of the written density")


class GradientConfig(_Strict):
    params: str = Field("last", description="'last' (last transformer block), 'lora' (the LoRA factors of a LoRA "
                        "run's model/) or a regex on Linear module names")
    projection: int = Field(128, ge=0, description="random projection dimension; 0 = exact gradients")
    a: int = Field(8, ge=1)
    b: int = Field(12, ge=1)
    c: int = Field(6, ge=1)


class Spec(_Strict):
    name: str = "variance"
    seed: int = 0
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's); --threads overrides")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    pilot: PilotConfig = PilotConfig()
    fit: FitConfig = FitConfig()
    gradient: GradientConfig = GradientConfig()
    methods: list[str] = Field(default_factory=lambda: ["standard", "mirror", "multisample2", "ppots",
                                                        "ppots+mirror", "strats"])


def load_spec(path: str | Path | dict) -> Spec:
    """The spec of a YAML file (or a mapping); every problem is one ConfigError naming the key and what is allowed."""
    if isinstance(path, dict):
        return validate_model(Spec, path, "spec")
    if not Path(path).is_file():
        raise ConfigError("--config", f"no such file {str(path)!r}")
    return validate_model(Spec, read_yaml(path) or {}, str(path))


# ---------------------------------------------------------------------------------------------- loading


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    mask_token_id: int
    items: list[dict]  # tokenized examples (tokenize_examples), the pilot's pool
    model_id: str
    data_id: str
    arm: Any = None
    warmup: dict | None = None


def cache_dir() -> Path:
    return writable_cache() / "variance"


def device_of(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_examples(data: DataConfig) -> list[dict]:
    options = ({"root": data.root} if data.root else {}) | data.options
    examples = make_task(data.task, data.split, n=data.n, seed=data.seed, **options)
    if not examples:
        raise ConfigError("data", f"task {data.task!r} split {data.split!r} has no examples")
    return examples


def tokenize(tokenizer, examples: list[dict], data: DataConfig) -> list[dict]:
    from mdm.data import tokenize_examples  # deferred: mdm.data's collation imports transformers

    items, dropped = tokenize_examples(tokenizer, examples, data.spec(), data.max_length)
    if not items:
        raise ConfigError("data.max_length", f"all {dropped} examples are longer than max_length="
                          f"{data.max_length} tokens; raise it")
    return items


def _load_checkpoint(path: str, dtype):
    if not Path(path).is_dir():
        raise ConfigError("model.checkpoint", f"no such folder {path!r} (a save_pretrained directory)")
    return load_model(path, causal=None, dtype=dtype)  # as saved, by its family's adapter (LLaDA: remote code)


def attach_lora(model, checkpoint: str):
    """A LoRA run's model with its adapter attached unmerged: `<run>/model/` holds the merged weights W + s B A, so the
    adapter (`<run>/adapter/`) is loaded and s B A taken off the base weights. The model computes the same function
    and its LoRA factors are the trained ones, so their gradients are those of the end of the run."""
    # deferred: peft (imports transformers), only for a LoRA checkpoint
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    adapter = Path(checkpoint).parent / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise ConfigError("gradient.params", f"'lora' needs a LoRA run: {adapter} (next to model.checkpoint) has no "
                          "adapter_config.json; set model.checkpoint to the model/ folder of a run with "
                          "training.peft.lora")
    with warnings.catch_warnings():  # peft reads transformers' deprecated is_gradient_checkpointing
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = PeftModel.from_pretrained(model, str(adapter))
    with torch.no_grad():
        for layer in peft_model.modules():
            if isinstance(layer, LoraLayer):
                for name in layer.active_adapters:
                    layer.get_base_layer().weight -= layer.get_delta_weight(name)
    return peft_model.get_base_model()


def load(spec: Spec, *, arm: bool = False, progress: bool = True, lora: bool = False) -> Loaded:
    """Data, tokenizer, model (and its ARM twin when `arm`), ready for the pilot; `lora`: a LoRA run's model with
    its adapter attached (`attach_lora`)."""
    # deferred: mdm.data's tokenizer and mdm.models import transformers
    from mdm.data import build_tokenizer, mask_token_id_of
    from mdm.models import load_hub_model

    m, data = spec.model, spec.data
    if not sys.stderr.isatty():  # no weight-loading bars ('\r' lines) in logs
        # deferred: transformers (slow import), only for a hub model
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    dtype = getattr(torch, m.dtype)
    device = device_of(m.device)
    examples = load_examples(data)
    warm = None
    if m.checkpoint and m.hub:
        raise ConfigError("model", "give either checkpoint or hub, not both")
    if lora and not m.checkpoint:
        raise ConfigError("gradient.params", "'lora' profiles a LoRA run: set model.checkpoint to its model/ folder")
    if m.checkpoint:
        model, tokenizer = _load_checkpoint(m.checkpoint, dtype)
        model_id = m.checkpoint
        if lora:
            model = attach_lora(model, m.checkpoint)
            model_id += " + adapter (LoRA)"
    elif m.hub:
        model, tokenizer = load_hub_model(m.hub, causal=False, dtype=dtype)
        model_id = m.hub
    else:
        tokenizer = build_tokenizer([e["prompt"] + "\n" + e["response"] for e in examples], m.vocab_size)
        model = None
    items = tokenize(tokenizer, examples, data)
    if model is None:
        model, warm = tiny_model(spec, tokenizer, items, causal=False, progress=progress)
        model_id = warm["id"]
    arm_model = None
    if arm:
        if m.arm_checkpoint:
            arm_model, _ = _load_checkpoint(m.arm_checkpoint, dtype)
        elif m.checkpoint or m.hub:
            raise ConfigError("model.arm_checkpoint", "ARM mode needs the causal twin of this model: give "
                              "model.arm_checkpoint (a causal LM with the same tokenizer)")
        else:
            arm_model, _ = tiny_model(spec, tokenizer, items, causal=True, progress=progress)
        arm_model = arm_model.to(device=device, dtype=dtype).eval()
    model = model.to(device=device, dtype=dtype).eval()
    data_id = f"{data.task}/{data.split}(n={data.n}, max_length={data.max_length}, kept={len(items)})"
    return Loaded(model, tokenizer, mask_token_id_of(tokenizer, model.config), items, model_id, data_id,
                  arm_model, warm)


def tiny_model(spec: Spec, tokenizer, items: list[dict], *, causal: bool, progress: bool = True):
    """The tiny backbone, warmed up by `warmup_steps` steps (cached on disk); -> (model, info)."""
    from mdm.models import TinySize, build_tiny_model  # deferred: mdm.models imports transformers

    m = spec.model
    try:
        size = TinySize(**m.size)
    except TypeError as e:
        raise ConfigError("model.size", f"{e}; allowed: {', '.join(TinySize.__dataclass_fields__)}") from None
    model = build_tiny_model(tokenizer, causal=causal, seed=m.init_seed, size=size)
    kind = "arm" if causal else "mdm"
    ident = f"tiny-gemma3-{kind}(hidden={size.hidden_size}, layers={size.num_hidden_layers}, " \
            f"vocab={len(tokenizer)}, warmup={m.warmup_steps})"
    info = {"id": ident, "steps": m.warmup_steps, "cached": False, "final_loss": None}
    if m.warmup_steps == 0:
        return model, info
    what = {"v": WARMUP_VERSION, "causal": causal, "size": vars(size), "model": m.model_dump(exclude={"device"}),
            "data": spec.data.model_dump(), "seed": spec.seed, "vocab": tokenizer.get_vocab()}
    if spec.data.task == "dataset":  # the user's file may change under the same options
        what["data_content"] = fingerprint(spec.data.options)
    key = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:20]
    path = cache_dir() / f"{kind}-{key}.pt"
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["state_dict"])
        return model, info | {"cached": True, "final_loss": saved.get("final_loss"), "path": str(path)}
    final = warm_up(model, tokenizer, items, spec, causal=causal, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"state_dict": model.state_dict(), "final_loss": final}, tmp)
    tmp.replace(path)  # atomic: concurrent runs never read a half-written file
    return model, info | {"final_loss": final, "path": str(path)}


def warm_up(model, tokenizer, items: list[dict], spec: Spec, *, causal: bool, progress: bool = True) -> float:
    """Standard MDM (or ARM) training on the pilot's data: AdamW, 10-step linear warm-up, grad clip 1."""
    from mdm.data import Collator, mask_token_id_of  # deferred: mdm.data's collation imports transformers

    m = spec.model
    device = device_of(m.device)
    model.to(device).train()
    collator = Collator(tokenizer, spec.data.spec(), spec.data.max_length)
    objective = ARMObjective() if causal else MDMObjective("standard", mask_token_id_of(tokenizer, model.config))
    opt = torch.optim.AdamW(model.parameters(), lr=m.warmup_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
    rng = np.random.default_rng([spec.seed, 7])
    order, pos, recent = rng.permutation(len(items)), 0, []
    bar = progress_bar(m.warmup_steps, f"warm-up ({'arm' if causal else 'mdm'})", enabled=progress)
    for step in range(m.warmup_steps):
        if pos + m.warmup_batch > len(order):
            order, pos = rng.permutation(len(items)), 0
        rows = order[pos: pos + m.warmup_batch]
        pos += m.warmup_batch
        batch = collator([items[i] for i in rows]).to(device)
        out = objective(model, batch, seed=spec.seed, step=step)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        recent = (recent + [out.loss.item()])[-20:]
        bar.set_postfix(loss=f"{np.mean(recent):.3f}")
        bar.update(1)
    bar.close()
    model.eval()
    return float(np.mean(recent))


def pick_x0(items: list[dict], a: int, seed: int, tokenizer, task, max_length: int,
            pad_carries_loss: bool = False):
    """`a` clean sequences drawn without replacement with the seed, collated into one MDMBatch (`pad_carries_loss`:
    models that cannot be shown padding, `mdm.data.Collator`)."""
    from mdm.data import Collator  # deferred: mdm.data's collation imports transformers

    if a > len(items):
        raise ConfigError("pilot.a", f"asks for {a} clean sequences; the data has {len(items)} usable ones")
    rows = np.random.default_rng([seed, 11]).choice(len(items), size=a, replace=False)
    return Collator(tokenizer, task, max_length, pad_carries_loss)([items[i] for i in sorted(rows)])
