"""Writes the example data of own_data.yaml: the project's `arith` generator (level 1) in chat `messages` format.

    python benchmarks/examples/make_own_data.py      # own_data.jsonl (300 rows) and own_data_test.jsonl (50)
"""

import json
from pathlib import Path

from mdm.data import make_task

HERE = Path(__file__).resolve().parent


def write(path: Path, split: str, n: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for ex in make_task("arith", split, n=n, seed=0, level=1):
            messages = [{"role": "user", "content": ex["prompt"]}, {"role": "assistant", "content": ex["response"]}]
            f.write(json.dumps({"messages": messages, "answer": ex["answer"]}) + "\n")


if __name__ == "__main__":
    write(HERE / "own_data.jsonl", "train", 300)
    write(HERE / "own_data_test.jsonl", "test", 50)
