"""Text-to-image sequences for the MDM objective: caption tokens (prompt, never masked) + image codes.

    codec = T2ICodec.tiny()                          # tiny BPE on the captions + the tiny image codebook
    items = codec.items(make_examples("train", 800))  # tokenized items (the data layer's item format)
    batch = Collator(codec.tokenizer, "text-to-image", 64)(items[:16])  # mdm.data's: prompt = the caption part

A sequence is the data layer's chat format with the image as the response (as MMaDA's t2i SFT, and the
authors' convention that response-side tokens carry the loss):

    <|bos|><|user|> caption <|assistant|>  |  <|img_c1|> ... <|img_cN|> <|eos|>
    `----------- prompt (never masked) ----'  `---- masked and predicted -------'

Image code c is token id `text_vocab + c`: the tokenizer is the text BPE with one added token `<|img_c|>` per
code, so `len(tokenizer) = text_vocab + codebook_size` (the model's vocabulary, `build_tiny_model(tokenizer)`)
and `format_chat(tokenizer, caption, image_text(codes))` gives exactly the same ids (tested): a caption +
image example is an ordinary {prompt, response} example for the trainer. The same MDMBatch goes through every
method preset unchanged.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mdm.data import build_tokenizer
from mdm.data.tokenizer import ASSISTANT, BOS, USER
from mdm.t2i.image_tokenizer import ImageTokenizer, load_image_tokenizer, tiny_image_tokenizer
from mdm.t2i.scenes import captions_of

TEXT_VOCAB = 384  # tiny BPE on the captions: every word is one token


def image_token(code: int) -> str:
    return f"<|img_{code}|>"


def image_text(codes: Sequence[int]) -> str:
    """The response text of an image (for the trainer's {prompt, response} examples)."""
    return "".join(image_token(int(c)) for c in codes)


def add_image_tokens(text_tokenizer, codebook_size: int):
    """Append `<|img_0|>` .. `<|img_{K-1}|>` to a text tokenizer (in place); returns the code offset."""
    offset = len(text_tokenizer)
    added = text_tokenizer.add_tokens([image_token(i) for i in range(codebook_size)])
    ids = text_tokenizer.convert_tokens_to_ids([image_token(0), image_token(codebook_size - 1)])
    if added != codebook_size or ids != [offset, offset + codebook_size - 1]:
        raise ValueError("the tokenizer already holds image tokens, or gave them non-contiguous ids")
    return offset


def tiny_text_tokenizer(vocab_size: int = TEXT_VOCAB, cache_dir=None):
    """The tiny BPE trained on the task's training captions (cached by content, `mdm.data.build_tokenizer`)."""
    return build_tokenizer([c for c, _ in captions_of("train")], vocab_size=vocab_size, cache_dir=cache_dir)


@dataclass
class T2ICodec:
    """Tokenizer (text + image tokens) and image tokenizer of a t2i model, and the id arithmetic between them."""

    tokenizer: object  # text tokenizer with the image tokens added
    image_tokenizer: ImageTokenizer
    code_offset: int

    @classmethod
    def build(cls, text_tokenizer, image_tokenizer: ImageTokenizer | str) -> T2ICodec:
        image_tokenizer = load_image_tokenizer(image_tokenizer)
        vocab = text_tokenizer.get_vocab()
        if image_token(0) in vocab:  # a saved t2i tokenizer (e.g. next to a checkpoint)
            offset = vocab[image_token(0)]
            if vocab.get(image_token(image_tokenizer.codebook_size - 1)) != offset + image_tokenizer.codebook_size - 1:
                raise ValueError("the tokenizer's image tokens do not match the image tokenizer's codebook")
        else:
            offset = add_image_tokens(text_tokenizer, image_tokenizer.codebook_size)
        return cls(text_tokenizer, image_tokenizer, offset)

    @classmethod
    def tiny(cls, cache_dir=None) -> T2ICodec:
        return cls.build(tiny_text_tokenizer(), tiny_image_tokenizer(cache_dir))

    # ------------------------------------------------------------ ids

    @property
    def codebook_size(self) -> int:
        return self.image_tokenizer.codebook_size

    @property
    def num_image_tokens(self) -> int:
        return self.image_tokenizer.num_tokens

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def mask_id(self) -> int:
        return int(self.tokenizer.mask_token_id)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def eos_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    def prompt_ids(self, caption: str) -> list[int]:
        """`<|bos|><|user|>caption<|assistant|>` (the data layer's format without a chat template)."""
        if getattr(self.tokenizer, "chat_template", None):
            # deferred: mdm.sampler (the objective's pydantic schema), only for a chat template
            from mdm.sampler import chat_prompt_ids

            return chat_prompt_ids(self.tokenizer, caption)
        return list(self.tokenizer(BOS + USER + caption + ASSISTANT, add_special_tokens=False)["input_ids"])

    def codes_to_ids(self, codes) -> torch.Tensor:
        return torch.as_tensor(codes, dtype=torch.long) + self.code_offset

    # ------------------------------------------------------------ examples -> items

    def item(self, caption: str, codes: Sequence[int], **extra) -> dict:
        prompt = self.prompt_ids(caption)
        image = self.codes_to_ids(codes).tolist()
        ids = prompt + image + [self.eos_id]
        n = len(ids)
        return {"input_ids": ids, "prompt_length": len(prompt), "delimiter_mask": [False] * n,
                "syntax_mask": [False] * n, "caption": caption, **extra}

    def items(self, examples: list[dict], batch_size: int = 512) -> list[dict]:
        """Examples {"caption", "image", ...} (mdm.t2i.scenes.make_examples) -> tokenized items."""
        out = []
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            codes = self.image_tokenizer.encode([e["image"] for e in chunk])
            for e, c in zip(chunk, codes.tolist()):
                out.append(self.item(e["caption"], c, id=e.get("id"), scene=e.get("scene")))
        return out

    def chat_example(self, caption: str, image) -> dict:
        """{prompt, response} for the trainer's text pipeline (`mdm.data.collate.format_chat` gives the
        same ids as `item`)."""
        codes = self.image_tokenizer.encode([image])[0].tolist()
        return {"prompt": caption, "response": image_text(codes)}


# ---------------------------------------------------------------- the paper's data (needs the hub or a local copy)

T2I_2M = "jackyhate/text-to-image-2M"
T2I_2M_SHARD = "https://huggingface.co/datasets/jackyhate/text-to-image-2M/resolve/main/data_512_2M/data_{i:06d}.tar"


def text_to_image_2m(n: int | None = None, root: str | None = None, shards: int = 35, skip: int = 0,
                     split: str = "train"):
    """Stream {"caption", "image" (PIL), "id"} pairs of text-to-image-2M's 512 px part (WebDataset shards with a
    `jpg` and a `json` holding the `prompt` per sample), following the dataset card's loader. `root`: a local
    folder of `data_*.tar` shards (else the hub's 35 shards); `split` "test" reads the last shard only, "train"
    the others (the dataset has no test split; the paper's subset, steps and resolution are not stated: OPEN)."""
    import datasets  # deferred: datasets (slow import), only for the Text-to-Image-2M shards

    files = sorted(glob.glob(f"{root}/**/data_*.tar", recursive=True)) if root else \
        [T2I_2M_SHARD.format(i=i) for i in range(shards)]
    if not files:
        raise FileNotFoundError(f"no data_*.tar shards under {root}")
    files = files[-1:] if split == "test" else (files[:-1] or files)
    stream = datasets.load_dataset("webdataset", data_files={"train": files}, split="train", streaming=True)
    for i, row in enumerate(stream):
        if i < skip:
            continue
        if n is not None and i >= skip + n:
            break
        meta = row.get("json") or {}
        yield {"caption": meta.get("prompt", ""), "image": row["jpg"], "id": row.get("__key__", f"t2i2m-{i}")}
