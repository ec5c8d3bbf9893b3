"""Table 2's data path: text-to-image-2M streamed, its images encoded to image codes in batches on the image
tokenizer's device, once per (subset, resolution, tokenizer), and cached beside the other artifacts.

    rows = cached_codes("train", 20_000, options, image_tokenizer, batch_size=64)   # [{caption, codes, id}]

Nothing holds more than one batch of images: the shards are streamed (`mdm.t2i.data.text_to_image_2m`, datasets'
streaming WebDataset reader), each image is resized / centre-cropped to the tokenizer's resolution as it arrives,
and `batch_size` of them go through one `encode` call (a MAGVIT-v2 on the GPU: `TaskOptions.encode_device`). Only
the codes are kept (int16/int32, 2-4 KB an image at 512 px instead of 768 KB of pixels) and written to
`$MDM_CACHE/t2i/codes-<key>/` (`codes.npy` + `rows.jsonl`) through `mdm.t2i.cache.cached_dir`: atomic, built once
under a file lock (the other ranks of a launch wait for it, then read it). The key covers everything that changes
the codes: the source (hub shards, or the local shards' names, sizes and times), the split, the row count, the
resolution, the image tokenizer (its description, a hash of its weights and of its model class's source file),
`CODE_VERSION` (the file layout) and the code of this module and all it reaches (`mdm.cache.derivation`).

`decode_batches` is the way back for evaluation: CLIP scores decoded images, `batch_size` codes per decode call.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

CODE_VERSION = 1  # the cached layout; the encoding path's code is in the key too (mdm.cache.derivation("codes"))


def weights_hash(image_tokenizer) -> str:
    """sha256 of what the tokenizer's codes are a function of: the k-means codebook, or a MAGVIT-v2's weights
    (computed once per tokenizer object)."""
    cached = getattr(image_tokenizer, "_weights_hash", None)
    if cached:
        return cached
    h = hashlib.sha256()
    model = getattr(image_tokenizer, "model", None)
    if model is not None and hasattr(model, "state_dict"):
        for name, tensor in sorted(model.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().view(-1).view(dtype=_byte_dtype()).numpy().tobytes())
    elif hasattr(image_tokenizer, "codebook"):
        h.update(np.ascontiguousarray(image_tokenizer.codebook).tobytes())
    else:
        raise ValueError(f"cannot fingerprint image tokenizer {type(image_tokenizer).__name__}: no model, no codebook")
    image_tokenizer._weights_hash = h.hexdigest()
    return image_tokenizer._weights_hash


def _byte_dtype():
    import torch  # deferred: torch, only to hash weights

    return torch.uint8


def source_key(options, split: str) -> dict:
    """What identifies the images read: the hub's shards, or the local shards by name, size and time."""
    if options.images == "scenes":
        return {"images": "scenes", "split": split}
    if options.root is None:
        from mdm.t2i.data import T2I_2M  # deferred: mdm.t2i.data imports torch

        return {"images": "text-to-image-2m", "hub": T2I_2M, "split": split}
    import glob  # deferred: only for local shards

    files = sorted(glob.glob(f"{options.root}/**/data_*.tar", recursive=True))
    stats = [(os.path.relpath(f, options.root), os.stat(f).st_size, int(os.stat(f).st_mtime)) for f in files]
    return {"images": "text-to-image-2m", "root": str(Path(options.root).resolve()), "shards": stats, "split": split}


def code_key(options, split: str, n: int, image_tokenizer) -> dict:
    """What the codes are a function of; `mdm.t2i.cache.cached_dir` adds the code of this module (and all it reaches,
    `mdm.cache.derivation("codes")`), and the source file of the tokenizer's model class (MMaDA's MAGVIT-v2 code
    from `code_dir`) is hashed here."""
    model = getattr(image_tokenizer, "model", None)
    model_code = None
    with contextlib.suppress(OSError, TypeError):
        model_code = hashlib.sha256(Path(inspect.getsourcefile(type(model))).read_bytes()).hexdigest()
    return {"version": CODE_VERSION, "source": source_key(options, split), "n": n,
            "image_size": image_tokenizer.image_size, "tokenizer": image_tokenizer.describe(),
            "weights": weights_hash(image_tokenizer), "model_code": model_code if model is not None else None}


