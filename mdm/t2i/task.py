"""The text-to-image task plugin (`text-to-image` in mdm.data.tasks): what the one pipeline asks of a task.

    loader     examples {prompt = caption, codes = the image's codes, response = the codes as `<|img_c|>` text,
               answer = the scene}, encoded by the run's image tokenizer (`data.options`, `TaskOptions`)
    tokenizer  the caption BPE + one `<|img_c|>` token per code: the tiny model's vocabulary
    tokenize   examples -> items in the model's own layout (`mdm.t2i.sequences`: the chat layout for the tiny
               models, MMaDA's UniversalPrompting layout for MMaDA), refusing a codec the model does not fit
    check      a run config's text-to-image settings (`eval.accuracy`, `data.options`), before any compute
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

from pydantic import Field, ValidationError

from mdm.errors import ConfigError
from mdm.eval.api import load_model, run_record, update_record
from mdm.schema import Strict, describe_validation_error, validate_model

TASK = "text-to-image"

HUB_NEEDS_MAGVIT = ("a hub model's image codes are MAGVIT-v2's (MMaDA): set data.options.image_tokenizer: "
                    "magvitv2:showlab/magvitv2 (or a local MAGVIT-v2 folder); the tiny k-means codebook is the tiny "
                    "models' (model.source: tiny)")


class TaskOptions(Strict):
    """`data.options` of the text-to-image task."""

    image_tokenizer: str = Field("tiny", description="'tiny' (k-means codebook), 'magvitv2:<folder or hub id>' "
                                 "or 'kmeans:<folder>'")
    image_size: int | None = Field(None, ge=8, description="pixels per side for MAGVIT-v2 (default: its config's)")
    code_dir: str | None = Field(None, description="MMaDA's models/ package for MAGVIT-v2 (else $MDM_MMADA_CODE)")
    images: Literal["scenes", "text-to-image-2m"] = "scenes"  # the tiny generated scenes, or the paper's data
    root: str | None = Field(None, description="text-to-image-2m: a local folder of its data_*.tar shards")
    max_text_len: int = Field(128, ge=4, description="MMaDA layout: caption positions (left-padded, cut beyond)")
    encode_batch_size: int = Field(32, ge=1, description="text-to-image-2m: images per image-tokenizer call "
                                   "(encoded once, cached: mdm.t2i.codes)")
    encode_device: str | None = Field(None, description="device of the MAGVIT-v2 (default: this process's GPU if "
                                      "any, else cpu)")


def task_options(options: dict | None) -> TaskOptions:
    try:
        return TaskOptions.model_validate(dict(options or {}))
    except ValidationError as e:
        raise ConfigError(*describe_validation_error(e, TaskOptions, "data.options")) from None


def image_tokenizer_of(options: TaskOptions, cache_dir=None):
    """The run's image tokenizer (cached in memory per process: the loader, tokenize and evaluate share it)."""
    kind = options.image_tokenizer.partition(":")[0]
    # only the tiny codebook lives in the cache: a MAGVIT-v2 is the same whichever cache a hook names
    device = (options.encode_device or _default_device()) if kind == "magvitv2" else None
    key = (options.image_tokenizer, options.image_size, options.code_dir, str(cache_dir) if kind == "tiny" else None,
           device)
    if key not in _IMAGE_TOKENIZERS:
        # deferred: torch; the task plugin loads torch-free for config checks
        from mdm.t2i.image_tokenizer import load_image_tokenizer

        extra = {"code_dir": options.code_dir, "image_size": options.image_size, "device": device} \
            if kind == "magvitv2" else {}
        _IMAGE_TOKENIZERS[key] = load_image_tokenizer(options.image_tokenizer, cache_dir=cache_dir, **extra)
    return _IMAGE_TOKENIZERS[key]


_IMAGE_TOKENIZERS: dict = {}


def _default_device() -> str:
    """This process's GPU (its LOCAL_RANK's inside a launch), else the CPU."""
    import os  # deferred: with torch below

    import torch  # deferred: torch; the task plugin loads torch-free for config checks

    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"


