"""The tiny generated tasks, in the real tasks' formats: `arith` (GSM8K-style word problems, "#### <int>") and
`tables` (HiTab-style HTML tables, "\\boxed{...}"), at two levels. A prompt is in the test split iff a hash of it
says so, so train and test are disjoint for every seed; examples are deduplicated by prompt within a split."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

from mdm.data.formats import render_table_html, table_prompt
from mdm.errors import ConfigError

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
