"""Training data: examples -> 90/10 split -> tokenized items, and the global-batch layout of every step.

The examples of optimizer step s are fixed by (seed, epoch) alone, never by the number of processes:
every process computes the same global batch, takes its contiguous slice of rows, cuts it into
micro-batches, and passes each row's index in the global batch as `positions`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mdm.data import get_task, make_task, tokenize_examples
from mdm.errors import ConfigError
from mdm.objective.rng import generator
from mdm.train.config import DataConfig


def _data_where(where: str) -> str:
    return "data." + where.removeprefix("task.") if where.startswith("task.") else where


def load_examples(cfg: DataConfig, tokenizer=None, echo=None) -> list[dict]:
    """The task's training examples; a problem with the data (a missing file, a bad row, an unknown option, no
    rows) is one ConfigError naming the key or file. `tokenizer`: the run's (`mdm.train.model.counting_tokenizer`),
    which a task selecting rows by token count (OpenScience) needs: its test rows are counted with it too. What the
    loader dropped (its `notes`) goes to `echo`."""
    spec = get_task(cfg.task)
    options = dict(cfg.options)
    if spec.counts_tokens and tokenizer is not None:
        options.setdefault("tokenizer", tokenizer)
    try:
        if spec.generated:
            examples = make_task(cfg.task, "train", n=cfg.n_train or 1000, seed=cfg.data_seed, **options)
        else:
            examples = make_task(cfg.task, "train", n=cfg.n_train, **options)
    except ConfigError as e:
        raise ConfigError(_data_where(e.where), e.problem) from None
    except (OSError, ValueError, TypeError) as e:  # e.g. `path:line: not valid JSON`, a hub id offline
        raise ConfigError("data", f"cannot load the training data of task {cfg.task!r}: {e}") from None
    if not examples:
        where = f" ({cfg.options['root']})" if "root" in cfg.options else ""
        raise ConfigError("data", f"task {cfg.task!r} has no training examples{where}")
    for note in getattr(examples, "notes", ()) if echo else ():
        echo(f"data: {note}")
    return examples


MAX_STEPS = 10_000_000  # more optimizer steps than any run of this toolkit: a typo (epochs: 1e9), refused


def check_before_compute(cfg, n_examples: int) -> None:
    """Checks of a run (`RunConfig`) that need its loaded training examples, before any model is built: the step
    count is sane, and a `dataset` run's test source (what `mdm eval` scores) has the columns the run needs."""
    t = cfg.training
    steps = total_steps(n_examples, t.global_batch_size, t.epochs, t.max_steps)
    if steps > MAX_STEPS:
        key = "training.max_steps" if t.max_steps is not None else "training.epochs"
        raise ConfigError(key, f"{steps:,} optimizer steps ({t.epochs:g} epochs of {n_examples} examples at "
                          f"global_batch_size {t.global_batch_size}) is over {MAX_STEPS:,}; lower epochs or set "
                          "max_steps")
    d = cfg.data
    if d.task == "dataset" and cfg.eval.accuracy is not None and d.spec().metric != "none":
        try:
            make_task("dataset", "test", n=1, **d.options)  # columns, format, a readable file: before training
        except ConfigError as e:
            raise ConfigError(_data_where(e.where), f"{e.problem} (the test source, scored after training)") \
                from None


def split_heldout(examples: list, fraction: float, seed: int) -> tuple[list, list]:
    """A fixed random `fraction` of the training file is held out (for the eval loss)."""
    if fraction <= 0:
        return list(examples), []
    n_held = max(1, round(fraction * len(examples)))
    order = torch.randperm(len(examples), generator=generator(seed, "heldout-split")).tolist()
    held = set(order[:n_held])
    return ([e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held])


@dataclass
class TrainData:
    train: list[dict]  # tokenized items
    heldout: list[dict]
    dropped: int  # longer than max_length (dropped, never truncated)


def pad_with_eos(item: dict, eos_id: int, response_tokens: int) -> dict:
    """LLaDA's SFT padding: EOS tokens after the response (+ EOS) up to `response_tokens`, as real tokens."""
    n = response_tokens - (len(item["input_ids"]) - item["prompt_length"])
    if n <= 0:
        return item
    return {**item, "input_ids": list(item["input_ids"]) + [eos_id] * n,
            "delimiter_mask": list(item["delimiter_mask"]) + [False] * n,
            "syntax_mask": list(item["syntax_mask"]) + [False] * n}


def pad_to_canvas(items: list[dict], eos_id: int, length: int) -> list[dict]:
    """`data.pad_to`: every item EOS-padded (response tokens carrying loss) to exactly `length` tokens."""
    return [pad_with_eos(it, eos_id, length - it["prompt_length"]) for it in items]