class EvalSettings(Strict):
    """`eval.accuracy` of a text-to-image run: greedy MaskGIT over the image canvas, then CLIP score."""

    metric: Literal["clip_score"] = "clip_score"
    clip_model: str = Field("tiny", description="'tiny' (the cached tiny CLIP) or '<open_clip model>/<pretrained>'")
    split: Literal["test", "train"] = "test"  # the captions decoded: the test split's are never trained on
    limit: int | None = Field(None, ge=1)  # the first `limit` captions (all 80 test captions by default)
    grid: int = Field(32, ge=0)  # samples drawn into samples.png
    # MaskGIT decoding (mdm.t2i.sequences); accuracy moves with steps (Standard seed 42: 12 -> 25%, 24 -> 57%)
    steps: int = Field(24, ge=1)
    schedule: Literal["cosine", "linear"] = "cosine"
    temperature: float = Field(0.0, ge=0)  # 0: greedy
    guidance_scale: float = Field(0.0, ge=0)  # classifier-free guidance (MMaDA's layout only)
    batch_size: int = Field(64, ge=1)
    seed: int = 0  # sampling at temperature > 0, and the reference renders

    def decoding(self) -> dict:
        return {"sampler": "maskgit", **self.model_dump(include={"steps", "schedule", "temperature", "guidance_scale",
                                                                  "seed", "batch_size"})}


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
    """`make_task("text-to-image", split, n, seed, **options)`: caption + the image's codes (see the docstring)."""
    # deferred: torch and transformers; the task plugin loads torch-free for config checks
    from mdm.t2i.data import image_text

    o = task_options(options)
    if o.images != "scenes":  # streamed, encoded in batches once, cached (mdm.t2i.codes)
        from mdm.t2i.codes import cached_codes  # deferred: numpy and the t2i stack

        image_tokenizer = image_tokenizer_of(o)
        rows = cached_codes(split, n, o, image_tokenizer, o.encode_batch_size)
        _to_cpu(image_tokenizer)  # the codes are cached: training needs the GPU, not the MAGVIT-v2
        return [{"prompt": r["caption"], "codes": r["codes"], "response": image_text(r["codes"]), "answer": None,
                 "task": TASK, "id": r["id"]} for r in rows]
    examples = _pairs(split, n, seed, o)
    if not examples:
        return []
    codes = image_tokenizer_of(o).encode([e["image"] for e in examples]).tolist()
    return [{"prompt": e["caption"], "codes": c, "response": image_text(c), "answer": e.get("answer"), "task": TASK,
             "id": e["id"]} for e, c in zip(examples, codes)]


def _pairs(split: str, n: int, seed: int, o: TaskOptions) -> list[dict]:
    """{caption, image, id, answer} of the run's images: the generated scenes, or text-to-image-2m (whose last shard
    is the test split)."""
    if o.images == "scenes":
        from mdm.t2i.scenes import make_examples  # deferred: numpy, only for generated scenes

        return [{"caption": e["caption"], "image": e["image"], "id": e["id"], "answer": e["scene"].to_dict()}
                for e in make_examples(split, n, seed)]
    # deferred: torch and transformers; the task plugin loads torch-free for config checks
    from mdm.t2i.data import text_to_image_2m

    return list(text_to_image_2m(n, root=o.root, split=split))


def _to_cpu(image_tokenizer) -> None:
    """A MAGVIT-v2 on a GPU goes back to the CPU, and the memory it held to torch's cache is given back."""
    if getattr(image_tokenizer, "device", None) is not None and image_tokenizer.device.type == "cuda":
        import torch  # deferred: torch; the task plugin loads torch-free for config checks

        image_tokenizer.to("cpu")
        torch.cuda.empty_cache()


def _captions(split: str, n: int, o: TaskOptions) -> list[str]:
    """The captions of text-to-image-2m's first `n` rows of `split`, streamed (no image is kept)."""
    # deferred: torch; the task plugin loads torch-free for config checks
    from mdm.t2i.data import text_to_image_2m

    return [e["caption"] for e in text_to_image_2m(n, root=o.root, split=split)]


def tokenize(tokenizer, examples: list[dict], max_length: int, model_config=None, **options) -> tuple[list, int]:
    """Items in the model's layout (`mdm.t2i.sequences`) no longer than `max_length`, and how many were dropped."""
    # deferred: torch; the task plugin loads torch-free for config checks
    from mdm.t2i.sequences import sequence_format

    o = task_options(options)
    fmt = sequence_format(tokenizer, model_config, image_tokenizer_of(o), o.max_text_len)
    items = fmt.items(examples)
    kept = [it for it in items if len(it["input_ids"]) <= max_length]
    return kept, len(items) - len(kept)


def tokenizer(cache_dir=None, **options):
    """The tiny model's tokenizer: caption BPE + one `<|img_c|>` token per code of the run's image tokenizer (len =
    the model's vocabulary). `cache_dir`: the run's cache root (`mdm.cache`)."""
    # deferred: torch and transformers; the task plugin loads torch-free for config checks
    from mdm.t2i.data import T2ICodec, tiny_text_tokenizer

    text = tiny_text_tokenizer(cache_dir=Path(cache_dir) / "tokenizers" if cache_dir else None)  # as text tasks'
    return T2ICodec.build(text, image_tokenizer_of(task_options(options), t2i_cache(cache_dir))).tokenizer


