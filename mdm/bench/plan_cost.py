"""The cost plan of a GPU preset for `mdm bench --dry-run`: per task and method the micro-batch, the per-GPU peak,
whether it fits, and the time of a run split into training, pilot, evaluation and checkpoint I/O; the table's
node-hours and disk. Also `micro_batch_size: auto` (mdm.bench.spec): the largest micro-batch that fits.

Memory: mdm.bench.memory (measured against FakeTensor runs of the real 8B code, tests/bench/test_memory_measured.py)
at the worst micro-batch of the task's real lengths (mdm.bench.lengths): `micro_batch` rows padded to the task's
longest row, every token of every view masked.

Time, on `hardware.count` GPUs at `hardware.mfu` of their bf16 peak (an assumption, printed):
  training    per token pass 6N FLOPs + attention 12 x layers x hidden x s (s: the padded row length), x 4/3 with
              activation checkpointing (every block's forward runs twice); rows cost the padded length of a
              micro-batch of `micro_batch` random rows (Lengths.padded_row), x the method's passes per row.
  pilot       P-POTS 'auto': a x b x c forward passes of a mean row, once per task (cached by mdm.train.ppots and
              reused by every seed and method of the task).
  evaluation  the task's decoding settings: every prompt runs `steps` full forwards of prompt + gen_length tokens
              (no KV cache for a bidirectional model), early stop after the block holding the answer's end where
              the answer length is known (else every block: an upper bound); ARM rows decode with a KV cache.
              Evaluation is its own job under the run's launch (mdm.eval.launch): batches of `batch_size` prompts
              dealt round-robin to the launch's processes, so it takes ceil(batches / processes) batch times.
  checkpoints each checkpoint written at CHECKPOINT_GBPS, the final model written and read back for evaluation
              at the same speed, the model read at the start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mdm.bench import memory
from mdm.bench.estimate import PEAK_TFLOPS
from mdm.bench.lengths import Lengths, run_lengths, task_lengths
from mdm.errors import ConfigError

CHECKPOINT_GBPS = 1.0  # GB/s to and from the run folder's disk (a node's NVMe does 2-6, a shared filesystem 0.5-2)
TEST_ITEMS = {"gsm8k": 1319, "hitab": 1584, "openscience": 1000, "text-to-image": 1000}  # scored items per run
# mean answer tokens where known (early stop); the rest decode every block
ANSWER_TOKENS = {"gsm8k": None, "hitab": None, "openscience": None}


@dataclass
class MemoryCase:
    task: str
    views: int
    micro_batch: int | None  # None: not even one row fits
    longest: int
    peak: float  # bytes per GPU at `micro_batch` (or at 1 row when none fits)
    fits: bool
    chosen: bool  # chosen by the plan (micro_batch_size: auto), not set in the spec


def launch_of(preset, launch_file: str | None = None) -> memory.LaunchPlan | None:
    path = launch_file or (preset.launch.config_file if preset.launch else None)
    if path is None:
        return None
    return memory.read_launch(path, None if launch_file else preset.launch.num_processes)


def peak_bytes(arch, launch, rows: int, length: int, views: int, checkpointing: bool) -> float:
    """Per-GPU peak: model states + the step's peak with every token of every view masked."""
    tokens = rows * length * views
    static = sum(b for _, b in memory.model_states(arch, launch))
    return static + memory.step_peak(arch, tokens, tokens, checkpointing)


def rows_per_process(global_batch: int, processes: int) -> int:
    return max(1, math.ceil(global_batch / processes))


def choose_micro_batch(arch, launch, capacity_gib: float, length: int, views: int, checkpointing: bool,
                       most: int) -> int | None:
    """The largest divisor of `most` (a process's rows per step: every micro-batch full) that fits FIT_FRACTION
    of the GPU."""
    limit = capacity_gib * memory.GIB * memory.FIT_FRACTION
    for mb in (d for d in range(most, 0, -1) if most % d == 0):
        if peak_bytes(arch, launch, mb, length, views, checkpointing) <= limit:
            return mb
    return None


