"""Tokenizer + backbone of a run: tiny (built from its size, optionally from a cached pretrained base) or hub.

Tiny base models: the paper fine-tunes a pretrained model, so the tiny preset first pretrains ONE base per
(task, family, settings) with the plain MDM loss (ARM: next-token loss) on the task's text, every token
carrying loss, and caches it under `<cache>/bases/<task>-<family>-<hash>/` (the hash covers the settings and the
code that trains it, `mdm.cache.derivation`). Every method and seed then
fine-tunes from the same base. Building is deterministic and guarded by a file lock, so concurrent runs
build it once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from mdm.cache import cache_root as root
from mdm.cache import config_hash, derivation
from mdm.data import get_task
from mdm.data.dataset import fingerprint
from mdm.io import file_lock
from mdm.train.config import ModelConfig, RunConfig

LONG_TOKEN = 64  # characters per token above which a text is left out of a tiny BPE's training
BASE_FORMAT = "tiny-base-v1"  # the folder's layout; the code that trains a base is in its key (mdm.cache.derivation)


def cache_root(cfg: ModelConfig) -> Path:
    return root(cfg.cache_dir)


def _quiet_transformers():
    # deferred: transformers (slow import); this module is torch- and transformers-free
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def tiny_tokenizer(cfg: ModelConfig, task: str, options: dict | None = None, max_chars: int | None = None):
    """The tiny BPE of a task: trained on a fixed draw of the task's training text (cached by content), or the
    task's own (its `tokenizer` hook). `options`: the task's loader options (generated tasks: level). `max_chars`:
    texts longer than this are left out of the BPE's training (a 10 MB row would take minutes)."""
    # deferred: mdm.data's tokenizer imports transformers
    from mdm.data import build_tokenizer, get_task, make_task

    options = options or {}
    own = get_task(task).hook("tokenizer")
    if own is not None:  # a task plugin with its own vocabulary (its `tokenizer` hook)
        return own(cache_root(cfg), **options)
    if get_task(task).counts_tokens and "tokenizer" not in options:  # the vocabulary's text only: no run's rows
        # deferred: mdm.data imports transformers
        from mdm.data.tasks import approx_tokens

        options = {**options, "count_tokens": approx_tokens}
    examples = make_task(task, "train", n=cfg.tokenizer_examples, seed=0, **options) if _generated(task) else \
        make_task(task, "train", n=cfg.tokenizer_examples, **options)
    texts = [e["prompt"] + "\n" + e["response"] for e in examples]
    if max_chars is not None:  # a row that cannot fit max_length (it is dropped from training) trains no BPE either
        texts = [t for t in texts if len(t) <= max_chars] or texts[:1]
    return build_tokenizer(texts, vocab_size=cfg.vocab_size, cache_dir=cache_root(cfg) / "tokenizers",
                           digit_space=cfg.digit_space)


def counting_tokenizer(cfg: RunConfig):
    """The run's tokenizer, before its model is built, for a task that selects its rows by token count
    (OpenScience: `mdm.data.tasks.token_counter`, the count its evaluation uses too); None for other tasks."""
    from mdm.data import get_task  # deferred: mdm.data's tokenizer imports transformers

    if not get_task(cfg.data.task).counts_tokens:
        return None
    m = cfg.model
    if m.source == "tiny" and m.base in (None, "auto"):
        # the run's own tokenizer: the same texts as build_model's (the tiny base's tokenizer too)
        return tiny_tokenizer(m, cfg.data.task, cfg.data.options, max_chars=cfg.data.max_length * LONG_TOKEN)
    _quiet_transformers()
    from transformers import AutoTokenizer  # deferred: transformers (slow import)

    return AutoTokenizer.from_pretrained(str(m.base or m.source), trust_remote_code=True)


def _generated(task: str) -> bool:
    return get_task(task).generated


def load_dtype(cfg: RunConfig):
    """The dtype a pretrained model is loaded in: bfloat16 inside a DeepSpeed launch with bf16 (DeepSpeed casts the
    module to bf16 and keeps its own fp32 master weights, so an fp32 load only doubles every rank's host RAM: 32 GB
    for an 8B model), else float32 (DDP's autocast and FSDP's mixed precision keep fp32 weights in the module)."""
    import torch  # deferred: torch, heavy; this module is torch-free

    from mdm.train.trainer import use_bf16  # deferred: mdm.train.trainer imports this module (and torch)

    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"  # set by accelerate launch
    return torch.bfloat16 if deepspeed and use_bf16(cfg.training.bf16) else torch.float32


