"""Tasks: tiny generated tasks in the real tasks' formats (CPU experiments), and loaders for the real data.

Every example is a dict {"prompt", "response", "answer", "task", "id"}. Each task also declares what the
variance reducers need from the data layer: its ISAD answer delimiters and its SyRM prompt syntax patterns
(METHODS.md sections 5-6), found on decoded text so they work with any tokenizer.

    make_task("arith", "train", n=2000, seed=0)      # GSM8K-style word problems, "#### <int>"
    make_task("tables", "test", n=200)               # HiTab-style HTML tables, "\\boxed{...}"
    make_task("gsm8k", "test")                       # ../shared/data/gsm8k, else the hub
    make_task("hitab", "test", root="/data/HiTab")   # a HiTab checkout (or env MDM_HITAB_DIR)
    make_task("openscience", "train", tokenizer=tok) # nvidia/OpenScienceReasoning-2 (needs internet)
    make_task("dataset", "train", path="my.jsonl")  # the user's own data (mdm.data.dataset)

A task whose spec depends on its options (`dataset`: scorer, delimiters, syntax patterns) builds it with
`get_task(name, options)`; pass that TaskSpec to `tokenize_examples` / `Collator`.

Generated tasks put a prompt in the test split iff a hash of the prompt says so, so train and test are
disjoint for every seed, and examples are deduplicated by prompt within a split. Their one option, `level`,
sizes them (same format, same scorer): 2 (default) is two-three step problems and tables of up to 8 cells;
1 is one-step problems on one-digit numbers with a single name, and one-year tables of 1-2 rows.

    make_task("arith", "train", n=800, level=1)      # "Ava has 3 apples. Ava buys 4 more apples. ..."
"""

from __future__ import annotations

import hashlib
import html
import importlib
import json
import math
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mdm.errors import ConfigError

Span = tuple[int, int]

GSM8K_DELIMITERS = ("####",)
BOXED_DELIMITERS = ("\\boxed{", "}")  # "}" = only the brace that closes the box
HTML_TAGS = ("table", "thead", "tbody", "tr", "th", "td")
HTML_SYNTAX = tuple(f"<{t}>" for t in HTML_TAGS) + tuple(f"</{t}>" for t in HTML_TAGS) + ("</", "<", ">")
TABLE_INSTRUCTION = "Answer the question about the table. Put the final answer in \\boxed{}."


# ---------------------------------------------------------------- spans on decoded text


def find_all(text: str, patterns: Iterable[str]) -> list[Span]:
    """Character spans of every (possibly overlapping) occurrence of every pattern."""
    spans = []
    for pat in patterns:
        i = text.find(pat)
        while pat and i != -1:
            spans.append((i, i + len(pat)))
            i = text.find(pat, i + 1)
    return sorted(spans)


