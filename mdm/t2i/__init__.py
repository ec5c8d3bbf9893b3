"""Text-to-image (Table 2): MMaDA-style MDM over image codes, MaskGIT decoding, CLIP score, attribute accuracy.

    scenes           the tiny task: captions of simple scenes, their images, the attribute checker
    image_tokenizer  images <-> codes: k-means patch codebook (tiny), MAGVIT-v2 adapter
    data             caption tokens (prompt) + image-code tokens (response) -> MDMBatch; T2ICodec
    generate         MaskGIT-style confidence decoding restricted to image codes
    clip             CLIP score (open_clip), the tiny CLIP, retrieval eval
    task             the task plugin's hooks: loader, tokenizer, check, evaluate (decode + score), report
    table2           the report: summary, per-attribute table, sample grids (called by `mdm report`)

Training is mdm.train.Trainer's, as for every task (`mdm bench benchmarks/table2.yaml`).

Names below are imported lazily, so `import mdm.t2i` stays cheap.
"""

from __future__ import annotations

from mdm.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "evaluate": "task", "EvalSettings": "task",
    "T2ICodec": "data",
    "ImageDecodeConfig": "generate", "generate_codes": "generate",
    "ClipScorer": "clip", "tiny_clip": "clip", "retrieval_eval": "clip",
    "clip_score_from_embeddings": "clip",
    "ImageTokenizer": "image_tokenizer", "KMeansPatchTokenizer": "image_tokenizer",
    "MagvitV2Tokenizer": "image_tokenizer",
    "load_image_tokenizer": "image_tokenizer", "tiny_image_tokenizer": "image_tokenizer",
    "make_examples": "scenes", "check_attributes": "scenes", "attribute_accuracy": "scenes",
    "summarize_runs": "table2",
})  # fmt: skip
