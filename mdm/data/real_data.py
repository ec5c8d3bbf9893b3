"""Loaders of the real data: GSM8K (../shared/data/gsm8k, else the hub), HiTab (a checkout: MDM_HITAB_DIR) and
OpenScience (nvidia/OpenScienceReasoning-2, streamed; rows selected by their length in the model's tokens)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from mdm.data.formats import TABLE_INSTRUCTION, last_boxed, render_table_html, table_prompt
from mdm.errors import ConfigError

# ---------------------------------------------------------------- real data: GSM8K


def gsm8k_dir() -> Path:
    env = os.environ.get("MDM_GSM8K_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "gsm8k"


def load_gsm8k(split: str, n: int | None = None, root: str | Path | None = None) -> list[dict]:
    """GSM8K from local JSONL ({question, answer}); the hub's openai/gsm8k (main) if the folder is absent."""
    path = Path(root) if root is not None else gsm8k_dir()
    if root is not None and not path.is_dir():  # never the hub's GSM8K in place of the user's data
        raise ConfigError("task.options.root", f"{path}: no such directory (a GSM8K-format folder holds "
                          f"{split}.jsonl with question, answer)")
    if path.is_dir():
        rows = _read_jsonl(path / f"{split}.jsonl", ("question", "answer"))
    else:
        import datasets  # deferred: datasets (slow import), only when GSM8K is loaded

        rows = datasets.load_dataset("openai/gsm8k", "main", split=split)
    out = []
    for i, row in enumerate(rows):
        if n is not None and i >= n:
            break
        final = row["answer"].rsplit("####", 1)[-1].strip()
        ex = {"prompt": row["question"], "response": row["answer"], "answer": final}
        out.append({**ex, "task": "gsm8k", "id": f"gsm8k-{split}-{i}"})
    return out


def _read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in required if k not in row]
            if missing:
                raise ValueError(
                    f"{path}:{lineno}: missing key {missing[0]!r} (required: {', '.join(required)})"
                )
            rows.append({**row, "_line": lineno})
    return rows


# ---------------------------------------------------------------- real data: HiTab

HITAB_SAMPLE_KEYS = ("id", "table_id", "question", "answer")
HITAB_TABLE_KEYS = ("texts", "top_header_rows_num", "left_header_columns_num", "merged_regions")


def load_hitab_table(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"{path}: table file not found")
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg})") from None
    missing = [k for k in HITAB_TABLE_KEYS if k not in table]
    if missing:
        raise ValueError(f"{path}: missing key {missing[0]!r} (required: {', '.join(HITAB_TABLE_KEYS)})")
    return table


def hitab_response(answers: list[str]) -> str:
    return "The answer is " + ", ".join(f"\\boxed{{{a}}}" for a in answers) + "."


def load_hitab(root: str | Path, split: str, n: int | None = None) -> list[dict]:
    """HiTab checkout: root/data/{split}_samples.jsonl + root/data/tables/raw/<table_id>.json.

    The prompt is the table title, the HTML table, an answer-format instruction and the question; the response
    boxes each gold answer (the paper's chain-of-thought SFT file is unreleased, so it is answer-only).
    `aggregation` and `linked_cells` are passed through for analysis."""
    root = Path(root)
    samples_path = root / "data" / f"{split}_samples.jsonl"
    samples = _read_jsonl(samples_path, HITAB_SAMPLE_KEYS)
    tables: dict[str, tuple[str, str]] = {}  # table_id -> (title, html)
    out = []
    for s in samples[:n] if n is not None else samples:
        tid = str(s["table_id"])
        if tid not in tables:
            path = root / "data" / "tables" / "raw" / f"{tid}.json"
            try:
                table = load_hitab_table(path)
            except FileNotFoundError as e:
                raise FileNotFoundError(f"{e} (table_id of {samples_path}:{s['_line']})") from None
            tables[tid] = (str(table.get("title") or ""), render_table_html(table))
        title, table_html = tables[tid]
        answers = [_answer_text(a) for a in (s["answer"] if isinstance(s["answer"], list) else [s["answer"]])]
        out.append(
            {
                "prompt": table_prompt(table_html, s["question"], TABLE_INSTRUCTION, title),
                "response": hitab_response(answers),
                "answer": answers,
                "task": "hitab",
                "id": str(s["id"]),
                "aggregation": s.get("aggregation"),
                "linked_cells": s.get("linked_cells"),
            }
        )
    return out


def _answer_text(a) -> str:
    if isinstance(a, float) and a.is_integer():
        return str(int(a))
    return str(a)


# ---------------------------------------------------------------- real data: OpenScience

OPENSCIENCE_HUB_ID = "nvidia/OpenScienceReasoning-2"


def approx_tokens(text: str) -> int:
    """About 4 characters per BPE token: only to pick a tiny tokenizer's training text (`mdm.train.model`), never
    to select a run's train or test rows (`token_counter`)."""
    return math.ceil(len(text) / 4)


def token_counter(tokenizer) -> Callable[[str], int]:
    """The one token counter of OpenScience's selection, for training (`mdm.train.data.load_examples`) and
    evaluation (`mdm.eval.api.eval_examples`) alike: the model's tokens of the text, no special tokens."""
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def select_openscience(
    rows: Iterable[dict],
    split: str,
    n: int | None = None,
    n_train: int = 5000,
    n_eval: int = 1000,
    max_tokens: int = 8192,
    *,
    count_tokens: Callable[[str], int],
    input_key: str = "input",
    output_key: str = "output",
) -> list[dict]:
    """The paper's selection: training = the first `n_train` rows shorter than `max_tokens` tokens (prompt +
    response); evaluation = the next `n_eval` such rows after them, so the two never overlap. Rows whose
    output has no `\\boxed{}` answer cannot be scored and are skipped for both."""
    if split not in ("train", "test"):
        raise ConfigError("task.split", f"openscience has no split {split!r}; allowed: train, test")
    want = n_train if split == "train" else n_eval
    if n is not None:
        want = min(want, n)
    kept, out = 0, []
    for i, row in enumerate(rows):
        if len(out) >= want:
            break
        prompt, response = row[input_key], row[output_key]
        answer = last_boxed(response)
        if answer is None or count_tokens(prompt + response) >= max_tokens:
            continue
        kept += 1
        if split == "test" and kept <= n_train:
            continue
        ex = {"prompt": prompt, "response": response, "answer": answer.strip()}
        out.append({**ex, "task": "openscience", "id": f"openscience-{i}"})
    return out


def load_openscience(
    split: str, n: int | None = None, tokenizer=None, dataset: Iterable[dict] | None = None, **select_options
) -> list[dict]:
    """Rows of the hub dataset's train split, streamed in order (needs internet). Lengths are counted in the
    model's tokens (`tokenizer`, the paper's rule, through `token_counter`); a `count_tokens` of one's own is only
    for a tiny tokenizer's training text. Neither given: a ConfigError (train and test rows could overlap)."""
    if tokenizer is not None:
        select_options.setdefault("count_tokens", token_counter(tokenizer))
    if "count_tokens" not in select_options:
        raise ConfigError("task.tokenizer", "openscience selects rows by their length in the model's tokens: pass "
                          "the run's tokenizer (make_task('openscience', ..., tokenizer=tok))")
    if dataset is None:
        import datasets  # deferred: datasets (slow import), only when OpenScience is loaded

        dataset = datasets.load_dataset(OPENSCIENCE_HUB_ID, split="train", streaming=True)
    return select_openscience(dataset, split, n, **select_options)
