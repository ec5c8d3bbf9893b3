"""Hooks for the benchmark runner, the trainer and the data registry (`mdm bench benchmarks/table2.yaml`).

Two ways in, both from a `mdm.train.config.RunConfig` of task "text-to-image":

A. `run_tiny(run_config)` (tiny preset): the whole cell (`mdm.t2i.cell.run_cell`) in this package's
   single-process loop; returns a dict with the keys of `mdm.train.trainer.train_run`'s result (status,
   steps, tokens_seen, passes, n_train, model_params, wall_time_s, metrics, ...), metrics already holding
   `score` = CLIP score, `clip_score`, `clip_score_torchmetrics`, `attribute_accuracy` and per attribute.
   The run config's sections map onto `T2IConfig` (`t2i_config_from_run`).

B. Through the generic trainer (what the paper preset needs, with MMaDA + MAGVIT-v2):
   `chat_examples(split, n, seed)` gives {prompt, response, answer, task, id} examples whose response is the
   image-token text (`<|img_c|>`...), `text_to_image_tokenizer()` the tokenizer with those tokens, and
   `evaluate_run(run_dir, settings)` decodes and scores a saved model (writes `metrics` like mdm.eval).
"""

from __future__ import annotations

import math
from pathlib import Path

from mdm.t2i.cell import T2IConfig, run_cell

TASK = "text-to-image"
PILOT_KEYS = ("a", "b", "c", "seed", "grid", "restarts", "full_second_moment", "token_budget")


def t2i_config_from_run(cfg) -> T2IConfig:
    """Map a RunConfig (tiny model source) onto the t2i cell's config.

    model.size -> size; model.pretrain.{n_examples, data_seed, max_steps, global_batch_size, lr, schedule,
    warmup_steps, weight_decay, seed} -> the base; data.{n_train, data_seed}; training.{epochs | max_steps,
    global_batch_size, lr, schedule, warmup_steps, weight_decay, grad_clip, threads}; ppots_pilot;
    eval.accuracy.{clip_model, limit, steps (decoding steps), schedule, temperature}; model.cache_dir."""
    m, p, d, t = cfg.model, cfg.model.pretrain, cfg.data, cfg.training
    n_train = d.n_train or 1600
    n_fit = n_train  # the cell fine-tunes on all n_train pairs; its evaluation uses held-out captions
    steps = t.max_steps or max(1, round(t.epochs * math.ceil(n_fit / t.global_batch_size)))
    acc = dict(cfg.eval.accuracy or {})
    decoding = {k: acc.pop(k) for k in ("steps", "schedule", "temperature") if k in acc}
    acc.pop("metric", None)
    evaluation = {k: acc[k] for k in ("clip_model", "limit", "split") if k in acc}
    if "clip_model" in evaluation and evaluation["clip_model"] not in ("tiny",) and "/" not in evaluation["clip_model"]:
        evaluation["clip_model"] = "tiny"
    return T2IConfig.from_dict({
        "n_train": n_train, "data_seed": d.data_seed, "size": m.size.model_dump(exclude={"max_position_embeddings"}),
        "init_seed": m.init_seed,
        "base": {"n_pretrain": p.n_examples, "pretrain_seed": p.data_seed},
        "pretrain": {"steps": p.max_steps, "global_batch_size": p.global_batch_size, "lr": p.lr,
                     "schedule": p.schedule, "warmup_steps": p.warmup_steps, "weight_decay": p.weight_decay,
                     "seed": p.seed},
        "training": {"steps": steps, "global_batch_size": t.global_batch_size, "lr": t.lr, "schedule": t.schedule,
                     "warmup_steps": t.warmup_steps, "weight_decay": t.weight_decay, "grad_clip": t.grad_clip},
        "ppots_pilot": {k: v for k, v in cfg.ppots_pilot.model_dump().items() if k in PILOT_KEYS},
        "decoding": decoding, "eval": evaluation,
        "threads": t.threads or 1, "cache_dir": str(Path(m.cache_dir) / "t2i") if m.cache_dir else None,
    })