def auto_micro_batch(preset, data, model, training: dict, method, arm, where: str) -> int:
    """`training.micro_batch_size: auto` of a spec preset: the largest micro-batch that fits its hardware under its
    launch for this task's longest row and the method's views. One ConfigError line when it cannot be chosen."""
    # deferred: the method registry imports torch (a spec's errors come first)
    from mdm.objective import Method

    launch = launch_of(preset)
    capacity = memory.device_gib(preset.hardware)
    arch = memory.arch_of(model)
    if launch is None or capacity is None or arch is None:
        missing = "launch.config_file" if launch is None else "hardware (a known GPU or memory_gib)" \
            if capacity is None else f"the shape of {model.source} (not a known hub id)"
        raise ConfigError(where, f"micro_batch_size: auto needs {missing}; set micro_batch_size to a number")
    views = 1 if arm is not None else memory.views_of(Method.build(method).cost)
    if training.get("separate_views"):
        views = 1
    length = run_lengths(data, model).longest
    most = rows_per_process(int(training.get("global_batch_size", 32)), launch.processes)
    mb = choose_micro_batch(arch, launch, capacity, length, views, bool(training.get("gradient_checkpointing")),
                            most)
    if mb is None:
        need = peak_bytes(arch, launch, 1, length, views, bool(training.get("gradient_checkpointing")))
        raise ConfigError(where, f"micro_batch_size: auto: one row of {length} tokens x {views} view(s) needs "
                          f"{need / memory.GIB:.1f} GiB per GPU under {launch.title}, over "
                          f"{memory.FIT_FRACTION:.0%} of {capacity:.1f} GiB; turn on gradient_checkpointing, "
                          "training.separate_views, or shard more (fsdp)")
    return mb


# ---------------------------------------------------------------- time


def _flops_per_token(arch, params: float, seq: float, backward: bool, recompute: bool) -> float:
    attention = 4 * arch.layers * arch.hidden * seq  # QK^T and AV per token, forward, bidirectional
    forward = 2 * params + attention
    if not backward:
        return forward
    return forward * (4 if recompute else 3)


def _hours(flops: float, gpus: int, hardware) -> float:
    peak = hardware.peak_tflops or PEAK_TFLOPS.get(hardware.name)
    return flops / (gpus * peak * 1e12 * hardware.mfu) / 3600


