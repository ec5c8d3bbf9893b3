"""From examples to `MDMBatch`: chat formatting, per-token delimiter / syntax flags, padding.

Delimiter (ISAD) and syntax (SyRM) tokens are found on decoded text, never by token id, so the same task
definition works with the tiny BPE and with LLaDA's tokenizer: a token is flagged when its text overlaps an
occurrence of a pattern, even when the pattern is split over several tokens.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

import torch

from mdm.data.tasks import Span, TaskSpec, find_all, get_task
from mdm.data.tokenizer import ASSISTANT, BOS, USER
from mdm.errors import ConfigError
from mdm.objective.batch import MDMBatch

_WINDOW = 6  # tokens of left context when decoding one token (multi-byte characters, leading spaces)
_OPAQUE = "\x00"  # text given to special tokens, so "<" in "<|user|>" is never taken for syntax


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def format_chat(tokenizer, prompt: str, response: str, messages: list[dict] | None = None) -> tuple[list[int], int]:
    """Token ids of one chat turn and the prompt length.

    With a chat template (hub models, e.g. LLaDA) the prompt is the rendered user turn and the response is
    the assistant header + response + EOS (the authors' convention: header tokens belong to the response).
    Without one (the tiny BPE): `<|bos|><|user|>prompt<|assistant|>` + `response<|eos|>`.
    `messages` (a conversation: earlier turns and the last user turn, {role, content}) replaces `prompt`; without a
    template each turn is `<|user|>text` (user, system) or `<|assistant|>text`.
    """
    turns = messages if messages is not None else [{"role": "user", "content": prompt}]
    if getattr(tokenizer, "chat_template", None):
        prompt_text = tokenizer.apply_chat_template(turns, add_generation_prompt=False, tokenize=False)
        with_header = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
        header = with_header[len(prompt_text) :] if with_header.startswith(prompt_text) else ""
        prompt_ids, response_ids = _ids(tokenizer, prompt_text), _ids(tokenizer, header + response)
    else:
        text = "".join((ASSISTANT if m["role"] == "assistant" else USER) + m["content"] for m in turns)
        prompt_ids = _ids(tokenizer, BOS + text + ASSISTANT)
        response_ids = _ids(tokenizer, response)
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token; set tokenizer.eos_token")
    return prompt_ids + response_ids + [tokenizer.eos_token_id], len(prompt_ids)


def _special_ids(tokenizer) -> set[int]:
    ids = set(tokenizer.all_special_ids)
    ids |= {i for i, tok in getattr(tokenizer, "added_tokens_decoder", {}).items() if tok.special}
    return ids


def token_texts(tokenizer, ids: Sequence[int], start: int = 0, end: int | None = None) -> list[str]:
    """The text each token of ids[start:end] adds, so that "".join(result) is the decoded range.

    Token k's text = decode(ids[k-W : k+1]) minus decode(ids[k-W : k]) (W tokens of context), with
    incomplete UTF-8 characters held back until the token that completes them. Special tokens become "\\x00".
    """
    end = len(ids) if end is None else end
    special = _special_ids(tokenizer)
    backend = getattr(tokenizer, "backend_tokenizer", None)

    def decode(seq):
        if backend is not None:
            return backend.decode(list(seq), skip_special_tokens=False).rstrip("\ufffd")
        return tokenizer.decode(seq, skip_special_tokens=False, clean_up_tokenization_spaces=False).rstrip(
            "\ufffd"
        )

    out = []
    for k in range(start, end):
        if ids[k] in special:
            out.append(_OPAQUE)
            continue
        w = max(start, k - _WINDOW)
        prev, cur = decode(ids[w:k]), decode(ids[w : k + 1])
        common = len(prev)
        if not cur.startswith(prev):  # decoders that rewrite earlier text: keep what changed
            common = next((i for i, (a, b) in enumerate(zip(prev, cur)) if a != b), min(len(prev), len(cur)))
        out.append(cur[common:])
    return out


def mark_spans(
    tokenizer,
    ids: Sequence[int],
    patterns: Sequence[str] | Callable[[str], list[Span]],
    start: int = 0,
    end: int | None = None,
) -> list[bool]:
    """One flag per token of `ids`: True for tokens in [start, end) overlapping an occurrence of a pattern.

    `patterns` is a list of strings (every occurrence counts) or a function text -> character spans (e.g.
    `TaskSpec.delimiter_spans`, which pairs each `\\boxed{` with its own closing brace)."""
    end = len(ids) if end is None else end
    flags = [False] * len(ids)
    if not patterns or start >= end:
        return flags
    find = patterns if callable(patterns) else (lambda text: find_all(text, patterns))
    pieces = token_texts(tokenizer, ids, start, end)
    spans = find("".join(pieces))
    if not spans:
        return flags
    offset = 0
    for k, piece in enumerate(pieces):
        lo, hi = offset, offset + len(piece)
        offset = hi
        flags[start + k] = any(s < hi and lo < e for s, e in spans)
    return flags


def tokenize_example(tokenizer, example: dict, task: str | TaskSpec) -> dict:
    spec = get_task(task)
    ids, p0 = format_chat(tokenizer, example["prompt"], example["response"], example.get("messages"))
    return {
        "id": example.get("id"),
        "input_ids": ids,
        "prompt_length": p0,
        "delimiter_mask": mark_spans(tokenizer, ids, spec.delimiter_spans, start=p0),
        "syntax_mask": mark_spans(tokenizer, ids, spec.syntax_spans, end=p0)
        if spec.syntax_patterns
        else [False] * len(ids),
    }


_TOKEN_CHARS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def max_token_chars(tokenizer) -> int:
    """The most characters one token of `tokenizer` stands for (its longest vocabulary entry; byte-level entries
    count bytes, which is at least the characters): a text of more than max_length times this many characters
    cannot fit max_length tokens (unless the tokenizer's normalizer deletes characters)."""
    try:
        return _TOKEN_CHARS[tokenizer]
    except (KeyError, TypeError):
        pass
    n = max((len(t) for t in tokenizer.get_vocab()), default=1)
    try:
        _TOKEN_CHARS[tokenizer] = n
    except TypeError:  # not weak-referenceable: computed again next time
        pass
    return n


def example_chars(example: dict) -> int:
    """Characters of an example's text (prompt or conversation, and response)."""
    turns = example.get("messages")
    prompt = sum(len(str(m.get("content", ""))) for m in turns) if turns is not None else len(example["prompt"])
    return prompt + len(example["response"])


def tokenize_examples(tokenizer, examples, task: str | TaskSpec, max_length: int) -> tuple[list[dict], int]:
    """Tokenized examples no longer than `max_length` tokens, and how many were dropped (the paper drops,
    never truncates, long sequences). `task`: a name, or the TaskSpec of a task declared by its options
    (`get_task("dataset", options)`). An example is measured before it is tokenized: one of more than
    max_length * `max_token_chars` characters cannot fit and is dropped untokenized (a 10 MB row costs nothing)."""
    kept, dropped, spec = [], 0, get_task(task)
    bound = max_length * max_token_chars(tokenizer)
    for ex in examples:
        if example_chars(ex) > bound:
            dropped += 1
            continue
        item = tokenize_example(tokenizer, ex, spec)
        if len(item["input_ids"]) > max_length:
            dropped += 1
        else:
            kept.append(item)
    return kept, dropped


class Collator:
    """Right-pads tokenized examples (from `tokenize_examples`) into an `MDMBatch`.

    Raw examples ({"prompt", "response", ...}) are tokenized on the fly; one longer than `max_length`
    raises, since dropping it here would silently shrink the batch.

    `pad_carries_loss` (models whose code ignores attention masks, e.g. the hub's LLaDA): the padding is EOS tokens
    that are part of the response and carry loss, with no mask (LLaDA's SFT convention); needs pad = EOS."""

    def __init__(self, tokenizer, task: str | TaskSpec, max_length: int, pad_carries_loss: bool = False):
        self.tokenizer, self.task, self.max_length = tokenizer, get_task(task), max_length
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError("the tokenizer has neither pad_token nor eos_token; set tokenizer.pad_token")
        if pad_carries_loss and pad != tokenizer.eos_token_id:
            raise ConfigError("model", f"this model ignores attention masks, so padding must be EOS that carries loss, "
                              f"but the tokenizer pads with id {pad}, not EOS {tokenizer.eos_token_id}")
        self.pad_id, self.pad_carries_loss = pad, pad_carries_loss

    def __call__(self, items: Sequence[dict]) -> MDMBatch:
        items = [it if "input_ids" in it else tokenize_example(self.tokenizer, it, self.task) for it in items]
        too_long = [len(it["input_ids"]) for it in items if len(it["input_ids"]) > self.max_length]
        if too_long:
            raise ValueError(
                f"{len(too_long)} sequence(s) longer than max_length={self.max_length} "
                f"(up to {max(too_long)} tokens); filter them first with mdm.data.collate.tokenize_examples"
            )
        b, length = len(items), max(len(it["input_ids"]) for it in items)
        input_ids = torch.full((b, length), self.pad_id, dtype=torch.long)
        attention = torch.zeros((b, length), dtype=torch.long)
        delim = torch.zeros((b, length), dtype=torch.bool)
        syntax = torch.zeros((b, length), dtype=torch.bool)
        for i, it in enumerate(items):
            n = len(it["input_ids"])
            input_ids[i, :n] = torch.tensor(it["input_ids"], dtype=torch.long)
            if "attention_mask" in it:  # an item with its own padding (a task's layout, e.g. MMaDA's left padding)
                attention[i, :n] = torch.tensor(it["attention_mask"], dtype=torch.long)
            else:
                attention[i, : length if self.pad_carries_loss else n] = 1
            delim[i, :n] = torch.tensor(it["delimiter_mask"], dtype=torch.bool)
            syntax[i, :n] = torch.tensor(it["syntax_mask"], dtype=torch.bool)
        prompt_lengths = torch.tensor([it["prompt_length"] for it in items], dtype=torch.long)
        return MDMBatch(input_ids, attention, prompt_lengths, delimiter_mask=delim, syntax_mask=syntax)