def closing_brace(text: str, open_index: int) -> int | None:
    """Index of the "}" matching the "{" at open_index, or None when it is never closed."""
    depth = 0
    for j in range(open_index, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return j
    return None


def boxed_spans(text: str) -> list[Span]:
    """Each `\\boxed{` and the `}` that closes it (not the braces inside the answer)."""
    spans = []
    for s, e in find_all(text, [BOXED_DELIMITERS[0]]):
        spans.append((s, e))
        j = closing_brace(text, e - 1)
        if j is not None:
            spans.append((j, j + 1))
    return sorted(spans)


def last_boxed(text: str) -> str | None:
    spans = find_all(text, [BOXED_DELIMITERS[0]])
    for _, e in reversed(spans):
        j = closing_brace(text, e - 1)
        if j is not None:
            return text[e:j]
    return None


# ---------------------------------------------------------------- task declarations


@dataclass(frozen=True)
class TaskSpec:
    name: str
    splits: tuple[str, ...]
    delimiters: tuple[str, ...]  # ISAD answer delimiters (response part)
    syntax_patterns: tuple[str, ...]  # SyRM syntax tokens (prompt part)
    metric: str  # mdm.eval.scorers rule: "gsm8k" | "hitab" | "boxed" | "exact" | "none"; "clip": its evaluate hook
    generated: bool = False
    # options -> the TaskSpec of a task whose declarations are options (`dataset`); None: fixed declarations
    from_options: Callable[[dict], TaskSpec] | None = field(default=None, compare=False, repr=False)
    # the paper's task this one stands for in reports (same format and scorer): its number is shown beside ours
    stands_for: str | None = None
    # rows selected by their length in the model's tokens (OpenScience): train and test selection both count them
    # with the run's tokenizer (`token_counter`), which the loader then requires
    counts_tokens: bool = False
    # test items the paper scored, where it states a count that differs from the split's (HiTab: 1,412 of 1,584,
    # by an unstated rule); recorded beside ours in every evaluation (`mdm.eval.api`)
    paper_eval_n: int | None = None
    # plugin hooks, "module:function", imported on first use (a task plugin outside this layer is named, never
    # imported, by the data layer; the runner, spec checks and report call hooks, never a task by name):
    #   loader(split, n, seed, **options) -> examples
    #   check(run_config) -> None or ConfigError (a spec check, mdm train and the Trainer's setup call it)
    #   tokenizer(cache_dir, **options) -> the tiny model's tokenizer (a task with its own vocabulary)
    #   tokenize(tokenizer, examples, max_length, model_config, **options) -> (items, dropped) in the model's layout
    #   evaluate(run_dir, settings) -> mdm.eval.api.evaluate_run's result (decode + score a trained run)
    #   report(rows, run_roots, out_dir) -> README lines linking the task's own report files
    hooks: dict[str, str] = field(default_factory=dict, compare=False)

    def hook(self, name: str) -> Callable | None:
        target = self.hooks.get(name)
        if target is None:
            return None
        module, function = target.split(":")
        return getattr(importlib.import_module(module), function)

    def delimiter_spans(self, text: str) -> list[Span]:
        if self.delimiters == BOXED_DELIMITERS:
            return boxed_spans(text)
        return find_all(text, self.delimiters)

    def syntax_spans(self, text: str) -> list[Span]:
        return find_all(text, self.syntax_patterns)


def _dataset_spec(options: dict) -> TaskSpec:
    from mdm.data.dataset import dataset_spec  # deferred: mdm.data.dataset imports this module

    return dataset_spec(options)


TASKS: dict[str, TaskSpec] = {
    "arith": TaskSpec("arith", ("train", "test"), GSM8K_DELIMITERS, (), "gsm8k", generated=True, stands_for="gsm8k"),
    "tables": TaskSpec("tables", ("train", "test"), BOXED_DELIMITERS, HTML_SYNTAX, "hitab", generated=True,
                       stands_for="hitab"),
    "gsm8k": TaskSpec("gsm8k", ("train", "test"), GSM8K_DELIMITERS, (), "gsm8k"),
    "hitab": TaskSpec("hitab", ("train", "dev", "test"), BOXED_DELIMITERS, HTML_SYNTAX, "hitab", paper_eval_n=1412),
    "openscience": TaskSpec("openscience", ("train", "test"), BOXED_DELIMITERS, (), "boxed", counts_tokens=True),
    # tiny scenes: caption prompt -> image-code response (mdm.t2i); scored by CLIP score + attribute accuracy
    "text-to-image": TaskSpec("text-to-image", ("train", "test"), (), (), "clip", generated=True,
                              stands_for="text-to-image-2m", hooks={
                                  h: f"mdm.t2i.task:{h}" for h in ("loader", "tokenizer", "tokenize", "check", "evaluate",
                                                                   "report")}),
    # level-1 arith with a long worked answer (>= 64 tokens): the decoding benchmark's long-answer task
    "arithlong": TaskSpec("arithlong", ("train", "test"), GSM8K_DELIMITERS, (), "gsm8k", generated=True,
                          hooks={"loader": "mdm.data.long_arith:loader"}),
    # the user's own data: a file, a save_to_disk folder or a hub id; scorer and delimiters are options
    "dataset": TaskSpec("dataset", ("train", "test"), (), (), "exact", from_options=_dataset_spec),
}


def get_task(task: str | TaskSpec, options: dict | None = None) -> TaskSpec:
    """The TaskSpec of a task name; `options` (the run's data.options) matter only for tasks declared by them."""
    if isinstance(task, TaskSpec):
        return task
    if task not in TASKS:
        raise ConfigError("task", f"unknown task {task!r}; allowed: {', '.join(TASKS)}")
    spec = TASKS[task]
    return spec.from_options(options or {}) if spec.from_options else spec


def make_task(name: str, split: str = "train", /, n: int | None = None, seed: int = 0, **options) -> list[dict]:
    """Examples of task `name`. Generated tasks: `n` (default 1000) examples drawn with `seed`.
    Real data: the first `n` examples of the split (all when n is None); `seed` is unused.
    `options` go to the loader (generated: level; hitab: root; openscience: tokenizer, max_tokens, n_train, n_eval,
    dataset; task dataset: mdm.data.dataset.OPTIONS, whose `split` is the source's split, not `split` here)."""
    spec = get_task(name)
    if split not in spec.splits:
        raise ConfigError(
            "task.split", f"task {name!r} has no split {split!r}; allowed: {', '.join(spec.splits)}"
        )
    if name == "dataset":
        from mdm.data.dataset import load_dataset_task  # deferred: mdm.data.dataset imports this module

        return load_dataset_task(split, n, **options)
    loader = spec.hook("loader")
    if loader is not None:
        return loader(split, 1000 if n is None else n, seed, **options)
    if spec.generated:
        unknown = sorted(set(options) - {"level"})
        if unknown:
            raise ConfigError(f"task.options.{unknown[0]}", f"generated task {name!r} takes only the option 'level'")
        return generate(name, split, 1000 if n is None else n, seed, **options)
    if name in ("gsm8k", "hitab") and set(options) - {"root"}:
        unknown = sorted(set(options) - {"root"})[0]
        raise ConfigError(f"task.options.{unknown}", f"unknown option of task {name!r}; allowed: root")
    if name == "gsm8k":
        return load_gsm8k(split, n, **options)
    if name == "hitab":
        root = options.pop("root", None) or os.environ.get("MDM_HITAB_DIR")
        if not root:
            raise ConfigError("task.root", "hitab needs a HiTab checkout: pass root=... or set MDM_HITAB_DIR")
        return load_hitab(root, split, n, **options)
    return load_openscience(split, n, **options)


# ---------------------------------------------------------------- generated: arith (GSM8K-style)

NAMES = ("Ava", "Ben", "Cleo", "Dan", "Eli", "Fay", "Gus", "Hana", "Ivan", "Jill", "Kai", "Lena")
OBJECTS = ("apples", "pencils", "stickers", "marbles", "cookies", "books", "shells", "cards")


def _arith(rng: random.Random) -> tuple[str, list[str], int]:
    n, m, p = rng.sample(NAMES, 3)
    o = rng.choice(OBJECTS)
    kind = rng.randrange(4)
    if kind == 0:  # add, subtract
        a, b = rng.randint(2, 19), rng.randint(2, 19)
        c = rng.randint(1, min(19, a + b - 1))
        r = a + b - c
        q = (
            f"{n} has {a} {o}. {n} buys {b} more {o} and then gives {c} {o} to {m}. "
            f"How many {o} does {n} have now?"
        )
        steps = [
            f"After buying, {n} has {a} + {b} = {a + b} {o}.",
            f"After giving some away, {n} has {a + b} - {c} = {r} {o}.",
        ]
    elif kind == 1:  # multiply, add
        a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 19)
        r = a * b + c
        q = (
            f"{n} buys {a} boxes of {o} with {b} {o} in each box. {n} already had {c} {o}. "
            f"How many {o} does {n} have in total?"
        )
        steps = [f"The boxes hold {a} * {b} = {a * b} {o}.", f"In total {n} has {a * b} + {c} = {r} {o}."]
    elif kind == 2:  # add, divide
        k = rng.randint(2, 5)
        r = rng.randint(2, min(9, 38 // k))  # so that both addends can stay below 20
        a = rng.randint(max(1, k * r - 19), min(19, k * r - 1))
        b = k * r - a
        q = (
            f"{n} collects {a} {o} on Monday and {b} {o} on Tuesday. "
            f"{n} shares them equally among {k} friends. How many {o} does each friend get?"
        )
        steps = [f"{n} collects {a} + {b} = {k * r} {o}.", f"Each friend gets {k * r} / {k} = {r} {o}."]
    else:  # multiply, subtract, add
        a, k = rng.randint(2, 9), rng.randint(2, 4)
        c = rng.randint(1, min(19, a * k - 1))
        mid = a * k - c
        r = a + mid
        q = (
            f"{n} has {a} {o}. {m} has {k} times as many {o} as {n}. {p} has {c} fewer {o} than {m}. "
            f"How many {o} do {n} and {p} have together?"
        )
        steps = [
            f"{m} has {a} * {k} = {a * k} {o}.",
            f"{p} has {a * k} - {c} = {mid} {o}.",
            f"Together they have {a} + {mid} = {r} {o}.",
        ]
    return q, steps, r


def _arith_one_step(rng: random.Random) -> tuple[str, list[str], int]:
    """Level 1: one name, one operation on one-digit numbers."""
    n, o, kind = rng.choice(NAMES), rng.choice(OBJECTS), rng.randrange(3)
    if kind == 0:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        r, q = a + b, f"{n} has {a} {o}. {n} buys {b} more {o}. How many {o} does {n} have now?"
        steps = [f"{n} has {a} + {b} = {r} {o}."]
    elif kind == 1:
        a = rng.randint(3, 9)
        b = rng.randint(1, a - 1)
        r, q = a - b, f"{n} has {a} {o}. {n} gives {b} {o} away. How many {o} does {n} have now?"
        steps = [f"{n} has {a} - {b} = {r} {o}."]
    else:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        r, q = a * b, f"{n} buys {a} boxes of {o} with {b} {o} in each box. How many {o} does {n} buy?"
        steps = [f"{n} buys {a} * {b} = {r} {o}."]
    return q, steps, r


def _arith_example(rng: random.Random, level: int = 2) -> dict:
    prompt, steps, r = (_arith_one_step if level == 1 else _arith)(rng)
    return {"prompt": prompt, "response": "\n".join(steps) + f"\n#### {r}", "answer": str(r)}


# ---------------------------------------------------------------- generated: tables (HiTab-style)

THEMES = (
    {"corner": "province", "unit": "workers", "sub": ("men", "women"),
     "groups": {"east": ("quebec", "ontario", "nova scotia"), "west": ("alberta", "manitoba", "yukon")}},
    {"corner": "sector", "unit": "jobs", "sub": ("full-time", "part-time"),
     "groups": {"goods": ("farming", "mining", "building"), "services": ("retail", "health", "teaching")}},
    {"corner": "age group", "unit": "residents", "sub": ("urban", "rural"),
     "groups": {"youth": ("15 to 19", "20 to 24", "25 to 29"),
                "adults": ("30 to 44", "45 to 64", "65 and over")}},
)  # fmt: skip
YEARS = ("2017", "2018", "2019", "2020", "2021")


def _tables_example(rng: random.Random, level: int = 2) -> dict:
    theme = rng.choice(THEMES)
    years = sorted(rng.sample(YEARS, 1 if level == 1 else rng.randint(1, 2)))
    sub = theme["sub"]
    cols = [(y, s) for y in years for s in sub]
    if level == 1:  # one year, 1-2 data rows in one group (2-4 cells), one-digit values
        layout, top = rng.choice([(1,), (2,)]), 9
    else:  # 2-3 data rows in 1-2 row groups; at most 8 data cells, so prompts stay near 200 tokens
        layout, top = rng.choice([(2,), (1, 1)] if len(years) == 2 else [(2,), (3,), (1, 1), (2, 1), (1, 2)]), 19
    group_names = rng.sample(sorted(theme["groups"]), len(layout))
    rows = [(g, label) for g, k in zip(group_names, layout) for label in rng.sample(theme["groups"][g], k)]
    values = {(r[1], c): rng.randint(1, top) for r in rows for c in cols}

    texts = [
        [theme["corner"], ""] + [y if i % 2 == 0 else "" for y in years for i in range(2)],
        ["", ""] + [s for _ in years for s in sub],
    ]
    merged = [_region(0, 1, 0, 1)] + [_region(0, 0, 2 + 2 * i, 3 + 2 * i) for i in range(len(years))]
    r0 = 2
    for k in layout:
        if k > 1:
            merged.append(_region(r0, r0 + k - 1, 0, 0))
        r0 += k
    prev = None
    for g, label in rows:
        texts.append([g if g != prev else "", label] + [str(values[(label, c)]) for c in cols])
        prev = g
    table = {"texts": texts, "top_header_rows_num": 2, "left_header_columns_num": 2, "merged_regions": merged}

    unit = theme["unit"]
    (year, s), label = rng.choice(cols), rng.choice(rows)[1]
    v = values[(label, (year, s))]
    kind = rng.choice(["lookup", "sum", "diff", "max"])
    if kind == "sum":
        other = sub[1 - sub.index(s)]
        w = values[(label, (year, other))]
        question = f"how many {unit} were there in {label} in {year}, {s} and {other} combined?"
        reasoning, answer = f"{s}: {v}. {other}: {w}. {v} + {w} = {v + w}.", str(v + w)
    elif kind == "diff" and len(rows) > 1 and (pair := _distinct_pair(rng, rows, values, (year, s))):
        (hi, a), (lo, b) = pair
        question = f"how many more {s} {unit} were there in {hi} than in {lo} in {year}?"
        reasoning, answer = f"{hi}: {a}. {lo}: {b}. {a} - {b} = {a - b}.", str(a - b)
    elif kind == "max" and len(rows) > 1 and _unique_max(rows, values, (year, s)):
        column = [(lab, values[(lab, (year, s))]) for _, lab in rows]
        best = max(column, key=lambda x: x[1])
        question = f"which {theme['corner']} had the most {s} {unit} in {year}?"
        reasoning = " ".join(f"{lab}: {x}." for lab, x in column) + f" The largest is {best[1]}."
        answer = best[0]
    else:
        question = f"how many {s} {unit} were there in {label} in {year}?"
        reasoning, answer = f"The {label} row and the {year} {s} column give {v}.", str(v)
    return {
        # level 1 spaces its cells: a tiny BPE has no shared representation of `6` and ` 6` (a pretrained LLM has),
        # so without the space the lookup is a learned token mapping, not a copy (README "Tiny tasks")
        "prompt": table_prompt(render_table_html(table, cell_space=level == 1), question),
        "response": f"{reasoning}\nThe answer is \\boxed{{{answer}}}.",
        "answer": [answer],
    }


def _region(r0: int, r1: int, c0: int, c1: int) -> dict:
    return {"first_row": r0, "last_row": r1, "first_column": c0, "last_column": c1}


def _distinct_pair(rng, rows, values, col):
    a, b = rng.sample([lab for _, lab in rows], 2)
    va, vb = values[(a, col)], values[(b, col)]
    if va == vb:
        return None
    return ((a, va), (b, vb)) if va > vb else ((b, vb), (a, va))


def _unique_max(rows, values, col) -> bool:
    column = sorted((values[(lab, col)] for _, lab in rows), reverse=True)
    return column[0] > column[1]


GENERATORS: dict[str, Callable[..., dict]] = {"arith": _arith_example, "tables": _tables_example}
LEVELS = (1, 2)  # 2: the default; 1: easier problems in the same format (one step / small tables)


def _split_of(prompt: str) -> str:
    return "test" if int(hashlib.sha1(prompt.encode()).hexdigest()[:8], 16) % 5 == 0 else "train"


def generate(name: str, split: str, n: int, seed: int = 0, level: int = 2) -> list[dict]:
    if level not in LEVELS:
        raise ConfigError("task.options.level", f"level {level!r} of {name!r}; allowed: {', '.join(map(str, LEVELS))}")
    # str seeds are hashed with sha512: stable across runs; level 2 keeps the seed string it always had
    rng = random.Random(f"{name}:{split}:{seed}" + ("" if level == 2 else f":level{level}"))
    out, seen = [], set()
    for _ in range(100 * n + 1000):
        if len(out) == n:
            return out
        ex = GENERATORS[name](rng, level)
        if _split_of(ex["prompt"]) != split or ex["prompt"] in seen:
            continue
        seen.add(ex["prompt"])
        out.append({**ex, "task": name, "id": f"{name}-{split}-{seed}-{len(out)}"})
    if len(out) == n:
        return out
    raise ConfigError("task.n", f"{name} level {level} has only {len(out)} distinct {split} examples; asked for {n}")


# ---------------------------------------------------------------- HTML tables (HiTab layout)


def render_table_html(table: dict, cell_space: bool = False) -> str:
    """HiTab table JSON -> HTML: header rows in <thead> with <th>, left header columns as <th>, merged
    regions as rowspan/colspan (a region crossing the thead/tbody boundary is cut at it). `cell_space`: a space
    before each cell's text, so a word-level BPE gives a cell the tokens the question and answer use (` 6`)."""
    texts, top, left = table["texts"], table["top_header_rows_num"], table["left_header_columns_num"]
    spans, covered = {}, set()
    for reg in table.get("merged_regions") or []:
        r0, r1, c0, c1 = reg["first_row"], reg["last_row"], reg["first_column"], reg["last_column"]
        if r0 < top <= r1:
            r1 = top - 1
        spans[(r0, c0)] = (r1 - r0 + 1, c1 - c0 + 1)
        covered |= {(i, j) for i in range(r0, r1 + 1) for j in range(c0, c1 + 1)} - {(r0, c0)}
    rows = []
    for i, row in enumerate(texts):
        cells = []
        for j, cell in enumerate(row):
            if (i, j) in covered:
                continue
            tag = "th" if i < top or j < left else "td"
            rs, cs = spans.get((i, j), (1, 1))
            attrs = (f' rowspan="{rs}"' if rs > 1 else "") + (f' colspan="{cs}"' if cs > 1 else "")
            text = html.escape("" if cell is None else str(cell), quote=False)
            text = " " + text if cell_space and text else text
            cells.append(f"<{tag}{attrs}>{text}</{tag}>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = f"<thead>{''.join(rows[:top])}</thead>" if top else ""
    return f"<table>{head}<tbody>{''.join(rows[top:])}</tbody></table>"


def table_prompt(table_html: str, question: str, instruction: str = "", title: str = "") -> str:
    """Optional title line, HTML table, optional instruction, question. The generated task leaves the
    instruction out to keep prompts short (a tiny model learns the answer format from its training data)."""
    lines = [title, table_html, instruction, f"Question: {question}"]
    return "\n".join(line for line in lines if line)


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