def build_model(cfg: RunConfig, dtype=None):
    """(model, tokenizer) for a run: float32 (mixed precision is the accelerator's job), pretrained weights in
    `dtype` (default `load_dtype`: bf16 under DeepSpeed)."""
    _quiet_transformers()
    m = cfg.model
    causal = m.family == "arm"
    dtype = load_dtype(cfg) if dtype is None else dtype
    if m.base:
        path = ensure_base(cfg) if m.base == "auto" else Path(m.base)
        from mdm.adapters import load_model  # deferred: mdm.adapters imports torch

        return load_model(path, causal=causal, dtype=dtype, code_dir=m.code_dir)
    if m.source == "tiny":
        # deferred: mdm.models imports torch and transformers
        from mdm.models import TinySize, build_tiny_model

        tokenizer = tiny_tokenizer(m, cfg.data.task, cfg.data.options, max_chars=cfg.data.max_length * LONG_TOKEN)
        model = build_tiny_model(tokenizer, causal=causal, seed=m.init_seed, size=TinySize(**m.size.model_dump()))
        return model, tokenizer
    from mdm.models import load_hub_model  # deferred: mdm.models imports torch and transformers

    return load_hub_model(m.source, causal=causal, dtype=dtype, code_dir=m.code_dir)


# ---------------------------------------------------------------- tiny base models


def base_run_config(cfg: RunConfig, output_dir: str) -> RunConfig:
    """The pretraining run that makes the base model of `cfg` (depends only on task, family and settings)."""
    m, p = cfg.model, cfg.model.pretrain
    return RunConfig.model_validate({
        "name": f"base {cfg.data.task}-{m.family}",  # two bases (ARM, then MDM): two progress labels
        "model": {**m.model_dump(), "base": None},
        "data": {"task": cfg.data.task, "n_train": p.n_examples, "max_length": cfg.data.max_length,
                 "heldout_fraction": 0.0, "data_seed": p.data_seed, "full_sequence": p.full_sequence,
                 "eos_pad": cfg.data.eos_pad,
                 "options": cfg.data.options},
        "method": "standard",
        "training": {"max_steps": p.max_steps, "global_batch_size": p.global_batch_size,
                     "micro_batch_size": p.micro_batch_size, "lr": p.lr, "schedule": p.schedule,
                     "warmup_steps": p.warmup_steps, "weight_decay": p.weight_decay, "seed": p.seed,
                     "bf16": False, "threads": cfg.training.threads, "progress": cfg.training.progress},
        "eval": {"heldout": False},
        "output_dir": output_dir,
    })


def base_key(cfg: RunConfig) -> str:
    probe = base_run_config(cfg, "-").trajectory_dict()
    probe["model"].pop("cache_dir", None)
    what = [BASE_FORMAT, derivation("base"), probe]
    if cfg.data.task == "dataset":  # the user's file may change under the same options: key on its content too
        what.append(fingerprint(cfg.data.options))
    return f"{cfg.data.task}-{cfg.model.family}-{config_hash(what)}"


def base_dir(cfg: RunConfig) -> Path:
    return cache_root(cfg.model) / "bases" / base_key(cfg)


DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "MASTER_ADDR",
             "MASTER_PORT", "TORCHELASTIC_RUN_ID", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP")


def ensure_base(cfg: RunConfig) -> Path:
    """The cached base model of `cfg` (built now if missing). Returns the saved model folder."""
    final = base_dir(cfg)
    if (final / "config.json").is_file():
        return final
    with file_lock(final.with_name(final.name + ".lock")):
        if (final / "config.json").is_file():
            return final
        work = final.with_name(final.name + ".build")
        base_cfg = base_run_config(cfg, str(work))
        if cfg.model.family == "mdm" and cfg.model.pretrain.init_from_arm:
            arm = cfg.model_copy(update={"model": cfg.model.model_copy(update={"family": "arm"})})
            base_cfg = base_cfg.model_copy(update={"model": base_cfg.model.model_copy(
                update={"base": str(ensure_base(arm))})})
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # inside a distributed launch: pretrain in a separate single process
            env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
            work.mkdir(parents=True, exist_ok=True)
            (work / "base_config.json").write_text(base_cfg.model_dump_json())
            subprocess.run([sys.executable, "-m", "mdm.train.model", str(work / "base_config.json")], env=env,
                           check=True)
        else:
            _pretrain(base_cfg)
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(work / "model", tmp)
        shutil.copy(work / "train_log.jsonl", tmp / "pretrain_log.jsonl")
        os.replace(tmp, final)
        shutil.rmtree(work, ignore_errors=True)
    return final


def _pretrain(base_cfg: RunConfig) -> None:
    from mdm.train.trainer import Trainer  # deferred: mdm.train.trainer imports this module (and torch)

    result = Trainer(base_cfg).train()
    if result["status"] != "done":
        raise RuntimeError(f"building the tiny base model failed: {result['reason']}")


if __name__ == "__main__":  # pretraining subprocess of ensure_base
    _pretrain(RunConfig.model_validate_json(Path(sys.argv[1]).read_text()))
