"""CLIP score with open_clip; the tiny CLIP the project trains offline.

    scorer = ClipScorer.from_spec("ViT-B-32/openai")   # the paper preset (weights from the hub / HF cache)
    scorer = ClipScorer.from_spec("tiny")              # open_clip model trained on the tiny task (cached)
    result = scorer.score(images, captions)            # {"clip_score", "clip_score_per_sample", ...}

Definition (PAPER.md, stated in every result): CLIPScore = 100 * max(cos(E_img, E_txt), 0) per (image,
prompt) pair, averaged over prompts. torchmetrics' `CLIPScore` computes 100 * cos per pair and clamps the
*mean* at 0 (`max(mean(100 cos), 0)`); the two agree whenever no pair has a negative cosine, and ours is
never smaller (tests/t2i/test_t2i.py runs torchmetrics' own `CLIPScore` on fixed embeddings against ours); every
`score()` counts the pairs with a negative cosine, where the two differ.

The tiny CLIP is a real open_clip `CLIP` (ViT with 4x4 patches on 24x24 images, a 3-layer text transformer,
open_clip's BPE tokenizer with a 16-token context) registered as the open_clip model config
`mdm-tiny-clip` and trained contrastively on the tiny task's training captions and fresh renders, with
soft targets (all pairs in a batch that show the same scene are positives). It is cached under
`$MDM_CACHE/t2i/clip-<hash>/` and loads through `open_clip.create_model_and_transforms(name, pretrained=file)`
like any open_clip checkpoint. `retrieval_eval` measures it on held-out pairs (test-split captions, new
images): does the matching caption score above mismatched ones, and above captions that differ in one
attribute only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mdm.errors import ConfigError
from mdm.t2i.cache import cached_dir
from mdm.t2i.image_tokenizer import as_uint8_batch
from mdm.t2i.scenes import (
    COLOURS,
    LAYOUTS,
    SHAPES,
    TEMPLATES_ONE,
    Scene,
    caption,
    captions_of,
    make_examples,
)

TINY_CLIP_NAME = "mdm-tiny-clip"
TINY_CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 24, "layers": 3, "width": 96, "head_width": 32, "patch_size": 4, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 96, "heads": 3, "layers": 3, "mlp_ratio": 2.0},
}
TINY_CLIP_TRAIN = {"n_pairs": 4000, "data_seed": 11, "steps": 500, "batch_size": 128, "lr": 2e-3, "warmup": 30,
                   "weight_decay": 0.1, "seed": 0, "threads": 1}
DEFINITION = "100 * max(cos(img, txt), 0) per prompt, averaged over prompts"


# ---------------------------------------------------------------- the score


def clip_score_from_embeddings(image_emb: torch.Tensor, text_emb: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(mean, per-pair) CLIPScore = 100 * max(cos, 0) of row-aligned embeddings (normalised here)."""
    if image_emb.shape != text_emb.shape:
        raise ValueError(f"image and text embeddings must be row-aligned; got {tuple(image_emb.shape)} and "
                         f"{tuple(text_emb.shape)}")
    cos = (F.normalize(image_emb.double(), dim=-1) * F.normalize(text_emb.double(), dim=-1)).sum(-1)
    per = 100.0 * cos.clamp(min=0.0)
    return float(per.mean()), per


# ---------------------------------------------------------------- the scorer


