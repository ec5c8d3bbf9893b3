"""Image tokenizers: images <-> a grid of discrete codes in [0, codebook_size).

Every tokenizer has the same interface:

    codes = tok.encode(images)      # uint8 [B, H, W, 3] (numpy / torch) or a list of PIL images -> long [B, N]
    images = tok.decode(codes)      # long [B, N] -> uint8 numpy [B, H, W, 3]
    tok.codebook_size, tok.num_tokens, tok.image_size

In the MDM sequence the codes sit after the text vocabulary (`mdm.t2i.data`): token id = text vocab + code.

Implementations:
- `KMeansPatchTokenizer`: the tiny preset's tokenizer, built by the project: a k-means codebook over the
  non-overlapping p x p RGB patches of the tiny task's images (scikit-learn KMeans, weighted by patch
  frequency). Centroids are stored as uint8, so `encode(decode(codes)) == codes` exactly for every code
  sequence, and `decode(encode(img))` is the nearest-codebook reconstruction. `tiny_image_tokenizer()`
  builds it once and caches it (keyed by its settings). On the tiny task the codebook is lossless.
- `MagvitV2Tokenizer`: MMaDA's MAGVIT-v2 (`showlab/magvitv2`, 8,192 codes, 16x downsampling: 32 x 32 = 1,024
  codes at 512 px), run by MMaDA's own code (`mdm.t2i.magvit`: its `models/` package from `code_dir`, else
  $MDM_MMADA_CODE; this project does not vendor it). Codebook size and grid come from the model; tests use
  `mdm.t2i.magvit.tiny_magvit`, the same architecture at tiny size.

`load_image_tokenizer(spec)` builds one from a string: "tiny" (or "kmeans:<folder>"), "magvitv2[:<folder or hub
id>]".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from mdm.errors import ConfigError
from mdm.t2i.cache import cached_dir
from mdm.t2i.magvit import DEFAULT_IMAGE_SIZE, load_magvit, magvit_sizes
from mdm.t2i.scenes import IMAGE_SIZE, make_examples


def as_uint8_batch(images) -> np.ndarray:
    """uint8 [B, H, W, 3] from: a uint8 / float ([0, 1]) array or tensor [B, H, W, 3] or [B, 3, H, W], or a
    list of PIL images / arrays."""
    if isinstance(images, (list, tuple)):
        images = np.stack([np.asarray(im.convert("RGB")) if hasattr(im, "convert") else np.asarray(im)
                           for im in images])
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"expected a batch of images [B, H, W, 3]; got shape {arr.shape}")
    if arr.shape[-1] != 3 and arr.shape[1] == 3:
        arr = arr.transpose(0, 2, 3, 1)
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


class ImageTokenizer:
    """Interface (see the module docstring)."""

    name = "base"
    codebook_size: int
    image_size: int
    grid: tuple[int, int]

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def encode(self, images) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, codes) -> np.ndarray:
        raise NotImplementedError

    def checked_codes(self, codes) -> torch.Tensor:
        """Codes as a long [B, num_tokens] tensor; a ValueError when their count or range is not this tokenizer's."""
        codes = torch.as_tensor(codes, dtype=torch.long)
        if codes.ndim == 1:
            codes = codes[None]
        if codes.shape[1] != self.num_tokens:
            raise ValueError(f"expected {self.num_tokens} codes per image, got {codes.shape[1]}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size})")
        return codes

    def describe(self) -> dict:
        return {"name": self.name, "codebook_size": self.codebook_size, "image_size": self.image_size,
                "grid": list(self.grid)}


# ---------------------------------------------------------------- k-means patch codebook (tiny preset)


def to_patches(images: np.ndarray, patch: int) -> np.ndarray:
    """[B, H, W, 3] -> [B, (H/p)(W/p), p*p*3], patches in row-major order."""
    b, h, w, c = images.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch}")
    x = images.reshape(b, h // patch, patch, w // patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // patch) * (w // patch), patch * patch * c)


def from_patches(patches: np.ndarray, patch: int, grid: tuple[int, int]) -> np.ndarray:
    b = patches.shape[0]
    gh, gw = grid
    x = patches.reshape(b, gh, gw, patch, patch, 3).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, gh * patch, gw * patch, 3)