def at_size(image, size: int) -> np.ndarray:
    """uint8 [size, size, 3] of a PIL image or array: resized and centre-cropped when it is another size."""
    from mdm.t2i.image_tokenizer import _resize_center_crop  # deferred: the tokenizer module imports torch

    arr = np.asarray(image.convert("RGB")) if hasattr(image, "convert") else np.asarray(image)
    if arr.shape[:2] == (size, size):
        return arr
    from PIL import Image  # deferred: PIL, only to resize images

    return _resize_center_crop(Image.fromarray(arr), size)


def encode_batches(pairs: Iterable[dict], image_tokenizer, batch_size: int) -> Iterator[tuple[list[dict], np.ndarray]]:
    """([{caption, id}, ...], codes [b, N]) per `batch_size` pairs of the stream; one `encode` call each."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows, images = [], []
    for pair in pairs:
        rows.append({"caption": pair["caption"], "id": pair["id"]})
        images.append(at_size(pair["image"], image_tokenizer.image_size))
        if len(images) == batch_size:
            yield rows, image_tokenizer.encode(np.stack(images)).numpy()
            rows, images = [], []
    if images:
        yield rows, image_tokenizer.encode(np.stack(images)).numpy()


def cached_codes(split: str, n: int, options, image_tokenizer, batch_size: int = 64, cache_dir=None,
                 pairs: Iterable[dict] | None = None, echo=None) -> list[dict]:
    """[{caption, codes, id}] of the first `n` rows of `split`, encoded once and cached (see the module
    docstring). `pairs`: the stream to read (default text-to-image-2M's, `options.root` or the hub)."""
    from mdm.t2i.cache import cached_dir  # deferred: the cache module imports the file lock

    def build(folder: Path) -> None:
        stream = pairs
        if stream is None:
            from mdm.t2i.data import text_to_image_2m  # deferred: mdm.t2i.data imports torch

            stream = text_to_image_2m(n, root=options.root, split=split)
        chunks, rows = [], []
        for meta, codes in encode_batches(stream, image_tokenizer, batch_size):
            rows += meta
            chunks.append(codes.astype(np.int16 if image_tokenizer.codebook_size <= 32767 else np.int32))
            if echo:
                echo(f"text-to-image codes ({split}): {len(rows)}/{n} images encoded")
        width = image_tokenizer.num_tokens
        np.save(folder / "codes.npy", np.concatenate(chunks) if chunks else np.zeros((0, width), np.int16))
        with open(folder / "rows.jsonl", "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")

    folder = cached_dir("codes", code_key(options, split, n, image_tokenizer), build, cache_dir)
    codes = np.load(folder / "codes.npy")
    rows = [json.loads(line) for line in (folder / "rows.jsonl").read_text(encoding="utf-8").splitlines()]
    return [{**r, "codes": c.astype(np.int64).tolist()} for r, c in zip(rows, codes)]


def decode_batches(image_tokenizer, codes, batch_size: int = 64) -> np.ndarray:
    """uint8 [B, H, W, 3] images of codes [B, N], `batch_size` per decode call (on the tokenizer's device)."""
    import torch  # deferred: torch, only to decode

    codes = torch.as_tensor(codes, dtype=torch.long)
    parts = [image_tokenizer.decode(codes[s : s + batch_size]) for s in range(0, len(codes), batch_size)]
    if not parts:
        size = image_tokenizer.image_size
        return np.zeros((0, size, size, 3), np.uint8)
    return np.concatenate(parts)
