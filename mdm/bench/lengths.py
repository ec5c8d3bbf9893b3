"""Token lengths of a task's training rows, for the memory and time plan of `mdm bench --dry-run`.

    stats = task_lengths(cfg.data, cfg.model)   # Lengths(n, mean, p50, p90, p99, longest, source, exact)

Counted with the run's real tokenizer and chat formatting (mdm.data.collate.tokenize_example, the trainer's own
path) on the task's real rows whenever both are reachable (the HF cache, or the hub when online), and cached per
(task, its data options, tokenizer, max_length, this code's format) under $MDM_CACHE/lengths/. When they are not:
  - the rows are here, the tokenizer is not (GSM8K offline): characters / CHARS_PER_TOKEN + the chat template's
    tokens, marked approximate (not cached: the real count replaces it once the tokenizer is prefetched);
  - the rows are not here (HiTab without MDM_HITAB_DIR, OpenScience offline): the statistics in STATED, with
    their source; the longest row is then max_length (rows longer are dropped), the plan's worst case.
Text-to-image rows have one length by construction (MMaDA's t2i prompt: text + image codes + specials).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

from mdm.cache import cache_root, config_hash
from mdm.io import atomic_write_json, read_json

FORMAT = 2  # bump when what is counted changes
# BPE tokenizers of LLaMA-3-size vocabularies average about 4 characters per English token; GSM8K's numbers split
# into short digit groups, so we count 3.5 (more tokens: the plan errs towards more memory)
CHARS_PER_TOKEN = 3.5
CHAT_TOKENS = 16  # LLaDA's chat template around a prompt and a response (BOS, headers, EOT)

# Length statistics where the rows cannot be read here (tokens with the paper model's tokenizer, chat included).
STATED = {
    "hitab": {"mean": 1500, "p50": 1400, "p90": 2300, "p99": 3500, "prompt_mean": 1485, "source": "stated: issue 28 ('HiTab ~1.5k tokens', "
              "'~15-token answers'; benchmarks/table1.yaml avg_tokens); longest = max_length"},
    "openscience": {"mean": 2500, "p50": 2000, "p90": 5000, "p99": 8192, "source": "stated: issue 28 ('OpenScience up to 8,192'"
                    "; avg_tokens 2500 in benchmarks/table1.yaml); longest = max_length (rows over it dropped)"},
}


@dataclass(frozen=True)
class Lengths:
    n: int
    mean: float
    p50: float
    p90: float
    p99: float
    longest: int
    source: str
    exact: bool  # counted with the real tokenizer on the real rows
    prompt_mean: float | None = None  # mean prompt tokens (chat formatting included); None: not known

    def padded_row(self, rows: int) -> float:
        """Tokens a row costs in a micro-batch of `rows` random rows padded to its longest (the collator): the
        median of the longest of `rows` draws, quantile 0.5 ** (1 / rows), interpolated between p50, p90 and p99
        (1 row: the mean; 4 rows: quantile 0.84)."""
        if rows <= 1:
            return self.mean
        q = 0.5 ** (1 / rows)
        points = [(0.5, self.p50), (0.9, self.p90), (0.99, self.p99), (1.0, float(self.longest))]
        for (q0, v0), (q1, v1) in zip(points, points[1:]):
            if q <= q1:
                return max(self.mean, v0 + (v1 - v0) * (q - q0) / (q1 - q0))
        return float(self.longest)


def _quantile(sorted_values: list[int], q: float) -> float:
    return float(sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))])


def _from_counts(counts: list[int], source: str, exact: bool, prompts: list[int]) -> Lengths:
    s = sorted(counts)
    return Lengths(len(s), sum(s) / len(s), _quantile(s, 0.5), _quantile(s, 0.9), _quantile(s, 0.99), s[-1],
                   source, exact, sum(prompts) / len(prompts))


def _tokenizer(source: str):
    """The model's tokenizer from the HF cache (or the hub when online); None when neither has it."""
    # deferred: huggingface_hub, only when a plan counts tokens
    from huggingface_hub import try_to_load_from_cache

    from mdm.remote_code import looks_like_path

    if not looks_like_path(source) and _offline() and \
            not isinstance(try_to_load_from_cache(source, "tokenizer_config.json"), str):
        return None  # not cached and no hub: skip importing transformers
    try:
        # deferred: transformers, only when a plan counts tokens
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(source, trust_remote_code=True, local_files_only=_offline())
    except Exception:  # noqa: BLE001  (offline, not cached, gated: any of these means "not reachable")
        return None