def run_time(run, preset, arch, lengths: Lengths, mb: int, views_cost: float, steps: int, sequences: float,
             launch, text: Lengths | None = None) -> dict:
    """Hours of one run: training (rows as trained: `lengths`), evaluation (prompts: `text`, the rows before any
    EOS canvas), checkpoint I/O (module docstring); the pilot is per task."""
    text = text or lengths
    cfg, hw = run.config, preset.hardware
    n = arch.params
    seq = lengths.padded_row(mb)
    train_flops = sequences * views_cost * seq * _flops_per_token(arch, n, seq, True,
                                                                  cfg.training.gradient_checkpointing)
    train_h = _hours(train_flops, hw.count, hw)
    acc = cfg.eval.accuracy or {}
    eval_h, eval_note = 0.0, "no accuracy evaluation"
    items = acc.get("limit") or acc.get("n") or TEST_ITEMS.get(run.task, 0)
    batch, processes = int(acc.get("batch_size", 16)), launch.processes if launch else 1
    gpus = eval_gpus(items, batch, processes)
    if run.task == "text-to-image":
        steps_dec = int(acc.get("steps", 12))
        tokens = text.mean
        cfg_passes = 2 if float(acc.get("guidance_scale", 0) or 0) > 0 else 1  # classifier-free guidance
        eval_flops = items * steps_dec * cfg_passes * tokens * _flops_per_token(arch, n, tokens, False, False)
        eval_note = f"{items} images x {steps_dec} steps x {cfg_passes} passes"
        eval_h = _hours(eval_flops, gpus, hw)
    elif items:
        gen = int(acc.get("gen_length", 128))
        dec_steps = int(acc.get("steps", gen))
        block = int(acc.get("block_length", gen))
        # the prompt's tokens where known, else the whole row's (an upper bound)
        prompt = text.prompt_mean if text.prompt_mean is not None else text.mean
        if run.arm is not None:  # autoregressive with a KV cache: the prompt once, then one token a step
            eval_flops = items * (prompt + gen) * _flops_per_token(arch, n, prompt + gen, False, False)
            eval_note = f"{items} prompts, {gen} tokens with a KV cache"
        else:
            answer = ANSWER_TOKENS.get(run.task)
            blocks = max(1, gen // block)
            done = min(blocks, math.ceil(answer / block)) if answer else blocks
            calls = dec_steps * done / blocks
            ratio, faster = fast_decoding(acc)
            calls *= ratio or 1.0
            eval_flops = items * calls * (prompt + gen) * _flops_per_token(arch, n, prompt + gen, False, False)
            eval_note = f"{items} prompts x {calls:g} forwards of {prompt + gen:.0f} tokens" + (
                "" if answer else " (no early stop counted)") + (
                "" if text.prompt_mean is not None else "; prompt length unknown: the whole row's, an upper bound") + (
                faster or "")
        eval_h = _hours(eval_flops, gpus, hw)
    if eval_h:
        eval_note += f"; batches of {batch} over {processes} processes ({gpus:.3g} GPUs' worth)"
    every = cfg.training.checkpoint_every
    every = max(1, math.ceil(steps / 4)) if every == "auto" else every
    ckpt = memory.checkpoint_disk(n, launch, steps, every, cfg.training.keep_checkpoints)
    minutes = cfg.training.checkpoint_minutes
    if minutes:  # the wall-clock policy: one each `minutes` of training (before the last step)
        by_time = max(0, math.ceil(train_h * 60 / minutes) - 1)
        if by_time > ckpt["count"]:
            keep = cfg.training.keep_checkpoints
            ckpt = {"size": ckpt["size"], "count": by_time, "written": by_time * ckpt["size"],
                    "peak": min(by_time, keep + 1) * ckpt["size"]}
    model_bytes = 2 * n  # the bf16 model/ the run keeps (DeepSpeed's module), read again for evaluation
    io_h = (ckpt["written"] + 3 * model_bytes) / (CHECKPOINT_GBPS * 1e9) / 3600
    step_h = train_h / max(1, steps)
    interval = min(x for x in (step_h * every if every else None, minutes / 60 if minutes else None, math.inf)
                   if x is not None)
    return {"train_h": train_h, "eval_h": eval_h, "io_h": io_h, "eval_note": eval_note, "ckpt": ckpt,
            "every": every, "minutes": minutes, "interval_h": None if interval == math.inf else interval,
            "model_bytes": model_bytes, "disk_peak": ckpt["peak"] + model_bytes}


def fast_decoding(acc: dict) -> tuple[float | None, str | None]:
    """A faster decoding than the paper's (`eval.accuracy.decoding`: strategy threshold / factor, mdm.decoding):
    its model calls per item as a fraction of exact decoding's, measured by benchmarks/perf/decoding.py on the tiny
    tasks (mdm.decoding.measured_calls_ratio, mean over them), and the note saying so; (None, None) for the paper's
    decoding; (None, note) when that decoding was never measured (exact decoding's calls are counted: an upper
    bound). A KV cache cuts the tokens of each call, not the calls: not counted."""
    # deferred: the decoding registry, only for a plan whose evaluation sets a decoding
    from mdm.decoding import DEFAULT_KEY, KNOBS, decoding_key, measured_calls_ratio

    knobs = dict(acc.get("decoding") or {}) | {k: acc[k] for k in KNOBS if k in acc}
    key = decoding_key(knobs)
    if key.split("+")[0] == DEFAULT_KEY:
        return None, None
    ratio = measured_calls_ratio(knobs)
    if ratio is None:
        return None, f"; decoding {key}: calls never measured (benchmarks/perf/decoding.py), exact's counted"
    return ratio, f"; decoding {key}: x{ratio:.3g} of exact's calls (measured on the tiny tasks)"


def eval_gpus(items: int, batch_size: int, processes: int) -> float:
    """GPUs' worth of a sharded evaluation: `items` prompts in batches of `batch_size`, the batches dealt round-robin
    to `processes` (mdm.sampler.generate's shard), so it takes ceil(batches / processes) batch times, not
    batches / processes (8 batches on 8 GPUs: 8; 9 batches: 4.5)."""
    batches = max(1, math.ceil(items / max(1, batch_size)))
    return batches / math.ceil(batches / max(1, processes))


def pilot_time(run, preset, arch, lengths: Lengths) -> float:
    p = run.config.ppots_pilot
    flops = p.a * p.b * p.c * lengths.mean * _flops_per_token(arch, arch.params, lengths.mean, False, False)
    return _hours(flops, preset.hardware.count, preset.hardware)


# ---------------------------------------------------------------- the printed plan


def _gib(b: float) -> str:
    return f"{b / memory.GIB:.1f}"


def _h(x: float) -> str:
    return f"{x * 60:.0f}min" if x < 1 else f"{x:.1f}h"


def print_cost_plan(preset, runs, estimates: dict, launch_file: str | None, echo=print) -> dict | None:
    """Per (task, method) row: micro-batch, peak GiB, fits, hours per run by part; then the table's node-hours and
    disk. `estimates`: run.index -> mdm.bench.dry_run.estimate(run) (steps, sequences, cost). None when the preset
    has no launch config or no GPU hardware (the tiny preset: its measured rate is the plan)."""
    # deferred: the method registry imports torch
    from mdm.objective import Method

    hw = preset.hardware
    launch = launch_of(preset, launch_file)
    capacity = memory.device_gib(hw)
    if launch is None or hw is None or hw.tokens_per_s or capacity is None or not runs:
        return None
    peak = hw.peak_tflops or PEAK_TFLOPS.get(hw.name)
    echo(f"cost plan ({hw.count} x {hw.name}, {capacity:.1f} GiB each, bf16 peak {peak:g} TFLOP/s at an assumed MFU "
         f"of {hw.mfu:.0%}; {launch.title}; checkpoints at {CHECKPOINT_GBPS:g} GB/s; evaluation sharded over the "
         f"launch's {launch.processes} process{'es' * (launch.processes > 1)}):")
    groups: dict[tuple, list] = {}
    for r in runs:
        groups.setdefault((r.task, r.method_dir, r.config.model.source), []).append(r)
    lens: dict[tuple, Lengths] = {}
    for r in runs:
        text = task_lengths(r.config.data, r.config.model)
        lens.setdefault((r.task, "text"), text)
        lens[(r.task, r.config.model.family)] = run_lengths(r.config.data, r.config.model)
    for (task, kind), stats in lens.items():
        if kind != "text" and stats == lens[(task, "text")]:
            continue
        label = f"{task} rows" if kind == "text" else f"{task} {kind.upper()} rows as trained"
        echo(f"  {label}: mean {stats.mean:.0f}, p50 {stats.p50:.0f}, p90 {stats.p90:.0f}, p99 {stats.p99:.0f}, "
             f"longest {stats.longest} tokens ({stats.source})")
    head = (f"  {'task':<14}{'method':<38}{'runs':>5}{'mb':>4}{'longest':>8}{'views':>6}{'peak GiB':>9}{'fits':>5}"
            f"{'train':>8}{'eval':>8}{'ckpt I/O':>9}{'per run':>9}{'all runs':>9}")
    echo(head)
    total = {"runs": 0, "node_h": 0.0, "train_h": 0.0, "eval_h": 0.0, "io_h": 0.0, "pilot_h": 0.0, "models": 0.0,
             "ckpt_peak": 0.0, "no_fit": []}
    pilots: dict[str, float] = {}
    notes: dict[str, str] = {}
    policy: dict[str, str] = {}
    for (task, method_dir, source), group in groups.items():
        r = group[0]
        arch = memory.arch_of(r.config.model)
        if arch is None:
            echo(f"  {task:<14}{method_dir:<38}{len(group):>5}  shape of {source} unknown: not planned")
            continue
        t = r.config.training
        cost = 1.0 if r.arm is not None else Method.build(r.config.method).cost
        views = 1 if getattr(t, "separate_views", False) else memory.views_of(cost)
        stats = lens[(task, r.config.model.family)]
        mb = t.micro_batch_size
        p = peak_bytes(arch, launch, mb, stats.longest, views, t.gradient_checkpointing)
        fits = p <= capacity * memory.GIB * memory.FIT_FRACTION
        if not fits:
            total["no_fit"].append(f"{task}/{method_dir}")
        e = estimates[r.index]
        rt = run_time(r, preset, arch, stats, mb, cost, e["steps"], e["sequences"], launch, lens[(task, "text")])
        per_run = rt["train_h"] + rt["eval_h"] + rt["io_h"]
        n = len(group)
        echo(f"  {task:<14}{method_dir:<38}{n:>5}{mb:>4}{stats.longest:>8}{views:>6}{_gib(p):>9}"
             f"{'yes' if fits else 'NO':>5}{_h(rt['train_h']):>8}{_h(rt['eval_h']):>8}{_h(rt['io_h']):>9}"
             f"{_h(per_run):>9}{_h(per_run * n):>9}")
        notes.setdefault(f"{task} ({'ARM' if r.arm is not None else 'MDM'})", rt["eval_note"])
        if rt["interval_h"] is not None:
            when = " or ".join(w for w in (f"every {rt['every']} steps" if rt["every"] else "",
                                           f"every {rt['minutes']:g} min of training" if rt["minutes"] else "") if w)
            policy.setdefault(task, f"({method_dir}) {when} (~{_h(rt['interval_h'])} apart), {rt['ckpt']['size'] / 1e9:.0f} GB each, "
                              f"{rt['ckpt']['count']} per run of {_h(rt['train_h'])} training, peak "
                              f"{rt['ckpt']['peak'] / 1e9:.0f} GB + model/ {rt['model_bytes'] / 1e9:.0f} GB kept")
        if r.arm is None and r.config.ppots_pilot and "ppots" in str(r.config.method) and task not in pilots:
            from mdm.train import ppots  # deferred: torch

            if ppots.needs_fit(Method.build(r.config.method)):
                pilots[task] = pilot_time(r, preset, arch, stats)
        total["runs"] += n
        total["train_h"] += rt["train_h"] * n
        total["eval_h"] += rt["eval_h"] * n
        total["io_h"] += rt["io_h"] * n
        total["models"] += rt["model_bytes"] * n
        total["ckpt_peak"] = max(total["ckpt_peak"], rt["ckpt"]["peak"])
    total["pilot_h"] = sum(pilots.values())
    if pilots:
        echo("  P-POTS pilot, once per task (shared by its seeds and methods): " +
             ", ".join(f"{task} {_h(h)}" for task, h in pilots.items()))
    for what, note in notes.items():
        echo(f"  evaluation {what}: {note}")
    for task, text in policy.items():
        echo(f"  checkpoints {task}: {text}")
    total["node_h"] = total["train_h"] + total["eval_h"] + total["io_h"] + total["pilot_h"]
    echo(f"total: {total['runs']} runs, {total['node_h']:.1f} node-hours on {hw.count} x {hw.name} "
         f"(training {total['train_h']:.1f} h incl. recompute and padding, pilots {total['pilot_h']:.1f} h, "
         f"evaluation {total['eval_h']:.1f} h over the launch's {launch.processes} GPUs, checkpoint I/O {total['io_h']:.1f} h); disk "
         f"{(total['models'] + total['ckpt_peak']) / 1e12:.2f} TB (each run's model/ "
         f"{total['models'] / 1e12:.2f} TB in all + one run's checkpoints {total['ckpt_peak'] / 1e9:.0f} GB)")
    if total["no_fit"]:
        echo(f"WARNING: does not fit {capacity:.1f} GiB per GPU: {', '.join(total['no_fit'])}")
    return total


def disk_needed(preset, runs, estimates: dict) -> float | None:
    """Bytes the runs need on the results disk: the largest one run's checkpoint peak (runs are sequential per
    GPU set) + the model/ folder each run keeps. None when the shapes are unknown."""
    launch = launch_of(preset)
    if launch is None:
        return None
    peak, models = 0.0, 0.0
    for r in runs:
        arch = memory.arch_of(r.config.model)
        if arch is None:
            continue
        t = r.config.training
        steps = estimates[r.index]["steps"]
        every = max(1, math.ceil(steps / 4)) if t.checkpoint_every == "auto" else t.checkpoint_every
        one = memory.checkpoint_disk(arch.params, launch, steps, every, t.keep_checkpoints)
        peak = max(peak, one["peak"], (t.keep_checkpoints + 1) * one["size"] if t.checkpoint_minutes else 0)
        models += 2 * arch.params
    return peak + models