def check(cfg) -> None:
    """Before any compute (also when a spec is only planned): `data.options`, `eval.accuracy`, and a hub model with
    the tiny codebook."""
    o = task_options(cfg.data.options)
    if cfg.eval.accuracy is not None:
        eval_settings(cfg.eval.accuracy)
    if cfg.model.source != "tiny" and o.image_tokenizer == "tiny":
        raise ConfigError("data.options.image_tokenizer", HUB_NEEDS_MAGVIT)


def evaluate(run_dir: str | Path, settings: dict | None = None, *, scorer=None, write: bool = True) -> dict:
    """Decode one image per evaluation caption with the run's model/, score it, write the samples and (`write`)
    the record's `eval.text-to-image` + `metrics`. Returns what `mdm.eval.api.evaluate_run` returns (which calls
    this for a text-to-image run). On the tiny scenes also the attribute accuracy and the reference rows (ground
    truth, its codebook reconstruction, chance); on text-to-image-2m the CLIP score alone."""
    # deferred: torch and the t2i stack, only to evaluate; the task plugin loads torch-free
    import torch

    from mdm.eval.distributed import ranks  # deferred: accelerate, only inside a launch
    from mdm.t2i.clip import ClipScorer
    from mdm.t2i.sequences import sequence_format

    s = eval_settings(settings)
    run_dir = Path(run_dir)
    rk = ranks()  # inside `accelerate launch`: this process's share of the captions
    model, tok, model_dir = load_model(run_dir, rk.device)
    record_path, record = run_record(run_dir, model_dir)
    config = record.get("config") or {}
    o = task_options((config.get("data") or {}).get("options"))
    cache = t2i_cache((config.get("model") or {}).get("cache_dir"))
    image_tokenizer = image_tokenizer_of(o, cache)
    if hasattr(image_tokenizer, "to"):  # a MAGVIT-v2 decodes on this process's GPU (the loader left it on the CPU)
        image_tokenizer.to(o.encode_device or _default_device())
    fmt = sequence_format(tok, model.config, image_tokenizer, o.max_text_len)
    if o.images == "scenes":
        from mdm.t2i.scenes import captions_of  # deferred: numpy, only for generated scenes

        pairs = captions_of(s.split)[: s.limit]
        captions, scenes = [c for c, _ in pairs], [sc for _, sc in pairs]
    else:
        captions, scenes = _captions(s.split, s.limit or 1000, o), None  # no encoding
    with torch.no_grad():
        codes = _generate(fmt, model, captions, s, rk)
    if codes is None:  # another rank's share: rank 0 decodes, scores and writes
        return {"run_dir": str(run_dir), "model_dir": str(model_dir), "record": str(record_path), "tasks": {},
                "metrics": {}}
    from mdm.t2i.codes import decode_batches  # deferred: numpy and the t2i stack

    images = decode_batches(image_tokenizer, codes, s.batch_size)  # batch_size codes per decode call
    scorer = scorer or ClipScorer.from_spec(s.clip_model, cache_dir=cache)
    clip = scorer.score(images, captions)
    metrics = {"eval_task": TASK, "score": clip["clip_score"], "clip_score": clip["clip_score"]}
    reference, checks = None, [{} for _ in captions]
    if scenes is not None:
        reference, checks, acc = _scene_checks(images, scenes, captions, image_tokenizer, scorer, s.seed)
        metrics |= _prefixed(acc)
    out = record_path.parent
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "samples.jsonl", "w") as f:
        for i, (cap, cd, ck, cs) in enumerate(zip(captions, codes.tolist(), checks, clip["clip_score_per_sample"])):
            scene = scenes[i].to_dict() if scenes is not None else None
            f.write(json.dumps({"caption": cap, "scene": scene, "codes": cd, "checks": ck, "clip_score": cs}) + "\n")
    grid = None
    if s.grid:
        from mdm.t2i.grid import save_grid  # deferred: numpy and PIL, only for the sample grid

        pick = grid_indices(len(images), s.grid)
        title = f"{record['method']} seed {record['seed']}: " if "method" in record and "seed" in record else ""
        attrs = f", attributes {metrics['attribute_accuracy']:.0f}% (green = all right)" if scenes is not None else ""
        grid = str(save_grid(images[pick], out / "samples.png", [captions[i] for i in pick],
                             [checks[i].get("all", True) for i in pick],
                             title=f"{title}CLIP {clip['clip_score']:.1f}{attrs}"))
    result = {"n_eval": len(captions), "samples_file": "samples.jsonl",
              "decoding": s.decoding() | ({"processes": rk.world} if rk.world > 1 else {}), "format": fmt.name,
              "image_tokenizer": image_tokenizer.describe(), "settings": s.model_dump(),
              "clip": {"model": clip["clip_model"], "definition": clip["clip_definition"],
                       "negative_cosines": clip["negative_cosines"]},
              "reference": reference, "grid": grid, "model_dir": str(model_dir)}
    if write:
        update_record(record_path, {TASK: result}, metrics)
    return {"run_dir": str(run_dir), "model_dir": str(model_dir), "record": str(record_path), "tasks": {TASK: result},
            "metrics": metrics}


