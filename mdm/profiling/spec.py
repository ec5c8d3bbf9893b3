"""The profiler's YAML spec: the model and data of a run, in `mdm train`'s own language, plus the pilot sizes.

    name: variance_tiny
    seed: 0
    threads: 1                                              # optional: torch CPU threads
    model: {source: tiny, vocab_size: 512, base: auto, pretrain: {...}}   # mdm train's `model` section
    data:  {task: arith, n_train: 800, max_length: 128}                  # mdm train's `data` section
    pilot: {a: 12, b: 24, c: 12, grid: midpoint, token_budget: 16384, batch_size: 32, bootstrap: 500}
    fit:   {mix: 0.0, restarts: 20, full_second_moment: false}
    gradient: {params: last, projection: 128, a: 8, b: 12, c: 6}   # params: lora (a LoRA run's model/)

`model` and `data` are the sections of a run config (`mdm.train.config`: the same keys, defaults and checks), so
the profiler sees exactly the model a run with them starts from: `base: auto` is the run's cached tiny base
(pretrained once, shared with `mdm train` and `mdm bench`), `base: PATH` a saved folder (a run's `model/`),
`source: ORG/NAME` a hub model. The pilot's pool is the run's training items (after the held-out split and the
EOS padding). ARM mode (`--methods arm`) profiles the causal twin: the ARM family of the same settings for a tiny
model, else `arm_base` (a causal LM folder with the same tokenizer).
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from mdm.errors import ConfigError
from mdm.eval.api import resolve_device
from mdm.schema import Strict, read_yaml, validate_model
from mdm.train.config import DataConfig, ModelConfig, RunConfig, check_run
from mdm.train.data import build_data, load_examples
from mdm.train.model import base_dir, build_model, counting_tokenizer


class PilotConfig(Strict):
    a: int = Field(12, ge=1, description="clean sequences x0")
    b: int = Field(24, ge=1, description="t grid values")
    c: int = Field(12, ge=1, description="masks per (x0, t)")
    grid: Literal["midpoint", "authors"] = "midpoint"
    token_budget: int = Field(16384, ge=1, description="max rows x views x padded length per forward")
    batch_size: int = Field(32, ge=1, description="global batch n of the batch view (StraTS)")
    bootstrap: int = Field(500, ge=0, description="bootstrap replicates over x0 for standard errors")


class FitConfig(Strict):
    mix: float = Field(0.0, ge=0.0, lt=1.0)
    restarts: int = Field(20, ge=1)
    seed: int = 0
    full_second_moment: bool = False
    strict: bool = Field(False, description="a non-converged or failed fit is an error, not a warning")
    points: int = Field(501, ge=11, description="grid points of the written density")


class GradientConfig(Strict):
    params: str = Field("last", description="'last' (last transformer block), 'lora' (the LoRA factors of a LoRA "
                        "run's model/) or a regex on Linear module names")
    projection: int = Field(128, ge=0, description="random projection dimension; 0 = exact gradients")
    a: int = Field(8, ge=1)
    b: int = Field(12, ge=1)
    c: int = Field(6, ge=1)


class Spec(Strict):
    name: str = "variance"
    seed: int = 0
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's); --threads overrides")
    model: ModelConfig = ModelConfig()
    data: DataConfig
    arm_base: str | None = Field(None, description="ARM mode with a non-tiny model: its causal twin's folder")
    device: str = "auto"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    pilot: PilotConfig = PilotConfig()
    fit: FitConfig = FitConfig()
    gradient: GradientConfig = GradientConfig()
    methods: list[str] = Field(default_factory=lambda: ["standard", "mirror", "multisample2", "ppots",
                                                        "ppots+mirror", "strats"])

    def run_config(self, progress: bool = True, **model) -> RunConfig:
        """The run whose starting model and training data this spec profiles (`model`: keys changed, e.g. the
        family of the ARM twin)."""
        return RunConfig(model=self.model.model_copy(update=model), data=self.data, output_dir="-",
                         training={"threads": self.threads, "progress": progress})


def load_spec(path: str | Path | dict) -> Spec:
    """The spec of a YAML file (or a mapping); every problem is one ConfigError naming the key and what is allowed."""
    where = "spec" if isinstance(path, dict) else str(path)
    if not isinstance(path, dict) and not Path(path).is_file():
        raise ConfigError("--config", f"no such file {str(path)!r}")
    spec = validate_model(Spec, path if isinstance(path, dict) else read_yaml(path) or {}, where)
    check_run(spec.run_config(), where)  # the run config's own checks (task, base folder, source), before compute
    return spec


# ---------------------------------------------------------------------------------------------- loading


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    mask_token_id: int
    items: list[dict]  # the run's tokenized training items, the pilot's pool
    model_id: str
    data_id: str
    arm: Any = None
    base: dict | None = None  # the cached tiny base it starts from (model.base: auto)


def attach_lora(model, checkpoint: str):
    """A LoRA run's model with its adapter attached unmerged: `<run>/model/` holds the merged weights W + s B A, so the
    adapter (`<run>/adapter/`) is loaded and s B A taken off the base weights. The model computes the same function
    and its LoRA factors are the trained ones, so their gradients are those of the end of the run."""
    # deferred: peft (imports transformers), only for a LoRA run
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    adapter = Path(checkpoint).parent / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise ConfigError("gradient.params", f"'lora' needs a LoRA run: {adapter} (next to model.base) has no "
                          "adapter_config.json; set model.base to the model/ folder of a run with "
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
    its adapter attached (`attach_lora`). The model is the one a run with these sections starts from (a tiny base
    is built now if it is not cached)."""
    from mdm.data import mask_token_id_of  # deferred: mdm.data's collation imports transformers

    if not sys.stderr.isatty():  # no weight-loading bars ('\r' lines) in logs
        # deferred: transformers (slow import), only to silence its bars
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    cfg, dtype, device = spec.run_config(progress), getattr(torch, spec.dtype), resolve_device(spec.device)
    if lora and (spec.model.base in (None, "auto")):
        raise ConfigError("gradient.params", "'lora' profiles a LoRA run: set model.base to its model/ folder")
    # a data problem is named before any model is built (a base may pretrain); OpenScience counts the run's tokens
    examples = load_examples(cfg.data, counting_tokenizer(cfg))
    model, tokenizer = build_model(cfg, dtype=dtype)
    m = spec.model
    base = base_dir(cfg) if m.base == "auto" else None
    model_id = f"tiny base {base.name}" if base else m.base or (m.source if m.source != "tiny" else "tiny (random init)")
    if lora:
        model = attach_lora(model, spec.model.base)
        model_id += " + adapter (LoRA)"
    data = build_data(cfg.data, tokenizer, examples=examples, model_config=model.config)
    arm_model = None
    if arm:
        if spec.arm_base:
            arm_model, _ = build_model(spec.run_config(progress, family="arm", base=spec.arm_base), dtype=dtype)
        elif spec.model.source != "tiny" or spec.model.base not in (None, "auto"):
            raise ConfigError("arm_base", "ARM mode needs the causal twin of this model: give arm_base (a causal LM "
                              "folder with the same tokenizer)")
        else:
            arm_model, _ = build_model(spec.run_config(progress, family="arm"), dtype=dtype)
        arm_model = arm_model.to(device=device, dtype=dtype).eval()
    model = model.to(device=device, dtype=dtype).eval()
    d = spec.data
    data_id = f"{d.task}/train(n_train={d.n_train}, max_length={d.max_length}, kept={len(data.train)})"
    return Loaded(model, tokenizer, mask_token_id_of(tokenizer, model.config), data.train, model_id, data_id,
                  arm_model, {"path": str(base)} if base else None)


def pick_x0(items: list[dict], a: int, seed: int, tokenizer, task, max_length: int,
            pad_carries_loss: bool = False):
    """`a` clean sequences drawn without replacement with the seed, collated into one MDMBatch (`pad_carries_loss`:
    models that cannot be shown padding, `mdm.data.Collator`)."""
    from mdm.data import Collator  # deferred: mdm.data's collation imports transformers

    if a > len(items):
        raise ConfigError("pilot.a", f"asks for {a} clean sequences; the data has {len(items)} usable ones")
    rows = np.random.default_rng([seed, 11]).choice(len(items), size=a, replace=False)
    return Collator(tokenizer, task, max_length, pad_carries_loss)([items[i] for i in sorted(rows)])