def run_tiny(cfg, echo=None) -> dict:
    """Train + evaluate one tiny t2i run of the bench plan; a train_run-shaped result (see module docstring)."""
    result = run_cell(cfg.method, cfg.training.seed, cfg.output_dir, t2i_config_from_run(cfg),
                      echo=echo or (lambda *_: None))
    return {**result, "reason": "", "name": cfg.name, "family": "mdm", "num_processes": 1,
            "n_heldout": result["n_eval"], "dropped": 0}


# ---------------------------------------------------------------- the task plugin's hooks (mdm.data.tasks)

PAPER_MISSING = (
    "text-to-image with a hub model needs MMaDA's MAGVIT-v2 image tokenizer and the text-to-image-2M loader wired "
    "into the generic trainer, which this version does not do yet; the tiny preset (model.source: tiny) runs")


def check_run(cfg) -> None:
    """`mdm bench` spec check: the run config maps onto the cell's config (ConfigError naming the key if not)."""
    t2i_config_from_run(cfg)


def run(cfg) -> dict:
    """`mdm bench` run hook: train, decode and score one run; the result carries its record's `eval`."""
    if cfg.model.source != "tiny":
        from mdm.errors import ConfigError

        raise ConfigError("model.source", PAPER_MISSING)
    result = run_tiny(cfg)
    return {**result, "eval": {TASK: {k: result.get(k) for k in ("n_eval", "decoding", "clip", "reference", "grid")}}}


def report(rows, roots, out) -> list[str]:
    """`mdm report` hook: attribute accuracy per attribute, the tiny CLIP's retrieval check and a grid of generated
    samples, from the run folders (reads artifacts, never trains); the README lines that link them."""
    from mdm.t2i.table2 import summarize_runs

    for root in roots:
        summarize_runs(root, out, echo=lambda *_: None)
    return ["- [text-to-image: CLIP score, attribute accuracy per attribute, tiny-CLIP check](text_to_image.md)",
            "", "![generated samples: the same held-out captions for ground truth and every method](samples_grid.png)"]


# ---------------------------------------------------------------- the generic trainer's path (B)


def text_to_image_tokenizer(cache_dir=None):
    """The tiny t2i tokenizer: caption BPE + one `<|img_c|>` token per code (len = model vocabulary)."""
    from mdm.t2i.data import T2ICodec

    return T2ICodec.tiny(cache_dir).tokenizer


def chat_examples(split: str = "train", n: int = 1000, seed: int = 0, cache_dir=None) -> list[dict]:
    """`make_task`-style examples: prompt = caption, response = the image's code tokens as text."""
    from mdm.t2i.data import T2ICodec, image_text
    from mdm.t2i.scenes import make_examples

    codec = T2ICodec.tiny(cache_dir)
    examples = make_examples(split, n, seed)
    codes = codec.image_tokenizer.encode([e["image"] for e in examples]).tolist() if examples else []
    return [{"prompt": e["caption"], "response": image_text(c), "answer": e["scene"].to_dict(), "task": TASK,
             "id": e["id"]} for e, c in zip(examples, codes)]


def evaluate_run(run_dir: str | Path, settings: dict | None = None, scorer=None) -> dict:
    """Decode the held-out captions with a saved run (`<run_dir>/model` or the folder itself) and score them.
    settings: T2IConfig sections (`eval`, `decoding`, `image_tokenizer`, `cache_dir`). Returns the metrics."""
    from transformers import AutoTokenizer

    from mdm.t2i.cell import _image_tokenizer, evaluate
    from mdm.t2i.data import T2ICodec
    from mdm.t2i.train import load_model

    run_dir = Path(run_dir)
    model_dir = run_dir / "model" if (run_dir / "model" / "config.json").is_file() else run_dir
    config = T2IConfig.from_dict(settings)
    codec = T2ICodec.build(AutoTokenizer.from_pretrained(str(model_dir)), _image_tokenizer(config))
    result = evaluate(load_model(model_dir), codec, config, out_dir=run_dir, scorer=scorer)
    return {**result["metrics"], "reference": result["reference"], "decoding": result["decoding"],
            "clip": result["clip"], "grid": result["grid"]}