class ClipScorer:
    """An open_clip model + its image preprocessing and tokenizer."""

    def __init__(self, model, preprocess, tokenizer, name: str, device=None, batch_size: int = 256):
        self.model, self.preprocess, self.tokenizer, self.name = model.eval(), preprocess, tokenizer, name
        self.device = torch.device(device or "cpu")
        self.model.to(self.device)
        self.batch_size = batch_size

    @classmethod
    def from_open_clip(cls, model_name: str = "ViT-B-32", pretrained: str | None = "openai", device=None,
                       cache_dir: str | None = None) -> ClipScorer:
        import open_clip  # deferred: open_clip (slow import), only when a CLIP model is built

        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained,
                                                                     device=device or "cpu", cache_dir=cache_dir)
        tag = pretrained if pretrained and not Path(str(pretrained)).exists() else "local"
        return cls(model, preprocess, open_clip.get_tokenizer(model_name), f"{model_name}/{tag}", device)

    @classmethod
    def from_spec(cls, spec: str = "tiny", device=None, cache_dir=None) -> ClipScorer:
        """"tiny" (the cached tiny CLIP) or "<open_clip model>/<pretrained tag or checkpoint file>"."""
        if spec == "tiny":
            return tiny_clip(cache_dir=cache_dir, device=device)
        model_name, sep, pretrained = spec.partition("/")
        if not sep or not model_name or not pretrained:
            raise ConfigError("clip_model", f"expected 'tiny' or '<model>/<pretrained>' (e.g. ViT-B-32/openai); "
                              f"got {spec!r}")
        if model_name == TINY_CLIP_NAME:  # a tiny CLIP checkpoint: its config sits next to it
            _register_tiny_config(Path(pretrained).parent)
        return cls.from_open_clip(model_name, pretrained, device=device)

    def _pil(self, images):
        from PIL import Image  # deferred: PIL, only to hand images to open_clip's preprocessing

        if isinstance(images, (list, tuple)) and images and hasattr(images[0], "convert"):
            return [im.convert("RGB") for im in images]
        return [Image.fromarray(im) for im in as_uint8_batch(images)]

    @torch.no_grad()
    def embed_images(self, images) -> torch.Tensor:
        pil = self._pil(images)
        out = []
        for s in range(0, len(pil), self.batch_size):
            x = torch.stack([self.preprocess(im) for im in pil[s : s + self.batch_size]]).to(self.device)
            out.append(self.model.encode_image(x).float().cpu())
        return torch.cat(out) if out else torch.zeros(0)

    @torch.no_grad()
    def embed_texts(self, texts) -> torch.Tensor:
        out = []
        for s in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[s : s + self.batch_size])).to(self.device)
            out.append(self.model.encode_text(tokens).float().cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def score(self, images, captions) -> dict:
        """CLIP score of row-aligned images and captions (see the module docstring)."""
        if len(captions) != len(self._pil(images)):
            raise ValueError("one caption per image")
        img, txt = self.embed_images(images), self.embed_texts(captions)
        mean, per = clip_score_from_embeddings(img, txt)
        out = {"clip_score": mean, "clip_model": self.name, "clip_definition": DEFINITION, "n": len(captions),
               "clip_score_per_sample": per.tolist(), "negative_cosines": int((per == 0).sum())}
        return out


# ---------------------------------------------------------------- the tiny CLIP


def _register_tiny_config(folder: Path) -> None:
    import open_clip  # deferred: open_clip (slow import), only when a CLIP model is built

    path = folder / f"{TINY_CLIP_NAME}.json"
    if not path.is_file():
        path.write_text(json.dumps(TINY_CLIP_CONFIG, indent=1))
    if TINY_CLIP_NAME not in open_clip.list_models():
        open_clip.add_model_config(path)


@contextlib.contextmanager
def _quiet_open_clip():
    """open_clip logs a warning for a model built without pretrained weights (on purpose here)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _soft_contrastive(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, same: torch.Tensor):
    logits = scale * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    target = same / same.sum(1, keepdim=True)
    return 0.5 * (torch.sum(-target * logits.log_softmax(1), 1).mean() +
                  torch.sum(-target.T * logits.T.log_softmax(1), 1).mean())


@torch.enable_grad()  # it may be built lazily inside an evaluation that runs under no_grad
def train_tiny_clip(folder: Path, settings: dict, echo=None) -> dict:
    """Train the tiny CLIP on training captions + fresh renders; writes the checkpoint and a log."""
    import open_clip  # deferred: open_clip (slow import), only when a CLIP model is built

    _register_tiny_config(folder)
    if settings.get("threads"):
        torch.set_num_threads(settings["threads"])
    torch.manual_seed(settings["seed"])
    with _quiet_open_clip():
        model, _, preprocess = open_clip.create_model_and_transforms(TINY_CLIP_NAME, pretrained=None)
    tokenizer = open_clip.get_tokenizer(TINY_CLIP_NAME)
    examples = make_examples("train", settings["n_pairs"], seed=settings["data_seed"])
    from PIL import Image  # deferred: PIL, only to hand images to open_clip's preprocessing

    images = torch.stack([preprocess(Image.fromarray(e["image"])) for e in examples])
    tokens = tokenizer([e["caption"] for e in examples])
    scene_ids = {}
    labels = torch.tensor([scene_ids.setdefault(e["scene"], len(scene_ids)) for e in examples])
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "logit_scale" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "logit_scale" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": settings["weight_decay"]},
                             {"params": rest, "weight_decay": 0.0}], lr=settings["lr"])
    steps, warm = settings["steps"], settings["warmup"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: s / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    g = torch.Generator().manual_seed(settings["seed"])
    model.train()
    start, losses = time.perf_counter(), []
    for step in range(steps):
        idx = torch.randint(0, len(examples), (settings["batch_size"],), generator=g)
        same = (labels[idx][:, None] == labels[idx][None]).float()
        loss = _soft_contrastive(model.encode_image(images[idx]), model.encode_text(tokens[idx]),
                                 model.logit_scale.exp().clamp(max=100), same)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if echo and (step + 1) % 100 == 0:
            echo(f"  tiny CLIP step {step + 1}/{steps}: loss {np.mean(losses[-100:]):.3f}")
    model.eval()
    torch.save(model.state_dict(), folder / "open_clip_model.pt")
    log = {"steps": steps, "loss_first": losses[0], "loss_last100": float(np.mean(losses[-100:])),
           "wall_time_s": time.perf_counter() - start}
    (folder / "train_log.json").write_text(json.dumps(log, indent=1))
    return log


def tiny_clip(cache_dir=None, device=None, echo=None, **overrides) -> ClipScorer:
    """The cached tiny CLIP as a ClipScorer (trained now if missing, ~1 CPU minute)."""
    import open_clip  # deferred: open_clip (slow import), only when a CLIP model is built

    unknown = sorted(set(overrides) - set(TINY_CLIP_TRAIN))
    if unknown:
        raise ConfigError(f"clip.{unknown[0]}", f"unknown setting; allowed: {', '.join(TINY_CLIP_TRAIN)}")
    settings = {**TINY_CLIP_TRAIN, **overrides}
    key = {"format": "tiny-clip-v1", "model": TINY_CLIP_CONFIG,
           "train": {k: v for k, v in settings.items() if k != "threads"}}
    folder = cached_dir("clip", key, lambda f: train_tiny_clip(f, settings, echo), cache_dir)
    _register_tiny_config(folder)
    model, _, preprocess = open_clip.create_model_and_transforms(
        TINY_CLIP_NAME, pretrained=str(folder / "open_clip_model.pt"), device=device or "cpu")
    scorer = ClipScorer(model, preprocess, open_clip.get_tokenizer(TINY_CLIP_NAME), f"{TINY_CLIP_NAME}/{folder.name}",
                        device)
    scorer.folder = folder
    return scorer


# ---------------------------------------------------------------- held-out retrieval


def retrieval_eval(scorer: ClipScorer, n: int = 400, seed: int = 12) -> dict:
    """How well the scorer matches captions and images on held-out pairs (test-split captions, new renders).

    pairwise: P(cos(image, its caption) > cos(image, a caption of another scene)), over all such pairs;
    top1: the best-scoring test caption describes the image's scene;
    hard_<attribute>: the caption beats every caption (same template) that changes only that attribute;
    clip_score_matched / clip_score_mismatched: mean CLIP score of matching / mismatched pairs."""
    examples = make_examples("test", n, seed=seed)
    captions = captions_of("test")
    img = F.normalize(scorer.embed_images([e["image"] for e in examples]).double(), dim=-1)
    txt = F.normalize(scorer.embed_texts([c for c, _ in captions]).double(), dim=-1)
    index = {c: i for i, (c, _) in enumerate(captions)}
    scenes = [s for _, s in captions]
    sim = img @ txt.T  # [n, captions]
    own = torch.tensor([index[e["caption"]] for e in examples])
    match = sim[torch.arange(n), own]
    other = torch.tensor([[scenes[j] != e["scene"] for j in range(len(captions))] for e in examples])
    pairwise = float(((match[:, None] > sim) & other).sum() / other.sum())
    top1 = float(np.mean([scenes[int(sim[i].argmax())] == e["scene"] for i, e in enumerate(examples)]))
    mismatched = float((100 * sim.clamp(min=0))[other].mean())

    hard = {}
    for attr in ("colour", "shape", "count", "position"):
        wins = []
        for i, e in enumerate(examples):
            sc, k = e["scene"], _template_index(e["caption"], e["scene"])
            alts = []
            if attr == "colour":
                alts = [Scene(c, sc.shape, sc.count, sc.position) for c in COLOURS if c != sc.colour]
            elif attr == "shape":
                alts = [Scene(sc.colour, s, sc.count, sc.position) for s in SHAPES if s != sc.shape]
            elif attr == "position":
                alts = [Scene(sc.colour, sc.shape, n_, p) for n_, p in LAYOUTS if n_ == sc.count and p != sc.position]
            else:  # count: the other count at a layout sharing a quadrant
                alts = [Scene(sc.colour, sc.shape, n_, p) for n_, p in LAYOUTS
                        if n_ != sc.count and set(Scene(sc.colour, sc.shape, n_, p).quadrants()) & set(sc.quadrants())]
            neg = F.normalize(scorer.embed_texts([caption(a, k) for a in alts]).double(), dim=-1)
            wins.append(bool((img[i] @ neg.T < match[i]).all()))
        hard[f"hard_{attr}"] = float(np.mean(wins))
    return {"pairs": n, "captions": len(captions), "pairwise": pairwise, "top1": top1, **hard,
            "clip_score_matched": float((100 * match.clamp(min=0)).mean()), "clip_score_mismatched": mismatched}


def _template_index(text: str, scene) -> int:
    for k in range(len(TEMPLATES_ONE)):
        if caption(scene, k) == text:
            return k
    raise ValueError(f"{text!r} is not a caption of {scene}")
