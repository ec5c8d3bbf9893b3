"""Single-process MDM training on t2i items with any method preset (the tiny preset's CPU loop).

The step semantics are the trainer's (`mdm.train.trainer`) for one process and one micro-batch: the global
batch of step s is an epoch-wise shuffle keyed by (seed, epoch); `objective(model, batch, seed, step,
global_batch_size)` draws t and the masks keyed by (seed, step, row); AdamW (no decay on 1-D parameters),
HF-style warmup + linear / cosine / constant schedule, gradient clipping. The loss is the library's
MDMObjective, so Standard / P-POTS / MIRROR / P-POTS+MIRROR apply unchanged: caption tokens are the prompt
(never masked), image codes + EOS the response.

`ensure_base` pretrains the tiny base once (Standard loss; optionally every token eligible, like the
trainer's tiny bases) and caches it; `fit_ppots_density` runs the P-POTS pilot (mdm.variance) on a model and caches the
fitted density.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from mdm.objective import MDMObjective, Method
from mdm.objective.rng import generator
from mdm.t2i.data import collate
from mdm.train.trainer import lr_factor


@dataclass
class TrainSettings:
    steps: int
    global_batch_size: int = 32
    lr: float = 1e-3
    schedule: str = "linear"  # linear | cosine | constant
    warmup_steps: int = 0
    weight_decay: float = 0.1
    grad_clip: float | None = 1.0
    seed: int = 42
    threads: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def global_batch(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    per_epoch = math.ceil(n / batch_size)
    epoch, b = divmod(step, per_epoch)
    order = torch.randperm(n, generator=generator(seed, "data-order", epoch)).tolist()
    return order[b * batch_size : (b + 1) * batch_size]


def train_mdm(model, items: list[dict], method, *, mask_token_id: int, pad_id: int, settings: TrainSettings,
              full_sequence: bool = False, log_path: str | Path | None = None) -> dict:
    """Train `model` in place; returns {"steps", "losses", "wall_time_s", "tokens_seen", "passes"}.

    full_sequence: every token carries loss (pretraining); otherwise the caption part is the prompt."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    if full_sequence:
        items = [{**it, "prompt_length": 0} for it in items]
    objective = MDMObjective(method if isinstance(method, Method) else Method.build(method), mask_token_id)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=settings.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, settings.steps, settings.warmup_steps, settings.schedule))
    model.train()
    losses, tokens, passes = [], 0, 0
    log = open(log_path, "w") if log_path else None
    start = time.perf_counter()
    try:
        for step in range(settings.steps):
            idx = global_batch(len(items), settings.global_batch_size, settings.seed, step)
            batch = collate([items[i] for i in idx], pad_id)
            out = objective(model, batch, seed=settings.seed, step=step, global_batch_size=len(idx))
            if not torch.isfinite(out.loss):
                raise FloatingPointError(f"non-finite loss at step {step + 1}")
            out.loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip or float("inf"))
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            loss = float(out.row_losses.mean())
            losses.append(loss)
            tokens += int(batch.attention_mask.sum())
            passes += out.passes
            if log:
                log.write(json.dumps({"step": step + 1, "loss": loss, "grad_norm": float(grad_norm),
                                      "lr": sched.get_last_lr()[0], "masked_tokens": out.masked_tokens}) + "\n")
    finally:
        if log:
            log.close()
    model.eval()
    return {"steps": settings.steps, "losses": losses, "wall_time_s": time.perf_counter() - start,
            "tokens_seen": tokens, "passes": passes}


# ---------------------------------------------------------------- the cached tiny base