def run_lengths(data, model) -> Lengths:
    """The rows as a run trains them: an MDM run with `data.pad_to` EOS-pads every row to exactly that canvas
    (mdm.train.data.pad_to_canvas), so every row costs pad_to tokens, all of its response and padding maskable."""
    stats = task_lengths(data, model)
    if model.family != "mdm" or not data.pad_to:
        return stats
    n = data.pad_to
    return Lengths(stats.n, n, n, n, n, n, f"every row EOS-padded to pad_to {n} (the text: {stats.source})",
                   stats.exact, stats.prompt_mean)


def task_lengths(data, model) -> Lengths:
    """Token lengths of the training rows of a run's `data` section for its `model` (module docstring); cached on
    disk when exact, and in this process."""
    key = (data.model_dump_json(), model.source, str(model.cache_dir))
    if key not in _SEEN:
        _SEEN[key] = _task_lengths(data, model)
    return _SEEN[key]


_SEEN: dict = {}


def _task_lengths(d, model) -> Lengths:
    task = d.task
    if task == "text-to-image":
        opts = d.options or {}
        text = int(opts.get("max_text_len", 512))
        tokens = min(d.max_length, text + 1024 + 3)  # 512 px MAGVIT-v2: 1,024 codes; <|t2i|>, <|soi|>, <|eoi|>
        return Lengths(d.n_train or 0, tokens, tokens, tokens, tokens, tokens, "by construction: MMaDA's t2i prompt (text "
                       f"{text} + 1,024 image codes + 3 specials)", True, tokens)
    source = model.source
    key = config_hash({"task": task, "options": d.options, "n_train": d.n_train, "max_length": d.max_length,
                       "eos_pad": d.eos_pad, "tokenizer": source, "format": FORMAT})
    path = cache_root(model.cache_dir) / "lengths" / f"{task}-{key}.json"
    cached = read_json(path)
    if cached:
        return Lengths(**cached)
    examples = _rows(d)
    tok = _tokenizer(source) if examples else None
    if examples and tok is not None:
        # deferred: the trainer's tokenization, only when real rows and a real tokenizer are both here
        from mdm.data.collate import tokenize_example
        from mdm.data.tasks import get_task

        spec = get_task(task)
        counts, prompts = [], []
        for ex in examples:
            item = tokenize_example(tok, ex, spec)
            n = len(item["input_ids"])
            if d.eos_pad:
                n = max(n, item["prompt_length"] + d.eos_pad)
            if n <= d.max_length:
                counts.append(n)
                prompts.append(item["prompt_length"])
        stats = _from_counts(counts, f"counted: {len(counts)} rows with the {source} tokenizer", True, prompts)
        try:
            atomic_write_json(path, asdict(stats))
        except OSError:
            pass  # a read-only cache: counted again next time
        return stats
    if examples:
        counts = [min(d.max_length, CHAT_TOKENS + math.ceil((len(e["prompt"]) + len(e["response"])) / CHARS_PER_TOKEN))
                  for e in examples]
        if d.eos_pad:
            counts = [max(c, d.eos_pad + CHAT_TOKENS) for c in counts]
        prompts = [CHAT_TOKENS + math.ceil(len(e["prompt"]) / CHARS_PER_TOKEN) for e in examples]
        return _from_counts(counts, f"approx: {len(examples)} rows, characters / {CHARS_PER_TOKEN} + {CHAT_TOKENS} "
                            f"(the {source} tokenizer is not in the HF cache: mdm prefetch)", False, prompts)
    stated = STATED.get(task)
    if stated is None:
        half = d.max_length / 2
        return Lengths(0, half, half, d.max_length, d.max_length, d.max_length, "unknown: rows not reachable; max_length / 2 "
                       "(mean) and max_length (longest)", False)
    return Lengths(0, stated["mean"], stated["p50"], min(stated["p90"], d.max_length),
                   min(stated["p99"], d.max_length), d.max_length, stated["source"], False, stated.get("prompt_mean"))


STREAMED = ("openscience",)


def _offline() -> bool:
    # deferred: preflight's one hub probe, shared (preflight imports this module's users)
    from mdm.bench.preflight import offline  # switched off, or not answering

    return offline()


def _rows(data) -> list[dict] | None:
    """The task's training rows, or None when they are not reachable here (no network, no MDM_HITAB_DIR)."""
    # deferred: the data loaders, only when a plan counts tokens
    from mdm.errors import ConfigError
    from mdm.train.data import load_examples

    if data.task in STREAMED and _offline():  # streamed from the hub, which is switched off
        return None
    try:
        return load_examples(data)
    except (ConfigError, OSError, ValueError, json.JSONDecodeError):
        return None
