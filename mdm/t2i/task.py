"""The text-to-image task plugin (`text-to-image` in mdm.data.tasks): what the one pipeline asks of a task.

    loader     examples {prompt = caption, response = the image's code tokens as text, answer = the scene}
    tokenizer  the caption BPE + one `<|img_c|>` token per code: the tiny model's vocabulary
    check      a run config's text-to-image settings (`eval.accuracy`, the model source), before any compute
    evaluate   decode the held-out captions with a trained run (MaskGIT), CLIP-score them, and write the record's
               `eval.text-to-image` and `metrics` (score = CLIP score), samples.jsonl and samples.png
    report     per-attribute table, sample grid, the tiny CLIP's check (mdm.t2i.table2: reads artifacts, never trains)

Training is `mdm.train.Trainer`'s, as for every task: a caption + image example is an ordinary {prompt, response}
example (the caption is the prompt, never masked; `mdm.t2i.data` shows the ids are the codec's), so resume,
micro-batches, gradient accumulation, bf16, the held-out split and every method apply unchanged. The tiny base is
`mdm.train.model.ensure_base`'s (with `model.pretrain.full_sequence: false` it is pretrained on the t2i objective
itself, caption unmasked: a weak t2i model, as MMaDA is before its t2i SFT).

    mdm train run.yaml        # data.task: text-to-image; eval.accuracy: {clip_model: tiny, steps: 24}
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Literal

from pydantic import Field

from mdm.errors import ConfigError
from mdm.train.config import Strict, validate_model

TASK = "text-to-image"

PAPER_MISSING = (
    "text-to-image with a hub model needs MMaDA's MAGVIT-v2 image tokenizer, which this version does not wire into "
    "the text-to-image task yet; the tiny preset (model.source: tiny) runs")


class EvalSettings(Strict):
    """`eval.accuracy` of a text-to-image run: greedy MaskGIT over the image canvas, then CLIP score."""

    metric: Literal["clip_score"] = "clip_score"
    clip_model: str = Field("tiny", description="'tiny' (the cached tiny CLIP) or '<open_clip model>/<pretrained>'")
    split: Literal["test", "train"] = "test"  # the captions decoded: the test split's are never trained on
    limit: int | None = Field(None, ge=1)  # the first `limit` captions (all 80 test captions by default)
    grid: int = Field(32, ge=0)  # samples drawn into samples.png
    # MaskGIT decoding (mdm.t2i.generate); accuracy moves with steps (Standard seed 42: 12 -> 25%, 24 -> 57%)
    steps: int = Field(24, ge=1)
    schedule: Literal["cosine", "linear"] = "cosine"
    temperature: float = Field(0.0, ge=0)
    batch_size: int = Field(64, ge=1)
    seed: int = 0  # sampling at temperature > 0, and the reference renders

    def decoding(self):
        from mdm.t2i.generate import ImageDecodeConfig

        return ImageDecodeConfig(steps=self.steps, schedule=self.schedule, temperature=self.temperature,
                                 seed=self.seed, batch_size=self.batch_size)


def eval_settings(settings: dict | None) -> EvalSettings:
    settings = settings or {}
    s = validate_model(EvalSettings, settings, "eval.accuracy")
    model, sep, pretrained = s.clip_model.partition("/")
    if s.clip_model != "tiny" and not (sep and model and pretrained):
        raise ConfigError("eval.accuracy.clip_model", f"expected 'tiny' or '<open_clip model>/<pretrained>' "
                          f"(e.g. ViT-B-32/openai); got {s.clip_model!r}")
    return s


def t2i_cache(cache_dir) -> Path | None:
    """The t2i artifacts' cache under a run's `model.cache_dir` (None: `$MDM_CACHE/t2i`)."""
    return Path(cache_dir) / "t2i" if cache_dir else None


# ---------------------------------------------------------------- hooks


def loader(split: str = "train", n: int = 1000, seed: int = 0, **options) -> list[dict]:
    """`make_task("text-to-image", split, n, seed)`: prompt = caption, response = the codes as `<|img_c|>` text."""
    from mdm.t2i.data import T2ICodec, image_text
    from mdm.t2i.scenes import make_examples

    if options:
        raise ConfigError(f"task.options.{sorted(options)[0]}", "text-to-image (tiny scenes) takes no options")
    codec = T2ICodec.tiny()
    examples = make_examples(split, n, seed)
    codes = codec.image_tokenizer.encode([e["image"] for e in examples]).tolist() if examples else []
    return [{"prompt": e["caption"], "response": image_text(c), "answer": e["scene"].to_dict(), "task": TASK,
             "id": e["id"]} for e, c in zip(examples, codes)]


def tokenizer(cache_dir=None, **options):
    """The tiny model's tokenizer: caption BPE + one `<|img_c|>` token per code (len = the model's vocabulary).
    `cache_dir`: the run's cache root (`mdm.cache`)."""
    from mdm.t2i.data import T2ICodec

    return T2ICodec.tiny(t2i_cache(cache_dir)).tokenizer


def check(cfg, planning: bool = False) -> None:
    """Before any compute: bad `eval.accuracy` settings; and, unless only `planning` (`mdm bench`'s spec check, a
    --dry-run), a hub model (it needs MAGVIT-v2, not wired yet): `mdm train` refuses it, a bench run fails at its start."""
    if cfg.eval.accuracy is not None:
        eval_settings(cfg.eval.accuracy)
    if cfg.model.source != "tiny" and not planning:
        raise ConfigError("model.source", PAPER_MISSING)


