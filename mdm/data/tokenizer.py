"""A tiny byte-level BPE trained on the fly, so CPU experiments need no hub tokenizer.

Digits are split one per token (small models learn arithmetic far more easily that way); with
`digit_space=True` the space before a number stays on its first digit (" 16" -> " 1", "6"), so no token is a lone
space (a tiny MDM decoding in parallel otherwise fills digit slots with the frequent lone space). The tokenizer is
cached on disk under a hash of the training texts, the vocabulary size and the code that trains it
(`mdm.cache.derivation`), so every run of an experiment gets the identical vocabulary without retraining.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from transformers import PreTrainedTokenizerFast

from mdm.cache import cache_root, derivation

PAD, BOS, EOS, MASK, USER, ASSISTANT = (
    "<|pad|>",
    "<|bos|>",
    "<|eos|>",
    "<|mdm_mask|>",
    "<|user|>",
    "<|assistant|>",
)
SPECIAL_TOKENS = [PAD, BOS, EOS, MASK, USER, ASSISTANT]
_FORMAT_VERSION = "bpe-v1"  # the folder's layout; the code that trains it is in the key too (mdm.cache.derivation)


def default_cache_dir() -> Path:
    return cache_root() / "tokenizers"


def _key(texts: list[str], vocab_size: int, digit_space: bool = False) -> str:
    h = hashlib.sha256(f"{_FORMAT_VERSION}\0{derivation('tokenizer')}\0{vocab_size}\0"
                       f"{'digit-space' if digit_space else ''}".encode())
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:24]


def _train(texts: list[str], vocab_size: int, digit_space: bool = False) -> PreTrainedTokenizerFast:
    # deferred: the tokenizers training API, only to train the tiny tokenizer
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    digits = pre_tokenizers.Split(Regex(r" ?\d"), behavior="isolated") if digit_space else \
        pre_tokenizers.Digits(individual_digits=True)
    tok.pre_tokenizer = pre_tokenizers.Sequence([digits, pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        mask_token=MASK,
        additional_special_tokens=[USER, ASSISTANT],
        model_max_length=1 << 20,
    )


def build_tokenizer(
    texts: Iterable[str], vocab_size: int = 512, cache_dir: str | Path | None = None, digit_space: bool = False
) -> PreTrainedTokenizerFast:
    """Train (or load from the cache) a byte-level BPE on `texts` with the mdm special tokens.

    The result has `pad_token`, `bos_token`, `eos_token` and `mask_token` set and no chat template (so
    `mdm.data.collate.format_chat` uses the plain `<|bos|><|user|>...<|assistant|>` format).
    """
    texts = list(texts)
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path / _key(texts, vocab_size, digit_space)
    if (path / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(str(path))
    tokenizer = _train(texts, vocab_size, digit_space)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".tmp-"))
    try:
        tokenizer.save_pretrained(str(tmp))
        try:
            tmp.rename(path)  # atomic: a concurrent process either sees the whole folder or none
        except OSError:
            pass  # another process won the race; its tokenizer is identical
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tokenizer


def mask_token_id_of(tokenizer, model_config=None) -> int:
    """The id used for masked positions: the model config's `mask_token_id` and the tokenizer's (`mask_token`, or the
    `<|mdm_mask|>` token found by name, as in LLaDA's tokenizer) must agree; see `mdm.adapters.core.Adapter`."""
    from mdm.adapters import mask_token_id  # deferred: mdm.adapters imports torch; this module is torch-free

    return mask_token_id(tokenizer, model_config)