def build_data(cfg: DataConfig, tokenizer, eos_pad: bool = True, examples: list[dict] | None = None,
               echo=None, model_config=None) -> TrainData:
    """`eos_pad`: apply `cfg.eos_pad` (MDM runs; ARM runs pass False). `examples`: already loaded. Dropped
    rows are reported through `echo`; more than half of them dropped is a ConfigError. A task plugin with a
    `tokenize` hook lays its items out for the model itself (`model_config`: the model's config)."""
    examples = load_examples(cfg, tokenizer) if examples is None else examples
    train_ex, held_ex = split_heldout(examples, cfg.heldout_fraction, cfg.split_seed)
    spec = cfg.spec()
    limit = min(cfg.max_length, cfg.pad_to or cfg.max_length) if eos_pad else cfg.max_length
    own = spec.hook("tokenize")
    if own is not None:
        try:
            train, d1 = own(tokenizer, train_ex, cfg.max_length, model_config, **cfg.options)
            held, d2 = own(tokenizer, held_ex, cfg.max_length, model_config, **cfg.options)
        except ConfigError as e:
            raise ConfigError(_data_where(e.where), e.problem) from None
    else:
        train, d1 = tokenize_examples(tokenizer, train_ex, spec, limit)
        held, d2 = tokenize_examples(tokenizer, held_ex, spec, limit)
    key = "pad_to" if limit < cfg.max_length else "max_length"
    dropped = f"{d1 + d2} of {len(examples)} examples are longer than {key}={limit} tokens"
    if 2 * (d1 + d2) > len(examples):
        raise ConfigError(f"data.{key}", f"{dropped} and would be dropped; raise {key}")
    if d1 + d2 and echo:
        echo(f"data: {dropped}: dropped ({d1} train, {d2} held-out; the paper drops, never truncates)")
    if cfg.eos_pad and eos_pad:
        train = [pad_with_eos(it, tokenizer.eos_token_id, cfg.eos_pad) for it in train]
        held = [pad_with_eos(it, tokenizer.eos_token_id, cfg.eos_pad) for it in held]
        too_long = [it for it in train + held if len(it["input_ids"]) > cfg.max_length]
        if too_long:
            raise ConfigError("data.eos_pad", f"{cfg.eos_pad}: {len(too_long)} padded sequence(s) longer than "
                              f"max_length={cfg.max_length}; raise max_length or lower eos_pad")
    if cfg.pad_to and eos_pad:  # one canvas for every row: its loss is the same in any micro-batch
        train = pad_to_canvas(train, tokenizer.eos_token_id, cfg.pad_to)
        held = pad_to_canvas(held, tokenizer.eos_token_id, cfg.pad_to)
        if any(len(it["input_ids"]) != cfg.pad_to for it in train + held):
            raise ConfigError("data.pad_to", f"{cfg.pad_to}: some rows are longer once eos_pad is applied; raise "
                              "pad_to or lower eos_pad")
    if cfg.full_sequence:  # pretraining: every token is eligible
        for item in train + held:
            item["prompt_length"] = 0
    if not train:
        raise ConfigError("data.max_length", f"no training example of task {cfg.task!r} fits max_length="
                          f"{cfg.max_length}")
    return TrainData(train, held, d1 + d2)


# ---------------------------------------------------------------- global-batch layout


def steps_per_epoch(n: int, global_batch_size: int) -> int:
    return math.ceil(n / global_batch_size)


def total_steps(n: int, global_batch_size: int, epochs: float, max_steps: int | None) -> int:
    return max_steps if max_steps is not None else max(1, round(epochs * steps_per_epoch(n, global_batch_size)))


def global_batch(n: int, global_batch_size: int, seed: int, step: int) -> tuple[int, list[int]]:
    """(epoch, example indices) of optimizer step `step` (0-based): an epoch-wise shuffle keyed by (seed, epoch);
    the last batch of an epoch may be smaller."""
    spe = steps_per_epoch(n, global_batch_size)
    epoch, b = divmod(step, spe)
    order = torch.randperm(n, generator=generator(seed, "data-order", epoch)).tolist()
    return epoch, order[b * global_batch_size : (b + 1) * global_batch_size]


def split_even(lo: int, hi: int, parts: int) -> list[tuple[int, int]]:
    """[lo, hi) cut into `parts` contiguous ranges whose sizes differ by at most one (some may be empty)."""
    n = hi - lo
    sizes = [n // parts + (1 if i < n % parts else 0) for i in range(parts)]
    out, start = [], lo
    for s in sizes:
        out.append((start, start + s))
        start += s
    return out


def micro_ranges(batch_size: int, num_processes: int, rank: int, accumulation: int) -> list[tuple[int, int]]:
    """Row ranges (in the global batch) of this process's `accumulation` micro-batches."""
    lo, hi = split_even(0, batch_size, num_processes)[rank]
    return split_even(lo, hi, accumulation)


def accumulation_steps(global_batch_size: int, micro_batch_size: int, num_processes: int) -> int:
    return max(1, math.ceil(global_batch_size / (micro_batch_size * num_processes)))