def quiet_transformers() -> None:
    """No per-load / per-save progress bars and info lines from transformers in the benchmark logs."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def build_model(codec, size: dict, init_seed: int = 0):
    from mdm.models import TinySize, build_tiny_model

    quiet_transformers()
    return build_tiny_model(codec.tokenizer, seed=init_seed, size=TinySize(**size))


def load_model(folder: str | Path):
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()


def ensure_base(codec, *, size: dict, pretrain: dict, data: dict, init_seed: int = 0, cache_dir=None,
                echo=None) -> Path:
    """The cached tiny base model (pretrained with the Standard loss on `data["n_pretrain"]` training examples
    drawn with `data["pretrain_seed"]`; with `data["full_sequence"]` the captions carry loss too); built now if
    missing. Returns the saved model folder
    (`<cache>/base-<hash>/model`)."""
    from mdm.t2i.cache import cached_dir
    from mdm.t2i.scenes import make_examples

    key = {"format": "t2i-base-v1", "image_tokenizer": codec.image_tokenizer.describe(),
           "codebook_hash": _codebook_hash(codec), "vocab": codec.vocab_size, "size": size,
           "pretrain": pretrain, "data": data, "init_seed": init_seed}

    def build(folder: Path) -> None:
        if echo:
            echo(f"building the tiny t2i base ({pretrain['steps']} steps)...")
        model = build_model(codec, size, init_seed)
        items = codec.items(make_examples("train", data["n_pretrain"], seed=data["pretrain_seed"]))
        result = train_mdm(model, items, "standard", mask_token_id=codec.mask_id, pad_id=codec.pad_id,
                           settings=TrainSettings(**pretrain), full_sequence=bool(data.get("full_sequence")),
                           log_path=folder / "pretrain_log.jsonl")
        model.save_pretrained(folder / "model")
        codec.tokenizer.save_pretrained(folder / "model")
        (folder / "pretrain_result.json").write_text(json.dumps({k: v for k, v in result.items() if k != "losses"}))

    return cached_dir("base", key, build, cache_dir) / "model"


def _codebook_hash(codec) -> str | None:
    import hashlib

    book = getattr(codec.image_tokenizer, "codebook", None)
    return None if book is None else hashlib.sha256(book.tobytes()).hexdigest()[:16]


# ---------------------------------------------------------------- P-POTS density ('auto')


def needs_density(method: Method) -> bool:
    ts = method.t_sampler
    return ts.name in ("ppots", "ppots_released") and isinstance(ts.config.density, str) and ts.config.density == "auto"


def fit_ppots_density(model, items: list[dict], codec, *, a: int, b: int, c: int, seed: int = 0,
                      grid: str = "midpoint", restarts: int = 20, full_second_moment: bool = False,
                      token_budget: int = 16384, cache_key: dict | None = None, cache_dir=None) -> dict:
    """P-POTS density from a Standard pilot on `model` (mdm.variance: a sequences x b t-values x c masks),
    fitted by the EPR KL fit. With `cache_key` the artifact is cached (the pilot of a base is shared by all
    seeds and methods)."""
    from mdm.t2i.cache import cached_dir

    def fit() -> dict:
        from mdm.variance.profile import Profiler

        order = torch.randperm(len(items), generator=generator(seed, "ppots-pilot")).tolist()[:a]
        x0 = collate([items[i] for i in order], codec.pad_id)
        profiler = Profiler(model, x0, mask_token_id=codec.mask_id, b=b, c=c, grid=grid, seed=seed,
                            token_budget=token_budget)
        return profiler.fit_ppots(seed=seed, restarts=restarts, full_second_moment=full_second_moment)

    if cache_key is None:
        return fit()

    def build(folder: Path) -> None:
        (folder / "ppots.json").write_text(json.dumps(fit()))

    folder = cached_dir("ppots", {"format": "t2i-ppots-v1", **cache_key, "a": a, "b": b, "c": c, "seed": seed,
                                  "grid": grid, "restarts": restarts, "full_second_moment": full_second_moment},
                        build, cache_dir)
    return json.loads((folder / "ppots.json").read_text())


def install_density(method: Method, artifact: dict) -> None:
    from mdm.variance.profile import install_density as install

    install(method.t_sampler, artifact)