def evaluate(run_dir: str | Path, settings: dict | None = None, *, scorer=None, write: bool = True) -> dict:
    """Decode one image per evaluation caption with the run's model/, score it, write the samples and (`write`)
    the record's `eval.text-to-image` + `metrics`. Returns what `mdm.eval.api.evaluate_run` returns (which calls
    this for a text-to-image run)."""
    import torch

    from mdm.eval.api import find_record, load_model, read_record, train_folder_record, update_record
    from mdm.t2i.clip import ClipScorer
    from mdm.t2i.data import T2ICodec
    from mdm.t2i.grid import save_grid
    from mdm.t2i.image_tokenizer import tiny_image_tokenizer
    from mdm.t2i.scenes import attribute_accuracy, captions_of, chance_accuracy, check_attributes, render

    s = eval_settings(settings)
    decoding = s.decoding()
    run_dir = Path(run_dir)
    model, tok, model_dir = load_model(run_dir)
    record_path = find_record(run_dir, model_dir)
    record = {**train_folder_record(record_path, model_dir), **read_record(record_path)}
    cache = t2i_cache(((record.get("config") or {}).get("model") or {}).get("cache_dir"))
    codec = T2ICodec.build(tok, tiny_image_tokenizer(cache))
    pairs = captions_of(s.split)[: s.limit]
    captions, scenes = [c for c, _ in pairs], [sc for _, sc in pairs]
    with torch.no_grad():
        from mdm.t2i.generate import generate_codes

        codes = generate_codes(model, codec, captions, decoding)
    images = codec.image_tokenizer.decode(codes)
    scorer = scorer or ClipScorer.from_spec(s.clip_model, cache_dir=cache)
    clip = scorer.score(images, captions)
    acc = attribute_accuracy(images, scenes)
    checks = [check_attributes(img, sc) for img, sc in zip(images, scenes)]

    rng = random.Random(f"t2i-eval-reference:{s.seed}")
    truth = [render(sc, rng) for sc in scenes]
    recon = codec.image_tokenizer.decode(codec.image_tokenizer.encode(truth))
    reference = {"ground_truth": {"clip_score": scorer.score(truth, captions, cross_check=False)["clip_score"],
                                  **_prefixed(attribute_accuracy(truth, scenes))},
                 "tokenizer_reconstruction": {"clip_score": scorer.score(recon, captions, cross_check=False)["clip_score"],
                                              **_prefixed(attribute_accuracy(recon, scenes))},
                 "chance": _prefixed(chance_accuracy())}
    metrics = {"eval_task": TASK, "score": clip["clip_score"], "clip_score": clip["clip_score"],
               "clip_score_torchmetrics": clip["clip_score_torchmetrics"], **_prefixed(acc)}
    out = record_path.parent
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "samples.jsonl", "w") as f:
        for cap, sc, cd, ck, cs in zip(captions, scenes, codes.tolist(), checks, clip["clip_score_per_sample"]):
            f.write(json.dumps({"caption": cap, "scene": sc.to_dict(), "codes": cd, "checks": ck, "clip_score": cs}) + "\n")
    grid = None
    if s.grid:
        pick = grid_indices(len(images), s.grid)
        title = f"{record['method']} seed {record['seed']}: " if "method" in record and "seed" in record else ""
        grid = str(save_grid(images[pick], out / "samples.png", [captions[i] for i in pick],
                             [checks[i]["all"] for i in pick],
                             title=f"{title}CLIP {clip['clip_score']:.1f}, attributes {acc['all']:.0f}% (green = all right)"))
    result = {"n_eval": len(captions), "decoding": decoding.to_dict(), "settings": s.model_dump(),
              "clip": {"model": clip["clip_model"], "definition": clip["clip_definition"],
                       "negative_cosines": clip["negative_cosines"]},
              "reference": reference, "grid": grid, "model_dir": str(model_dir)}
    if write:
        update_record(record_path, {TASK: result}, metrics)
    return {"run_dir": str(run_dir), "model_dir": str(model_dir), "record": str(record_path), "tasks": {TASK: result},
            "metrics": metrics}


def report(rows, roots, out) -> list[str]:
    """`mdm report` hook: attribute accuracy per attribute, the tiny CLIP's retrieval check and a grid of generated
    samples, from the run folders (reads artifacts, never trains); the README lines that link them."""
    from mdm.t2i.table2 import summarize_runs

    for root in roots:
        summarize_runs(root, out, echo=lambda *_: None)
    return ["- [text-to-image: CLIP score, attribute accuracy per attribute, tiny-CLIP check](text_to_image.md)",
            "", "![generated samples: the same held-out captions for ground truth and every method](samples_grid.png)"]


def grid_indices(n: int, k: int) -> list[int]:
    """k evaluation rows spread evenly over the n (the captions are grouped by colour and shape)."""
    k = min(n, k)
    return sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(k)}) if k > 1 else list(range(k))


def _prefixed(acc: dict) -> dict:
    return {"attribute_accuracy": acc["all"], **{f"attribute_{k}": v for k, v in acc.items() if k != "all"}}
