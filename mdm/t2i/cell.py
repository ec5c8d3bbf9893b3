"""One cell of Table 2 on the tiny preset: (method, seed) -> fine-tune, generate, CLIP score, attribute accuracy.

    from mdm.t2i import T2IConfig, run_cell
    result = run_cell("ppots+mirror", seed=42, out_dir="results/runs/table2/text-to-image/ppots+mirror/seed42")
    result["metrics"]["clip_score"], result["metrics"]["attribute_accuracy"], result["grid"]

Steps (every built artifact is cached, keyed by its settings, and shared by all cells):
  1. the image codebook (k-means over 4x4 patches) and the caption BPE  -> `T2ICodec`;
  2. the tiny base: a bidirectional Gemma3 (`mdm.models.build_tiny_model`, vocab = text + codes), pretrained
     with the Standard loss on a separate draw of training pairs (a short, weaker run of the same t2i
     objective);
  3. P-POTS methods: the density fitted from a Standard pilot on the base (a x b x c), cached per base;
  4. fine-tuning with the method on `n_train` training pairs (caption = prompt, never masked);
  5. greedy MaskGIT decoding of one image per held-out caption (the 80 test-split captions by default);
  6. CLIP score with the tiny CLIP (or any open_clip model/tag), cross-checked with torchmetrics, and the
     deterministic attribute accuracy (colour, shape, count, position; `all` = every one right);
  7. `result.json`, `samples.jsonl` (caption, codes, checks, CLIP score per prompt), `samples.png`,
     `train_log.jsonl` and the fine-tuned `model/` in `out_dir`.
A finished cell (result.json with status done) is returned as is when run again.

Reference rows computed with every evaluation (the same captions): ground-truth renders and their codebook
reconstructions (the ceiling: 100% attribute accuracy on this task), and the chance level of a random scene.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mdm.objective import Method

RESULT = "result.json"


@dataclass
class T2IConfig:
    """The tiny preset (sizes measured to take ~1-2 CPU minutes per cell; see the README numbers)."""

    n_train: int = 1600  # fine-tuning pairs (a fresh draw of training captions and renders)
    data_seed: int = 0
    image_tokenizer: str = "tiny"
    size: dict = field(default_factory=lambda: {"hidden_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4,
                                                "num_key_value_heads": 2, "head_dim": 32, "intermediate_size": 384})
    init_seed: int = 0
    # full_sequence: the caption tokens carry loss in pretraining too (off: pretraining is the t2i objective,
    # so the base is a weak t2i model, as MMaDA is before its t2i SFT; on, 1,200 steps leave it near chance)
    base: dict = field(default_factory=lambda: {"n_pretrain": 4000, "pretrain_seed": 1, "full_sequence": False})
    pretrain: dict = field(default_factory=lambda: {"steps": 2000, "global_batch_size": 32, "lr": 2e-3,
                                                    "schedule": "cosine", "warmup_steps": 50, "weight_decay": 0.0,
                                                    "grad_clip": 1.0, "seed": 0})
    training: dict = field(default_factory=lambda: {"steps": 600, "global_batch_size": 16, "lr": 1e-3,
                                                    "schedule": "linear", "warmup_steps": 0, "weight_decay": 0.1,
                                                    "grad_clip": 1.0})
    ppots_pilot: dict = field(default_factory=lambda: {"a": 8, "b": 20, "c": 4, "seed": 0, "grid": "midpoint",
                                                       "restarts": 20, "full_second_moment": False,
                                                       "token_budget": 16384})
    # greedy MaskGIT over the 36 codes; accuracy moves with steps (Standard seed 42: 12 -> 25%, 24 -> 57%, 36 -> 71%)
    decoding: dict = field(default_factory=lambda: {"steps": 24, "schedule": "cosine", "temperature": 0.0})
    eval: dict = field(default_factory=lambda: {"split": "test", "limit": None, "clip_model": "tiny", "grid": 32,
                                                "seed": 0})
    threads: int | None = 1  # torch threads; 1 is fastest for this model size on a shared CPU
    cache_dir: str | None = None

    @classmethod
    def from_dict(cls, d: dict | None) -> T2IConfig:
        """Overrides on top of the defaults; nested sections merge key by key. Unknown keys are errors."""
        from mdm.errors import ConfigError

        base = cls()
        d = dict(d or {})
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"t2i.{unknown[0]}", f"unknown key; allowed: {', '.join(cls.__dataclass_fields__)}")
        for k, v in d.items():
            cur = getattr(base, k)
            if isinstance(cur, dict) and isinstance(v, dict):
                bad = sorted(set(v) - set(cur)) if k not in ("size",) else []
                if bad:
                    raise ConfigError(f"t2i.{k}.{bad[0]}", f"unknown key; allowed: {', '.join(cur)}")
                setattr(base, k, {**cur, **v})
            else:
                setattr(base, k, v)
        return base

    def to_dict(self) -> dict:
        return asdict(self)


def _echo_none(*_):
    pass


def prepare(config: T2IConfig, echo=_echo_none):
    """(codec, base model folder, fine-tuning items) for a config; builds the cached artifacts if missing."""
    from mdm.t2i.data import T2ICodec, tiny_text_tokenizer
    from mdm.t2i.scenes import make_examples
    from mdm.t2i.train import ensure_base

    codec = T2ICodec.build(tiny_text_tokenizer(), _image_tokenizer(config))
    base = ensure_base(codec, size=config.size, pretrain=config.pretrain, data=config.base,
                       init_seed=config.init_seed, cache_dir=config.cache_dir, echo=echo)
    items = codec.items(make_examples("train", config.n_train, seed=config.data_seed))
    return codec, base, items


def _image_tokenizer(config: T2IConfig):
    from mdm.t2i.image_tokenizer import load_image_tokenizer, tiny_image_tokenizer

    if config.image_tokenizer == "tiny":
        return tiny_image_tokenizer(config.cache_dir)
    return load_image_tokenizer(config.image_tokenizer)


def run_cell(method, seed: int, out_dir: str | Path, config: T2IConfig | dict | None = None, echo=_echo_none,
             scorer=None) -> dict:
    """Fine-tune the cached base with `method` and `seed`, evaluate, write `out_dir` (see module docstring)."""
    from mdm.t2i.train import (
        TrainSettings,
        fit_ppots_density,
        install_density,
        load_model,
        needs_density,
        train_mdm,
    )

    config = config if isinstance(config, T2IConfig) else T2IConfig.from_dict(config)
    out = Path(out_dir)
    done = _read_json(out / RESULT)
    if done and done.get("status") == "done":
        return done
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    started = time.perf_counter()
    codec, base, items = prepare(config, echo)
    model = load_model(base)
    m = Method.build(method)
    timings = {}
    if needs_density(m):
        t0 = time.perf_counter()
        artifact = fit_ppots_density(model, items, codec, **config.ppots_pilot,
                                     cache_key={"base": base.parent.name, "n_train": config.n_train,
                                                "data_seed": config.data_seed},
                                     cache_dir=config.cache_dir)
        install_density(m, artifact)
        (out / "ppots.json").write_text(json.dumps(artifact))
        timings["ppots_fit_s"] = round(time.perf_counter() - t0, 3)
    settings = TrainSettings(**config.training, seed=seed, threads=config.threads)
    echo(f"  fine-tuning {_name(method)} seed {seed}: {settings.steps} steps x {settings.global_batch_size}")
    train = train_mdm(model, items, m, mask_token_id=codec.mask_id, pad_id=codec.pad_id, settings=settings,
                      log_path=out / "train_log.jsonl")
    timings["train_s"] = round(train["wall_time_s"], 3)
    t0 = time.perf_counter()
    evaluation = evaluate(model, codec, config, out_dir=out, scorer=scorer, title=f"{_name(method)} seed {seed}")
    timings["eval_s"] = round(time.perf_counter() - t0, 3)
    model.save_pretrained(out / "model")
    codec.tokenizer.save_pretrained(out / "model")
    losses = train["losses"]
    tail = losses[-max(1, len(losses) // 10):]
    result = {
        "status": "done", "task": "text-to-image", "preset": "tiny", "method": _name(method), "seed": seed,
        "metrics": {**evaluation["metrics"], "train_loss_last10pct": sum(tail) / len(tail)},
        "reference": evaluation["reference"], "decoding": evaluation["decoding"],
        "clip": evaluation["clip"], "grid": evaluation["grid"],
        "steps": train["steps"], "tokens_seen": train["tokens_seen"], "passes": train["passes"],
        "n_train": len(items), "n_eval": evaluation["metrics"]["n_eval"],
        "model_params": sum(p.numel() for p in model.parameters()), "base": str(base),
        "image_tokenizer": codec.image_tokenizer.describe(), "timings": timings,
        "wall_time_s": round(time.perf_counter() - started, 3), "config": config.to_dict(),
    }
    _write_json(out / RESULT, result)
    return result


def _name(method) -> str:
    return method if isinstance(method, str) else getattr(method, "name", str(method))


# ---------------------------------------------------------------- evaluation


def eval_captions(config: T2IConfig) -> list[tuple[str, object]]:
    from mdm.t2i.scenes import captions_of

    pairs = captions_of(config.eval.get("split", "test"))
    limit = config.eval.get("limit")
    return pairs[:limit] if limit else pairs


@torch.no_grad()
def evaluate(model, codec, config: T2IConfig | dict | None = None, out_dir: str | Path | None = None, scorer=None,
             title: str | None = None) -> dict:
    """Generate one image per evaluation caption and score it. Returns {"metrics", "reference", "decoding",
    "clip", "grid"}; with `out_dir`, also writes samples.jsonl and samples.png there."""
    import random

    from mdm.t2i.clip import ClipScorer
    from mdm.t2i.generate import ImageDecodeConfig, generate_codes
    from mdm.t2i.grid import save_grid
    from mdm.t2i.scenes import attribute_accuracy, chance_accuracy, check_attributes, render

    config = config if isinstance(config, T2IConfig) else T2IConfig.from_dict(config)
    pairs = eval_captions(config)
    captions, scenes = [c for c, _ in pairs], [s for _, s in pairs]
    decoding = ImageDecodeConfig(**config.decoding)
    codes = generate_codes(model, codec, captions, decoding)
    images = codec.image_tokenizer.decode(codes)
    scorer = scorer or ClipScorer.from_spec(config.eval.get("clip_model", "tiny"), cache_dir=config.cache_dir)
    clip = scorer.score(images, captions)
    acc = attribute_accuracy(images, scenes)
    checks = [check_attributes(img, sc) for img, sc in zip(images, scenes)]

    rng = random.Random(f"t2i-eval-reference:{config.eval.get('seed', 0)}")
    truth = [render(sc, rng) for sc in scenes]
    recon = codec.image_tokenizer.decode(codec.image_tokenizer.encode(truth))
    ref_clip = scorer.score(truth, captions, cross_check=False)["clip_score"]
    reference = {"ground_truth": {"clip_score": ref_clip, **_prefixed(attribute_accuracy(truth, scenes))},
                 "tokenizer_reconstruction": {"clip_score": scorer.score(recon, captions, cross_check=False)["clip_score"],
                                              **_prefixed(attribute_accuracy(recon, scenes))},
                 "chance": _prefixed(chance_accuracy())}
    metrics = {"score": clip["clip_score"], "clip_score": clip["clip_score"],
               "clip_score_torchmetrics": clip["clip_score_torchmetrics"],
               "attribute_accuracy": acc["all"], **{f"attribute_{k}": v for k, v in acc.items() if k != "all"},
               "n_eval": len(captions)}
    grid = None
    if out_dir is not None:
        out = Path(out_dir)
        with open(out / "samples.jsonl", "w") as f:
            for cap, sc, cd, ck, cs in zip(captions, scenes, codes.tolist(), checks, clip["clip_score_per_sample"]):
                f.write(json.dumps({"caption": cap, "scene": sc.to_dict(), "codes": cd, "checks": ck,
                                    "clip_score": cs}) + "\n")
        pick = grid_indices(len(images), config.eval.get("grid", 32))
        grid = str(save_grid(images[pick], out / "samples.png", [captions[i] for i in pick],
                             [checks[i]["all"] for i in pick],
                             title=(f"{title}: " if title else "") + f"CLIP {clip['clip_score']:.1f}, "
                             f"attributes {acc['all']:.0f}% (green = all right)"))
    return {"metrics": metrics, "reference": reference, "decoding": decoding.to_dict(),
            "clip": {"model": clip["clip_model"], "definition": clip["clip_definition"],
                     "negative_cosines": clip["negative_cosines"]}, "grid": grid,
            "images": images, "checks": checks, "captions": captions}


def grid_indices(n: int, k: int) -> list[int]:
    """k evaluation rows spread evenly over the n (the captions are grouped by colour and shape)."""
    k = min(n, k)
    return sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(k)}) if k > 1 else list(range(k))


def _prefixed(acc: dict) -> dict:
    return {"attribute_accuracy": acc["all"], **{f"attribute_{k}": v for k, v in acc.items() if k != "all"}}


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_json(path: Path, obj) -> None:
    import os

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)
