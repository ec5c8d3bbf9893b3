"""Tasks: the registry of task declarations (`TaskSpec`, `TASKS`, `get_task`) and `make_task`, which draws a
tiny generated task (mdm.data.generated, in the real tasks' formats: CPU experiments) or loads real data
(mdm.data.real_data); the shared text formats live in mdm.data.formats. Every name stays importable from here.

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

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from mdm.data.formats import (  # noqa: F401  (re-exported: the task layer's text formats)
    BOXED_DELIMITERS,
    GSM8K_DELIMITERS,
    HTML_SYNTAX,
    HTML_TAGS,
    TABLE_INSTRUCTION,
    Span,
    boxed_spans,
    closing_brace,
    find_all,
    last_boxed,
    render_table_html,
    table_prompt,
)
from mdm.data.generated import generate
from mdm.data.real_data import (  # noqa: F401  (re-exported: loaders of the real data)
    OPENSCIENCE_HUB_ID,
    approx_tokens,
    gsm8k_dir,
    load_gsm8k,
    load_hitab,
    load_openscience,
    select_openscience,
    token_counter,
)
from mdm.errors import ConfigError

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