class KMeansPatchTokenizer(ImageTokenizer):
    name = "kmeans-patch"

    def __init__(self, codebook: np.ndarray, patch: int, image_size: int):
        codebook = np.asarray(codebook, dtype=np.uint8)
        if codebook.ndim != 2 or codebook.shape[1] != patch * patch * 3:
            raise ValueError(f"codebook must be [K, {patch * patch * 3}] for {patch}x{patch} RGB patches")
        if len(np.unique(codebook, axis=0)) != len(codebook):
            raise ValueError("codebook entries must be distinct (the round trip needs a unique nearest entry)")
        self.codebook, self.patch, self.image_size = codebook, patch, image_size
        self.codebook_size = len(codebook)
        self.grid = (image_size // patch, image_size // patch)
        self._book = torch.as_tensor(codebook, dtype=torch.float32)

    @classmethod
    def fit(cls, images, codebook_size: int = 256, patch: int = 4, seed: int = 0) -> KMeansPatchTokenizer:
        """k-means (k = min(codebook_size, distinct patches)) over the distinct patches, weighted by count."""
        # deferred: scikit-learn (slow import), only to fit the tiny codebook
        from sklearn.cluster import KMeans

        imgs = as_uint8_batch(images)
        flat = to_patches(imgs, patch).reshape(-1, patch * patch * 3)
        uniq, counts = np.unique(flat, axis=0, return_counts=True)
        k = min(codebook_size, len(uniq))
        if k == len(uniq):
            book = uniq
        else:
            km = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(uniq.astype(np.float64) / 255.0,
                                                                       sample_weight=counts.astype(np.float64))
            book = np.clip(np.round(km.cluster_centers_ * 255.0), 0, 255).astype(np.uint8)
            book = np.unique(book, axis=0)  # rounding may merge two centroids
        # most frequent codes first (stable ids, easy to read)
        order = np.argsort(-_assign(uniq, book, counts), kind="stable")
        return cls(book[order], patch, imgs.shape[1])

    def encode(self, images) -> torch.Tensor:
        imgs = as_uint8_batch(images)
        if imgs.shape[1:3] != (self.image_size, self.image_size):
            raise ValueError(f"expected {self.image_size}x{self.image_size} images, got {imgs.shape[1:3]}")
        patches = torch.as_tensor(to_patches(imgs, self.patch), dtype=torch.float32)
        b, n, d = patches.shape
        dist = torch.cdist(patches.reshape(-1, d), self._book)
        return dist.argmin(1).reshape(b, n)

    def decode(self, codes) -> np.ndarray:
        codes = self.checked_codes(codes)
        return from_patches(self.codebook[codes.numpy()], self.patch, self.grid)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "codebook.npy", self.codebook)
        (folder / "tokenizer.json").write_text(json.dumps({"type": self.name, "patch": self.patch,
                                                           "image_size": self.image_size}) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> KMeansPatchTokenizer:
        folder = Path(folder)
        meta = json.loads((folder / "tokenizer.json").read_text())
        return cls(np.load(folder / "codebook.npy"), meta["patch"], meta["image_size"])

    def describe(self) -> dict:
        return super().describe() | {"patch": self.patch}


def _assign(points: np.ndarray, book: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Total weight of the points nearest to each codebook entry."""
    d = torch.cdist(torch.as_tensor(points, dtype=torch.float32), torch.as_tensor(book, dtype=torch.float32))
    return np.bincount(d.argmin(1).numpy(), weights=weights, minlength=len(book))


TINY_DEFAULTS = {"codebook_size": 256, "patch": 4, "n_images": 2000, "data_seed": 7, "seed": 0}


def tiny_image_tokenizer(cache_dir: str | Path | None = None, **settings) -> KMeansPatchTokenizer:
    """The tiny task's k-means codebook, fitted on `n_images` training images once and cached."""
    unknown = sorted(set(settings) - set(TINY_DEFAULTS))
    if unknown:
        raise ConfigError(f"image_tokenizer.{unknown[0]}", f"unknown setting; allowed: {', '.join(TINY_DEFAULTS)}")
    cfg = {"format": "kmeans-patch-v1", "image_size": IMAGE_SIZE, **TINY_DEFAULTS, **settings}

    def build(folder: Path) -> None:
        images = [e["image"] for e in make_examples("train", cfg["n_images"], seed=cfg["data_seed"])]
        KMeansPatchTokenizer.fit(images, cfg["codebook_size"], cfg["patch"], cfg["seed"]).save(folder)

    return KMeansPatchTokenizer.load(cached_dir("codebook", cfg, build, cache_dir))


# ---------------------------------------------------------------- MMaDA's MAGVIT-v2


class MagvitV2Tokenizer(ImageTokenizer):
    """MMaDA's image tokenizer through MMaDA's own code (`mdm.t2i.magvit`: `code_dir`, else $MDM_MMADA_CODE).

    `model`: a hub id (default showlab/magvitv2), a folder written by `save_pretrained` (e.g. `tiny_magvit`'s) or a
    loaded MAGVITv2. Codebook size and downsampling come from the model (its quantizer's 2**codebook_dim, its
    encoder's ch_mult); `image_size` defaults to its config's (512 for the real one). Mirrors MMaDA's usage: pixels
    resized / centre-cropped to `image_size` and scaled to [-1, 1], `vq.get_code(pixels)` -> [B, grid^2] codes;
    `vq.decode_code(codes)` -> [-1, 1] images. In MMaDA's sequences the codes are offset by its LLM vocabulary."""

    name = "magvitv2"

    def __init__(self, model="showlab/magvitv2", image_size: int | None = None, device=None, code_dir=None):
        self.source = str(model) if isinstance(model, (str, Path)) else None
        if isinstance(model, (str, Path)):
            model = load_magvit(model, code_dir=code_dir)
        self.model = model.eval().to(device or "cpu")
        self.device = next(self.model.parameters()).device
        self.codebook_size, self.downsampling = magvit_sizes(self.model)
        self.image_size = int(image_size or self.model.config.get("image_size", DEFAULT_IMAGE_SIZE))
        if self.image_size % self.downsampling:
            raise ConfigError("image_tokenizer.image_size", f"{self.image_size} is not a multiple of the MAGVIT-v2's "
                              f"downsampling ({self.downsampling})")
        side = self.image_size // self.downsampling
        self.grid = (side, side)

    def to(self, device) -> MagvitV2Tokenizer:
        """Move the MAGVIT-v2 (e.g. back to the CPU once a run's codes are cached, so training has the GPU)."""
        self.model.to(device)
        self.device = next(self.model.parameters()).device
        return self

    @torch.no_grad()
    def encode(self, images) -> torch.Tensor:
        from PIL import Image  # deferred: PIL, only to resize images

        imgs = as_uint8_batch(images)
        if imgs.shape[1:3] != (self.image_size, self.image_size):
            imgs = np.stack([_resize_center_crop(Image.fromarray(im), self.image_size) for im in imgs])
        x = torch.as_tensor(imgs, dtype=torch.float32).permute(0, 3, 1, 2) / 127.5 - 1.0
        return self.model.get_code(x.to(self.device)).long().cpu()

    @torch.no_grad()
    def decode(self, codes) -> np.ndarray:
        codes = self.checked_codes(codes)
        images = self.model.decode_code(codes.to(self.device), shape=self.grid)
        images = ((images.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
        return images.permute(0, 2, 3, 1).cpu().numpy()

    def describe(self) -> dict:
        return super().describe() | {"source": self.source}


def _resize_center_crop(image, size: int) -> np.ndarray:
    from PIL import Image  # deferred: PIL, only to resize images

    w, h = image.size
    scale = size / min(w, h)
    image = image.convert("RGB").resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


def load_image_tokenizer(spec: str | ImageTokenizer = "tiny", cache_dir=None, device=None,
                         code_dir=None, image_size: int | None = None) -> ImageTokenizer:
    """"tiny" | "kmeans:<folder>" | "magvitv2[:<folder or hub id>]" | an ImageTokenizer.
    `code_dir`: MMaDA's models/ package for magvitv2 (else $MDM_MMADA_CODE); `image_size`: its pixels per side."""
    if isinstance(spec, ImageTokenizer):
        return spec
    kind, _, arg = str(spec).partition(":")
    if kind == "tiny":
        return tiny_image_tokenizer(cache_dir)
    if kind == "kmeans" and arg:
        return KMeansPatchTokenizer.load(arg)
    if kind == "magvitv2":
        return MagvitV2Tokenizer(arg or "showlab/magvitv2", image_size=image_size, device=device, code_dir=code_dir)
    raise ConfigError("image_tokenizer", f"unknown image tokenizer {spec!r}; allowed: tiny, kmeans:<folder>, "
                      "magvitv2[:<folder or hub id>]")
