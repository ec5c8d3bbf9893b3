"""`arithlong`: level-1 arith (one name, one addition or subtraction of one-digit numbers) whose response is a long,
mostly templated chain of thought (>= 64 tokens of the tiny tokenizer): the task of the decoding benchmark
(`benchmarks/perf/decoding.py`) where parallel decoding has long confident stretches to commit at once, as in
GSM8K's worked answers. Scored like GSM8K (the number after ####). Train and test prompts are disjoint (the same
hash split as arith and tables).
"""

from __future__ import annotations

import random

from mdm.data.generated import NAMES, OBJECTS, _split_of
from mdm.errors import ConfigError


def _example(rng: random.Random) -> dict:
    n, o = rng.choice(NAMES), rng.choice(OBJECTS)
    if rng.randrange(2) == 0:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        r = a + b
        q = f"{n} has {a} {o}. {n} buys {b} more {o}. How many {o} does {n} have now?"
        steps = [f"{n} has {a} {o} at the start.", f"Then {n} buys {b} more {o}.",
                 f"Buying adds {o}, so we add {b} to {a}.", f"{a} + {b} = {r}.", f"So {n} has {r} {o} now.",
                 f"Check: {r} - {b} = {a}, the number {n} started with."]  # fmt: skip
    else:
        a = rng.randint(3, 9)
        b = rng.randint(1, a - 1)
        r = a - b
        q = f"{n} has {a} {o}. {n} gives {b} {o} away. How many {o} does {n} have now?"
        steps = [f"{n} has {a} {o} at the start.", f"Then {n} gives {b} {o} away.",
                 f"Giving takes {o} away, so we subtract {b} from {a}.", f"{a} - {b} = {r}.",
                 f"So {n} has {r} {o} now.", f"Check: {r} + {b} = {a}, the number {n} started with."]  # fmt: skip
    return {"prompt": q, "response": "\n".join(steps) + f"\n#### {r}", "answer": str(r)}


def loader(split: str, n: int, seed: int = 0, **options) -> list[dict]:
    if options:
        raise ConfigError(f"task.options.{sorted(options)[0]}", "arithlong takes no options")
    rng = random.Random(f"arithlong:{split}:{seed}")
    out, seen = [], set()
    for _ in range(100 * n + 1000):
        if len(out) == n:
            break
        ex = _example(rng)
        if _split_of(ex["prompt"]) != split or ex["prompt"] in seen:
            continue
        seen.add(ex["prompt"])
        out.append({**ex, "task": "arithlong", "id": f"arithlong-{split}-{seed}-{len(out)}"})
    if len(out) < n:
        raise ConfigError("task.n", f"arithlong has only {len(out)} distinct {split} examples; asked for {n}")
    return out
