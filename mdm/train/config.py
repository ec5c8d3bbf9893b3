"""Run configuration: one pydantic model per section (unknown keys are errors), loaded from YAML.

    cfg = load_run_config("run.yaml", overrides=["training.lr=1e-4", "method=ppots+mirror"])

Every validation problem becomes one ConfigError: `run.yaml: training.lrr: unknown key; allowed: ...`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from mdm.data.dataset import absolute_paths, check_source
from mdm.data.tasks import TASKS, get_task
from mdm.errors import ConfigError
from mdm.remote_code import check_code_dir, looks_like_path
from mdm.schema import Strict, apply_overrides, read_yaml, validate_model
from mdm.tiny import TinySize
from mdm.train.trackers import check_trackers

TINY = TinySize()


class TinySizeConfig(Strict):
    """Tiny bidirectional Gemma3 backbone; the defaults are the one tiny size (`mdm.tiny.TinySize`)."""

    hidden_size: int = Field(TINY.hidden_size, ge=8)
    num_hidden_layers: int = Field(TINY.num_hidden_layers, ge=1)
    num_attention_heads: int = Field(TINY.num_attention_heads, ge=1)
    num_key_value_heads: int = Field(TINY.num_key_value_heads, ge=1)
    head_dim: int = Field(TINY.head_dim, ge=2)
    intermediate_size: int = Field(TINY.intermediate_size, ge=1)
    max_position_embeddings: int = Field(TINY.max_position_embeddings, ge=16)
    query_pre_attn_scalar: int = Field(TINY.query_pre_attn_scalar, ge=1, description="attention logits * this ** -0.5 (Gemma3)")
    rope_theta: float = Field(TINY.rope_theta, gt=0, description="RoPE base of the (full-attention) layers")
    tie_word_embeddings: bool = Field(TINY.tie_word_embeddings, description="share the input embedding with the output layer")

    @model_validator(mode="after")
    def _heads(self):
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                             f"num_key_value_heads ({self.num_key_value_heads})")
        return self


class PretrainConfig(Strict):
    """The tiny preset's base model: a short pretraining on the task's text (every token carries loss),
    built once per (task, family, settings), cached, and fine-tuned by every method and seed."""

    n_examples: int = Field(2000, ge=8)
    data_seed: int = 1  # generated tasks: a different draw of examples than the fine-tuning data (seed 0)
    max_steps: int = Field(300, ge=1)
    global_batch_size: int = Field(32, ge=1)
    micro_batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(20, ge=0)
    schedule: Literal["linear", "cosine", "constant"] = "cosine"
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0
    # MDM family: start from the ARM family's base (same settings, built and cached as for the ARM rows) and
    # adapt it with this pretraining, as Dream / DiffuLLaMA do (a tiny MDM pretrained from scratch for up to
    # 3000 steps does not copy even the object word from the prompt; adapted from the ARM base it does)
    init_from_arm: bool = False
    # every token carries loss (the default); false: the prompt is never masked, as in the SFT (the base is then
    # pretrained on the conditional objective itself: a weak model of the task, as a hub model is before its SFT)
    full_sequence: bool = True


class ModelConfig(Strict):
    family: Literal["mdm", "arm"] = "mdm"  # arm: causal attention, next-token loss (the ARM rows)
    source: str = "tiny"  # "tiny" (built from `size`) or a hub id / local Hugging Face folder
    size: TinySizeConfig = TinySizeConfig()
    vocab_size: int = Field(512, ge=64, description="tiny BPE vocabulary")
    tokenizer_examples: int = Field(2000, ge=10, description="generated examples the tiny BPE is trained on")
    digit_space: bool = Field(False, description="tiny BPE: keep the space before a number on its first digit")
    base: str | None = None  # "auto" (tiny: cached pretrained base), a checkpoint folder, or null (random init)
    pretrain: PretrainConfig = PretrainConfig()
    init_seed: int = 0
    cache_dir: str | None = None  # default $MDM_CACHE or ~/.cache/mdm
    # the model's code where it is not on the hub: MMaDA's `models/` package folder (git clone
    # https://github.com/Gen-Verse/MMaDA: <clone>/models); default $MDM_MMADA_CODE. Not part of the trajectory.
    code_dir: str | None = None

    @model_validator(mode="after")
    def _base(self):
        if self.base == "auto" and self.source != "tiny":
            raise ValueError("base 'auto' builds a tiny base model; with a hub source give a checkpoint path or null")
        return self


class DataConfig(Strict):
    task: str
    n_train: int | None = Field(None, ge=2, description="examples before the held-out split (generated: default 1000)")
    max_length: int = Field(512, ge=8)  # longer sequences are dropped, never truncated (the paper's rule)
    heldout_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    split_seed: int = 0  # the held-out split is the same for every training seed
    data_seed: int = 0  # generated tasks: which draw of examples
    full_sequence: bool = False  # pretraining: the prompt carries loss too
    # LLaDA SFT: responses are padded with EOS tokens that carry loss, so the model learns to end a canvas
    # longer than its answer with EOS. N: every MDM response (+ its EOS) is padded to N tokens (use the
    # decoding canvas, gen_length); longer responses stay as they are. Not applied to ARM runs.
    eos_pad: int | None = Field(None, ge=1)
    # a fixed canvas: every MDM row EOS-padded (padding carrying loss, as eos_pad's) to exactly N tokens in all, rows
    # longer dropped as over max_length. A model that ignores attention masks (the hub's LLaDA code) otherwise sees
    # its micro-batch's padding, and a row's loss changes with the rows it is batched with (mdm.train.data.pad_to_canvas)
    pad_to: int | None = Field(None, ge=8)
    options: dict[str, Any] = {}  # loader options (hitab: root; openscience: n_eval, ...; dataset: path, ...)

    @model_validator(mode="after")
    def _dataset_paths(self):
        if self.task == "dataset":  # the record names the user's files absolutely (mdm eval from anywhere)
            self.options = absolute_paths(self.options)
        return self

    def spec(self):
        """The run's TaskSpec (ISAD delimiters, SyRM syntax, scorer); a `dataset` run's is built from its options."""
        return get_task(self.task, self.options)


class LoraConfig(Strict):
    """LoRA adapters (peft) on the backbone's Linear layers; everything else is frozen."""

    r: int = Field(8, ge=1, description="adapter rank")
    alpha: float = Field(16.0, gt=0, description="scale alpha / r of the adapter's update")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    # null: the family's attention and MLP projections (mdm.adapters: Adapter.lora_targets); the output layer
    # is never adapted
    target_modules: list[str] | None = None


