"""Prompts and text of decoding: the generation prompt in the training format, and the text of generated ids."""

from __future__ import annotations

from collections.abc import Sequence


def chat_prompt_ids(tokenizer, prompt: str, messages: list[dict] | None = None) -> list[int]:
    """The generation prompt in the training format (`mdm.data.format_chat`): the user turn (or the conversation
    `messages`) plus the assistant header (chat template), or `<|bos|><|user|>prompt<|assistant|>` (tiny tokenizer)."""
    # deferred: mdm.data.collate imports transformers; the sampler loads torch only
    from mdm.data.collate import format_chat

    ids, _ = format_chat(tokenizer, prompt, "", messages)
    return ids[:-1]  # drop the EOS that closes the (empty) response


def decode_text(tokenizer, ids: Sequence[int]) -> str:
    """Text of generated ids: cut at the first EOS, special tokens dropped."""
    ids = list(ids)
    eos = tokenizer.eos_token_id
    if eos is not None and eos in ids:
        ids = ids[: ids.index(eos)]
    return tokenizer.decode(ids, skip_special_tokens=True)