def _generate(fmt, model, captions: list[str], s: EvalSettings, rk):
    """The image codes of every caption (None on ranks other than 0). Inside a launch each rank decodes every
    world-th batch of `batch_size` captions, the very batches one process decodes, with the draws keyed by the
    captions' places in the whole list (`first`), so the codes are one process's, sampled or greedy."""
    import torch  # deferred: torch; the task plugin loads torch-free for config checks

    knobs = s.model_dump(include={"steps", "schedule", "temperature", "seed", "batch_size", "guidance_scale"})
    if rk.world == 1:
        return fmt.generate(model, captions, **knobs)
    chunks = [captions[i : i + s.batch_size] for i in range(0, len(captions), s.batch_size)]
    mine = {k: fmt.generate(model, chunks[k], first=k * s.batch_size, **knobs)
            for k in range(rk.rank, len(chunks), rk.world)}
    shares = rk.gather(mine)
    if not rk.is_main:
        return None
    done = {k: v for share in shares for k, v in share.items()}
    return torch.cat([done[k] for k in range(len(chunks))])


def report(rows, roots, out) -> list[str]:
    """`mdm report` hook: attribute accuracy per attribute, the tiny CLIP's retrieval check and a grid of generated
    samples, from the run folders (reads artifacts, never trains); the README lines that link them."""
    from mdm.t2i.table2 import summarize_runs  # deferred: mdm.t2i.table2 imports this module

    written = [summarize_runs(root, out, echo=lambda *_: None) for root in roots]
    if not any(written):  # runs on other images than the tiny scenes: no attributes to summarize
        return []
    return ["- [text-to-image: CLIP score, attribute accuracy per attribute, tiny-CLIP check](text_to_image.md)",
            "", "![generated samples: the same held-out captions for ground truth and every method](samples_grid.png)"]


def _scene_checks(images, scenes, captions, image_tokenizer, scorer, seed: int):
    """(reference rows, per-image attribute checks, attribute accuracy) on the tiny scenes; images of another size
    (a MAGVIT-v2 at its own resolution) are resized to the scenes' before the checker reads them."""
    # deferred: numpy, only for generated scenes
    from mdm.t2i.scenes import IMAGE_SIZE, attribute_accuracy, chance_accuracy, check_attributes, render

    def at_scene_size(batch):
        # deferred: numpy and PIL, only to check rendered scenes
        import numpy as np
        from PIL import Image

        if batch.shape[1:3] == (IMAGE_SIZE, IMAGE_SIZE):
            return batch
        return np.stack([np.asarray(Image.fromarray(im).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR))
                         for im in batch])

    rng = random.Random(f"t2i-eval-reference:{seed}")
    truth = [render(sc, rng) for sc in scenes]
    recon = image_tokenizer.decode(image_tokenizer.encode(truth))
    small = at_scene_size(images)
    reference = {"ground_truth": {"clip_score": scorer.score(truth, captions)["clip_score"],
                                  **_prefixed(attribute_accuracy(truth, scenes))},
                 "tokenizer_reconstruction": {"clip_score": scorer.score(recon, captions)["clip_score"],
                                              **_prefixed(attribute_accuracy(at_scene_size(recon), scenes))},
                 "chance": _prefixed(chance_accuracy())}
    checks = [check_attributes(img, sc) for img, sc in zip(small, scenes)]
    return reference, checks, attribute_accuracy(small, scenes)


def grid_indices(n: int, k: int) -> list[int]:
    """k evaluation rows spread evenly over the n (the captions are grouped by colour and shape)."""
    k = min(n, k)
    return sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(k)}) if k > 1 else list(range(k))


def _prefixed(acc: dict) -> dict:
    return {"attribute_accuracy": acc["all"], **{f"attribute_{k}": v for k, v in acc.items() if k != "all"}}