class PeftConfig(Strict):
    lora: LoraConfig


class TrainingConfig(Strict):
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="overrides epochs")
    global_batch_size: int = Field(32, ge=1)
    micro_batch_size: int = Field(4, ge=1)
    lr: float = Field(5e-5, gt=0)
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    warmup_steps: int = Field(0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.1, ge=0.0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = Field(1e-8, gt=0)
    grad_clip: float | None = Field(1.0, gt=0)
    bf16: Literal["auto"] | bool = "auto"  # auto: on CUDA devices that support it, never on CPU
    gradient_checkpointing: bool = False
    # MIRROR / multisample: each view its own forward + backward (one view's activations alive at a time; the
    # gradient equals the joint pass's, mdm.objective.MDMObjective.loss_by_view), not one forward over all views
    separate_views: bool = False
    seed: int = 42
    # auto: 4 checkpoints per run (the last one kept); null: none, so a killed run restarts from step 0.
    # Checkpoints never change the trajectory (a resumed run is bit-identical to the unbroken one).
    checkpoint_every: Annotated[int, Field(ge=1)] | Literal["auto"] | None = Field(
        "auto", description="optimizer steps between checkpoints")
    keep_checkpoints: int = Field(1, ge=1)
    # wall-clock policy: also a checkpoint whenever this many minutes of training passed since the last one (or the
    # start); the main process decides, every process saves. With checkpoint_every null: by time alone.
    checkpoint_minutes: float | None = Field(None, gt=0)
    # model-only snapshots (weights + tokenizer, no optimizer: an 8B model in bf16 is 16 GB, a full ZeRO-2 checkpoint
    # 112 GB) under <run>/models/step_N, for evaluating a run along the way; null: none. LoRA runs save the adapter.
    save_model_every: int | None = Field(None, ge=1, description="optimizer steps between model-only snapshots")
    keep_models: int | None = Field(None, ge=1, description="model-only snapshots kept (the latest); null: all")
    threads: int | None = Field(None, ge=1, description="torch CPU threads per process")
    progress: bool = True
    # stderr not a terminal: a plain progress line every N steps (auto: about 10 per run)
    log_every: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    report_to: list[str] = Field([], description="accelerate trackers (tensorboard, wandb, ...): <output_dir>/trackers")
    peft: PeftConfig | None = None  # null: full fine-tune


class EvalConfig(Strict):
    heldout: bool = True  # MDM ELBO / ARM NLL on the held-out split after training
    t_grid: int = Field(8, ge=1, description="midpoint grid of t for the held-out MDM loss")
    batch_size: int = Field(32, ge=1)
    max_examples: int | None = Field(None, ge=1)
    seed: int = 0  # the held-out masks: the same for every run
    accuracy: dict[str, Any] | None = None  # settings for mdm.eval.api.evaluate_run; null = skip


class PilotConfig(Strict):
    """P-POTS pilot sizes (METHODS.md 3) for density 'auto': a sequences x b t-values x c masks."""

    a: int = Field(15, ge=2)
    b: int = Field(70, ge=10, description="t grid points (the EPR fit needs >= 10)")
    c: int = Field(15, ge=2)
    seed: int = 0
    grid: Literal["midpoint", "authors"] = "midpoint"  # authors: t_j = j/b, j = 1..b-1
    restarts: int = Field(20, ge=0, description="random L-BFGS-B restarts of the EPR fit")
    full_second_moment: bool = False  # w = sqrt(E[l^2 | t]) including the between-x0 spread
    token_budget: int = Field(16384, ge=64, description="tokens per pilot forward batch")


class RunConfig(Strict):
    name: str | None = None
    model: ModelConfig = ModelConfig()
    data: DataConfig
    method: Any = "standard"  # preset name or mapping for mdm.objective.Method.build
    training: TrainingConfig = TrainingConfig()
    eval: EvalConfig = EvalConfig()
    ppots_pilot: PilotConfig = PilotConfig()
    output_dir: str

    def trajectory_dict(self) -> dict:
        """What determines the training trajectory (a resumed run must match it)."""
        d = self.model_dump(mode="json")
        for key in ("output_dir", "name"):
            d.pop(key)
        d["training"].pop("checkpoint_minutes")  # when to save, not what is trained (old run folders still match)
        for key in ("checkpoint_every", "keep_checkpoints", "save_model_every", "keep_models", "threads", "progress",
                    "log_every", "report_to"):
            d["training"].pop(key)
        if not d["training"]["separate_views"]:  # the default: as before the key existed (old run folders match)
            d["training"].pop("separate_views")
        if d["training"]["peft"] is None:  # full fine-tune: as before the key existed (old run folders still match)
            d["training"].pop("peft")
        if d["data"]["pad_to"] is None:  # no fixed canvas: as before the key existed (old run folders still match)
            d["data"].pop("pad_to")
        if d["model"]["pretrain"]["full_sequence"]:  # the default: as before the key existed (the same base keys)
            d["model"]["pretrain"].pop("full_sequence")
        d.pop("eval")
        d["model"].pop("code_dir")  # where the code lives, not what is trained (old run folders still match)
        return d


def check_method(cfg: RunConfig, where: str) -> None:
    """Build the method once, so an unknown preset or option is reported before any compute."""
    # deferred: mdm.objective imports torch; config errors come before any torch import
    from mdm.objective import Method

    if cfg.model.family == "arm":
        if cfg.method not in ("standard", {"preset": "standard"}):
            raise ConfigError(f"{where}: method", "ARM models train with the next-token loss; method must be "
                              "'standard'")
        return
    try:
        Method.build(cfg.method)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e.where}", e.problem) from None


def check_eos_pad(cfg: RunConfig, where: str) -> None:
    """An MDM's EOS padding (the decoding canvas) must leave room for a prompt within max_length."""
    d = cfg.data
    if d.eos_pad and cfg.model.family == "mdm" and d.eos_pad >= min(d.max_length, d.pad_to or d.max_length):
        limit = "pad_to" if d.pad_to and d.pad_to < d.max_length else "max_length"
        raise ConfigError(f"{where}: data.eos_pad", f"{d.eos_pad} leaves no room for a prompt within {limit} "
                          f"{min(d.max_length, d.pad_to or d.max_length)}; use an eos_pad below it (the decoding "
                          "canvas, gen_length)")
    if d.pad_to and d.pad_to > d.max_length:
        raise ConfigError(f"{where}: data.pad_to", f"{d.pad_to} is longer than max_length {d.max_length}; use a "
                          "pad_to at most max_length (every row is padded to it)")


def check_run(cfg: RunConfig, where: str) -> None:
    """Checks across keys, cheapest first (the method check is last: it imports torch)."""
    t = cfg.training
    if t.micro_batch_size > t.global_batch_size:
        raise ConfigError(f"{where}: training.micro_batch_size", f"{t.micro_batch_size} is larger than "
                          f"global_batch_size {t.global_batch_size}")
    check_trackers(t.report_to, where)
    if t.peft is not None and importlib.util.find_spec("peft") is None:
        raise ConfigError(f"{where}: training.peft", "LoRA needs the 'peft' package, which is not installed; "
                          "pip install peft (or set training.peft: null for a full fine-tune)")
    if cfg.data.task not in TASKS:
        raise ConfigError(f"{where}: data.task", f"unknown task {cfg.data.task!r}; allowed: {', '.join(TASKS)}")
    try:
        cfg.data.spec()  # a task declared by its options (dataset): a bad scorer or option is named now
        if cfg.data.task == "dataset":
            check_source(cfg.data.options, accuracy=cfg.eval.accuracy is not None)
        own = TASKS[cfg.data.task].hook("check")
        if own is not None:  # a task plugin checks its own settings
            own(cfg)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e.where}", e.problem) from None
    check_eos_pad(cfg, where)
    base = cfg.model.base
    if base not in (None, "auto") and not (Path(base) / "config.json").is_file():
        raise ConfigError(f"{where}: model.base", f"{base}: not a saved model folder (no config.json); allowed: "
                          "'auto' (tiny), null (random init) or a folder written by save_pretrained")
    source = cfg.model.source
    if source != "tiny" and looks_like_path(source) and not Path(source).expanduser().is_dir():
        raise ConfigError(f"{where}: model.source", f"{source}: no such model folder; allowed: 'tiny', a hub id "
                          "('org/name') or a local folder written by save_pretrained")
    if cfg.model.code_dir is not None:
        try:
            check_code_dir(cfg.model.code_dir)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e.where}", e.problem) from None
    check_method(cfg, where)


def load_run_config(path: str | Path, overrides: list[str] | None = None, output_dir: str | None = None) -> RunConfig:
    data = read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), f"expected a mapping of sections; got {type(data).__name__}")
    data = apply_overrides(data, overrides or [])
    if output_dir is not None:
        data["output_dir"] = output_dir
    cfg = validate_model(RunConfig, data, str(path))
    check_run(cfg, str(path))
    return cfg
