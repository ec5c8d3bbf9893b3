"""Benchmark specs: tasks x methods x seeds (+ ARM rows) per preset, validated up front, expanded into a plan.

    spec = load_spec("benchmarks/table1.yaml")          # one ConfigError line on any problem, before compute
    runs = expand(spec, "tiny", results_dir="results/runs")   # records: results/runs/table1/<task>/<method>/seed<k>
    runs = expand(spec, "paper", results_dir="results/runs")  # records: results/runs/table1@paper/...

A spec has `name`, `seeds`, `methods` (preset names, or {name, method, tasks, seeds}) and `presets`; each
preset gives `tasks` (with per-task data settings), `model`, `data`, `training`, `eval`, `ppots_pilot`
sections (the run config's sections, shared by every run), `arm` rows, the `hardware` for estimates and
an optional accelerate `launch`. The plan is the deterministic cross product, in spec order.

Two presets of one spec never share a run folder: the default preset's (`tiny`) records live under
`<results>/<bench>/`, any other preset P's under `<results>/<bench>@P/` (`records_root`); and a record that another
preset or configuration wrote is never taken as done (`mdm.bench.records.stale_of`).
"""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from mdm.bench.executors.settings import SlurmSettings
from mdm.data import TASKS
from mdm.data.dataset import check_source
from mdm.data.tasks import get_task, make_task
from mdm.errors import ConfigError
from mdm.eval import api
from mdm.schema import Strict, apply_overrides, describe_validation_error, read_yaml, validate_model
from mdm.train.config import (
    DataConfig,
    EvalConfig,
    ModelConfig,
    PilotConfig,
    RunConfig,
    TrainingConfig,
    check_eos_pad,
)

NAME = r"^[A-Za-z0-9_.+-]+$"  # row names become directory names
DEFAULT_PRESET = "tiny"  # `mdm bench`'s default; its records keep the plain `<results>/<bench>/` folder


class MethodRow(Strict):
    name: str = Field(min_length=1, pattern=NAME)
    method: Any = None  # preset name or mapping for Method.build; default: `name`
    tasks: list[str] | None = None  # only these tasks (e.g. SyRM: structured prompts only)
    seeds: list[int] | None = None  # instead of the spec's seeds


class ArmRow(Strict):
    name: str = Field(min_length=1, pattern=NAME)  # the row's model family is "arm:<name>"
    source: str = "tiny"  # "tiny" or a hub id
    params: float | None = Field(None, gt=0, description="parameter count for --dry-run, if not a known hub id")
    tasks: list[str] | None = None
    model: dict[str, Any] = {}  # overrides of the preset's model section
    training: dict[str, Any] = {}  # overrides of the preset's training section


class TaskSettings(Strict):
    n_train: int | None = Field(None, ge=2)
    max_length: int | None = Field(None, ge=8)
    eos_pad: int | None = Field(None, ge=1)  # this task's decoding canvas (data.eos_pad), e.g. shorter answers
    pad_to: int | None = Field(None, ge=8)  # this task's fixed training canvas (data.pad_to)
    options: dict[str, Any] | None = None
    avg_tokens: float | None = Field(None, gt=0, description="mean tokens per sequence, for --dry-run")
    model: dict[str, Any] = {}
    training: dict[str, Any] = {}
    eval: dict[str, Any] = {}
    seeds: list[int] | None = None  # this task's seeds instead of the spec's (e.g. more where a run is cheap)


class Hardware(Strict):
    name: str = "H100"
    count: int = Field(1, ge=1)
    mfu: float = Field(0.35, gt=0, le=1)
    peak_tflops: float | None = Field(None, gt=0)
    tokens_per_s: float | None = Field(None, gt=0, description="measured token passes per second (e.g. CPU)")
    memory_gib: float | None = Field(None, gt=0, description="memory per GPU, for --dry-run (default: known GPUs)")
    fit_gib: list[float] = Field([], description="--dry-run also says whether a run fits GPUs of these sizes (GB)")


class Launch(Strict):
    config_file: str  # an accelerate config (benchmarks/accelerate/*.yaml); each run is `accelerate launch`ed
    num_processes: int | None = Field(None, ge=1)


class Preset(Strict):
    tasks: dict[str, TaskSettings | None]
    model: dict[str, Any] = {}
    data: dict[str, Any] = {}
    training: dict[str, Any] = {}
    eval: dict[str, Any] = {}
    ppots_pilot: dict[str, Any] = {}
    params: float | None = Field(None, gt=0, description="MDM parameter count for --dry-run")
    arm: list[ArmRow] = []
    hardware: Hardware | None = None
    launch: Launch | None = None

    @field_validator("tasks")
    @classmethod
    def _some_task(cls, v):
        if not v:
            raise ValueError("needs at least one task")
        return v


class BenchSpec(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seeds: list[int] = Field(min_length=1)
    methods: list[Any] = Field(min_length=1)
    presets: dict[str, Preset] = Field(min_length=1)
    slurm: SlurmSettings = SlurmSettings()  # cluster settings of `mdm bench --executor slurm` (executors/settings.py)

    @field_validator("seeds")
    @classmethod
    def _unique(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct; got {v}")
        return v

    @field_validator("presets")
    @classmethod
    def _preset_names(cls, v):
        bad = [name for name in v if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name)]
        if bad:  # a preset name becomes part of its records' folder name (`records_root`)
            raise ValueError(f"preset name {bad[0]!r}: use letters, digits and _ . + - only")
        return v


@dataclass
class Spec:
    path: str
    bench: BenchSpec
    methods: list[MethodRow]

    @property
    def name(self) -> str:
        return self.bench.name


def deep_merge(base: dict, *overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for over in overrides:
        for k, v in (over or {}).items():
            out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def known_tasks() -> list[str]:
    return list(TASKS)


def load_spec(path: str | Path, overrides: list[str] | None = None, preset: str = "tiny") -> Spec:
    """Read and validate a spec completely (every preset, task, method and ARM row) or raise one ConfigError.
    `overrides` (`mdm bench --set key=value`, the syntax of `mdm train --set`) go into `preset` before validation:
    `model.source=/path/to/checkpoint`, `training.max_steps=10`, `tasks.gsm8k.n_train=64`."""
    where = str(path)
    data = read_yaml(path)
    if overrides:
        presets = data.get("presets") if isinstance(data, dict) else None
        if not isinstance(presets, dict) or preset not in presets:
            raise ConfigError("--set", f"{where} has no preset {preset!r} to apply it to")
        presets[preset] = apply_overrides(presets[preset] or {}, overrides)
    bench = validate_model(BenchSpec, data, where)
    rows = []
    for i, m in enumerate(bench.methods):
        rows.append(validate_model(MethodRow, {"name": m} if isinstance(m, str) else m, where, f"methods[{i}]"))
    spec = Spec(where, bench, rows)
    _check(spec)
    return spec


def _check(spec: Spec) -> None:
    # deferred: mdm.objective imports torch; a spec's errors come before any torch import
    from mdm.objective import Method

    where, bench = spec.path, spec.bench
    tasks_known = known_tasks()
    all_tasks = {t for p in bench.presets.values() for t in p.tasks}
    names = [r.name for r in spec.methods]
    for i, row in enumerate(spec.methods):
        if row.name in names[:i]:
            raise ConfigError(f"{where}: methods[{i}].name", f"duplicate method row {row.name!r}")
        try:
            Method.build(row.method if row.method is not None else row.name, where=f"methods[{i}].method")
        except ConfigError as e:
            if row.method is None:  # a bare preset name: point at the row itself
                raise ConfigError(f"{where}: methods[{i}]", e.problem) from None
            raise ConfigError(f"{where}: {e.where}", e.problem) from None
        for task in row.tasks or []:
            if task not in all_tasks:
                raise ConfigError(f"{where}: methods[{i}].tasks", f"{task!r} is not a task of any preset; "
                                  f"allowed: {', '.join(sorted(all_tasks))}")
        if row.seeds is not None and (not row.seeds or len(set(row.seeds)) != len(row.seeds)):
            raise ConfigError(f"{where}: methods[{i}].seeds", f"must be distinct and non-empty; got {row.seeds}")
    for pname, preset in bench.presets.items():
        prefix = f"presets.{pname}"
        for task in preset.tasks:
            if task not in tasks_known:
                raise ConfigError(f"{where}: {prefix}.tasks.{task}", f"unknown task; allowed: {', '.join(tasks_known)}")
            _check_generated_options(task, preset.tasks[task], f"{where}: {prefix}.tasks.{task}.options")
            seeds = preset.tasks[task].seeds if preset.tasks[task] else None
            if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
                raise ConfigError(f"{where}: {prefix}.tasks.{task}.seeds", f"must be distinct and non-empty; got {seeds}")
        arm_names = [a.name for a in preset.arm]
        for j, arm in enumerate(preset.arm):
            if arm.name in arm_names[:j]:
                raise ConfigError(f"{where}: {prefix}.arm[{j}].name", f"duplicate ARM row {arm.name!r}")
            for task in arm.tasks or []:
                if task not in preset.tasks:
                    raise ConfigError(f"{where}: {prefix}.arm[{j}].tasks", f"{task!r} is not a task of this preset; "
                                      f"allowed: {', '.join(preset.tasks)}")
        if preset.launch is not None:
            preset.launch.config_file = str(resolve_launch(preset.launch.config_file, where,
                                                           f"{where}: {prefix}.launch.config_file"))
        for task in preset.tasks:  # every section of every run config, as it will be built
            for arm in [None, *preset.arm]:
                cfg = build_run_config(spec, pname, task, arm, seed=spec.bench.seeds[0], run_dir="-")
                check_eos_pad(cfg, f"{where}: {prefix}.tasks.{task}")  # mdm train's check, at plan time
                _check_generated_size(cfg, f"{where}: {prefix}.tasks.{task}")
                _check_dataset(cfg, f"{where}: {prefix}.tasks.{task}")
                _check_accuracy_settings(cfg.eval.accuracy, task, f"{where}: {prefix}", preset, cfg)


def resolve_launch(config_file: str, spec_path: str, where: str) -> Path:
    """An accelerate config named by a spec, independent of the working directory: an absolute path, or relative
    to the spec's folder or one of its parents (`benchmarks/accelerate/x.yaml` from `benchmarks/table1.yaml`)."""
    path = Path(config_file)
    if path.is_absolute():
        if path.is_file():
            return path
        raise ConfigError(where, f"no such file {config_file!r}")
    spec_dir = Path(spec_path).resolve().parent
    for base in (spec_dir, *spec_dir.parents):
        if (base / path).is_file():
            return base / path
    raise ConfigError(where, f"no such file {config_file!r} (relative paths are looked up from {spec_dir} upwards)")


def _check_generated_options(task: str, settings: TaskSettings | None, where: str) -> None:
    """A generated task's options (its level) are checked by drawing one example, before any compute."""
    spec = get_task(task)
    if settings is None or not settings.options or not spec.generated or spec.hooks:  # a plugin checks its own
        return
    try:
        make_task(task, "train", n=1, **settings.options)
    except ConfigError as e:
        raise ConfigError(where, e.problem) from None


def _check_generated_size(cfg, where: str) -> None:
    """A generated task must have as many distinct training prompts as its runs draw (SFT split, base
    pretraining, tokenizer); drawing them takes well under a second."""
    task, m = cfg.data.task, cfg.model
    if not get_task(task).generated or get_task(task).hooks:
        return
    n = max(cfg.data.n_train or 1000, m.pretrain.n_examples if m.base == "auto" else 0,
            m.tokenizer_examples if m.source == "tiny" else 0)
    problem = _draw_problem(task, n, cfg.data.data_seed, json.dumps(cfg.data.options, sort_keys=True))
    if problem is not None:
        raise ConfigError(where, f"{problem} (n_train, model.pretrain.n_examples and model.tokenizer_examples "
                          "draw from it)")


@functools.lru_cache(maxsize=64)
def _draw_problem(task: str, n: int, seed: int, options: str) -> str | None:
    """Why `n` distinct training examples of a generated task cannot be drawn, or None (cached: the MDM and ARM
    rows of a task, and every load of the spec, ask the same; 48,000 tables take ~1.5 s to draw)."""
    try:
        make_task(task, "train", n=n, seed=seed, **json.loads(options))
    except ConfigError as e:
        return e.problem
    return None


def _check_dataset(cfg, where: str) -> None:
    """A `dataset` task (the user's data): its options, its files and a test source for accuracy, before compute."""
    if cfg.data.task != "dataset":
        return
    try:
        cfg.data.spec()
        check_source(cfg.data.options, accuracy=cfg.eval.accuracy is not None)
    except ConfigError as e:
        raise ConfigError(f"{where}.{e.where.removeprefix('data.')}", e.problem) from None


def _check_accuracy_settings(settings: dict | None, task: str, where: str, preset: Preset, cfg) -> None:
    """`eval.accuracy` goes to mdm.eval.api.evaluate_run (or a task plugin's `evaluate`): check it now."""
    check = get_task(task).hook("check")
    if check is not None:  # a task plugin checks its own settings, its eval.accuracy included
        try:
            check(cfg)
        except ConfigError as e:
            raise ConfigError(f"{where}.tasks.{task}", f"{e.where}: {e.problem}") from None
        return
    if settings is None:
        return
    ts = preset.tasks[task]
    place = f"{where}.tasks.{task}.eval.accuracy" if ts and "accuracy" in ts.eval else f"{where}.eval.accuracy"
    try:
        cfg = api.normalize_settings(settings, {"task": task})
        for t in cfg["tasks"]:
            api.decode_config_for(t, cfg["decoding"])
    except ConfigError as e:
        raise ConfigError(f"{place}.{e.where.removeprefix('eval.')}", e.problem) from None
    except (TypeError, ValueError) as e:
        raise ConfigError(place, str(e).splitlines()[0]) from None


def _validate_section(cls, data: dict, where: str, prefixes: list[tuple[str, dict]]):
    """Validate a merged section; an error is reported at the most specific place that set its key."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        path, problem = describe_validation_error(e, cls)
        top = path.split(".")[0].split("[")[0]
        prefix = next((p for p, d in reversed(prefixes) if top in (d or {})), prefixes[0][0])
        raise ConfigError(f"{where}: {prefix}.{path}" if path else f"{where}: {prefix}", problem) from None


def build_run_config(spec: Spec, preset_name: str, task: str, arm: ArmRow | None, seed: int, run_dir: str,
                     method: MethodRow | None = None) -> RunConfig:
    where, preset = spec.path, spec.bench.presets[preset_name]
    p = f"presets.{preset_name}"
    ts = preset.tasks[task] or TaskSettings()
    tp = f"{p}.tasks.{task}"
    arm_p = f"{p}.arm[{preset.arm.index(arm)}]" if arm is not None else None
    family = {"family": "arm", "source": arm.source} if arm is not None else {}
    model_over = [(f"{p}.model", preset.model), (f"{tp}.model", ts.model)]
    train_over = [(f"{p}.training", preset.training), (f"{tp}.training", ts.training)]
    if arm is not None:
        model_over.append((f"{arm_p}.model", arm.model))
        train_over.append((f"{arm_p}.training", arm.training))
    model = _validate_section(ModelConfig, deep_merge(*(d for _, d in model_over), family), where, model_over)
    task_data = {k: v for k, v in (("n_train", ts.n_train), ("max_length", ts.max_length), ("eos_pad", ts.eos_pad),
                                   ("pad_to", ts.pad_to), ("options", ts.options)) if v is not None}
    data_over = [(f"{p}.data", preset.data), (tp, task_data)]
    data = _validate_section(DataConfig, deep_merge(preset.data, task_data, {"task": task}), where, data_over)
    method_spec = "standard" if arm is not None or method is None else (
        method.method if method.method is not None else method.name)
    merged = deep_merge(preset.training, ts.training, arm.training if arm else {}, {"seed": seed})
    if merged.get("micro_batch_size") == "auto":  # the largest that fits the preset's GPUs (mdm.bench.plan_cost)
        from mdm.bench.plan_cost import auto_micro_batch  # deferred: the method registry imports torch

        merged["micro_batch_size"] = auto_micro_batch(preset, data, model, merged, method_spec, arm,
                                                      f"{where}: {p}.training.micro_batch_size")
    training = _validate_section(TrainingConfig, merged, where, train_over)
    eval_over = [(f"{p}.eval", preset.eval), (f"{tp}.eval", ts.eval)]
    evaluation = _validate_section(EvalConfig, deep_merge(preset.eval, ts.eval), where, eval_over)
    pilot = _validate_section(PilotConfig, preset.ppots_pilot, where, [(f"{p}.ppots_pilot", preset.ppots_pilot)])
    if training.micro_batch_size > training.global_batch_size:
        raise ConfigError(f"{where}: {p}.training.micro_batch_size", f"{training.micro_batch_size} is larger than "
                          f"global_batch_size {training.global_batch_size}")
    if data.n_train is not None:
        n_fit = data.n_train - max(1, round(data.heldout_fraction * data.n_train)) * (data.heldout_fraction > 0)
        if training.global_batch_size > n_fit:
            raise ConfigError(f"{where}: {p}.training.global_batch_size", f"{training.global_batch_size} is larger "
                              f"than the training split of {task} ({n_fit} of n_train={data.n_train})")
    name = f"{spec.name}/{task}/{'arm-' + arm.name if arm else (method.name if method else 'standard')}/seed{seed}"
    return RunConfig(name=name, model=model, data=data, method=method_spec, training=training, eval=evaluation,
                     ppots_pilot=pilot, output_dir=run_dir)


# ---------------------------------------------------------------- the plan


@dataclass
class PlannedRun:
    index: int
    bench: str
    preset: str
    task: str
    method: str  # the row name ("standard" for ARM rows)
    family: str  # "mdm" or "arm:<name>"
    seed: int
    run_dir: Path
    config: RunConfig
    arm: ArmRow | None = None
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.task}/{self.method_dir}/seed{self.seed}"

    @property
    def method_dir(self) -> str:
        return f"arm-{self.arm.name}" if self.arm is not None else self.method

    @property
    def record_path(self) -> Path:
        return self.run_dir / "record.json"

    def matches(self, only: dict[str, set[str]]) -> bool:
        values = {"task": self.task, "method": self.method if self.arm is None else self.method_dir,
                  "seed": str(self.seed), "family": self.family, "preset": self.preset}
        for key, allowed in only.items():
            candidates = {values[key]} | ({self.family.split(":")[0]} if key == "family" else set())
            if not candidates & allowed:
                return False
        return True


ONLY_KEYS = ("task", "method", "seed", "family", "preset")


def records_root(results_dir: str | Path, bench: str, preset_name: str) -> Path:
    """The folder of one preset's records: `<results>/<bench>` for the default preset, `<results>/<bench>@<preset>`
    for any other (`@` cannot occur in a spec name, so no two (spec, preset) pairs share a folder)."""
    return Path(results_dir) / (bench if preset_name == DEFAULT_PRESET else f"{bench}@{preset_name}")


def expand(spec: Spec, preset_name: str, results_dir: str | Path) -> list[PlannedRun]:
    if preset_name not in spec.bench.presets:
        raise ConfigError("--preset", f"unknown preset {preset_name!r} for {spec.path}; allowed: "
                          f"{', '.join(spec.bench.presets)}")
    preset = spec.bench.presets[preset_name]
    root = records_root(results_dir, spec.name, preset_name)
    runs: list[PlannedRun] = []

    def task_seeds(task):
        return (preset.tasks[task] and preset.tasks[task].seeds) or spec.bench.seeds

    def add(task, row_name, family, seed, arm, method_row):
        run_dir = root / task / (f"arm-{arm.name}" if arm else row_name) / f"seed{seed}"
        cfg = build_run_config(spec, preset_name, task, arm, seed, str(run_dir), method_row)
        runs.append(PlannedRun(len(runs), spec.name, preset_name, task, row_name, family, seed, run_dir, cfg, arm))

    for task in preset.tasks:
        for row in spec.methods:
            if row.tasks is not None and task not in row.tasks:
                continue
            for seed in row.seeds or task_seeds(task):
                add(task, row.name, "mdm", seed, None, row)
    for task in preset.tasks:
        for arm in preset.arm:
            if arm.tasks is not None and task not in arm.tasks:
                continue
            for seed in task_seeds(task):
                add(task, "standard", f"arm:{arm.name}", seed, arm, None)
    return runs


def parse_only(text: str | None, runs: list[PlannedRun]) -> dict[str, set[str]]:
    """`key=value,key=value`; a repeated key means any of its values."""
    if not text:
        return {}
    only: dict[str, set[str]] = {}
    for part in text.split(","):
        if "=" not in part:
            raise ConfigError("--only", f"expected key=value[,key=value...]; got {part!r}")
        key, value = (s.strip() for s in part.split("=", 1))
        if key not in ONLY_KEYS:
            raise ConfigError("--only", f"unknown key {key!r}; allowed: {', '.join(ONLY_KEYS)}")
        only.setdefault(key, set()).add(value)
    for key, values in only.items():
        present = {str(getattr(r, key)) if key != "method" else (r.method if r.arm is None else r.method_dir)
                   for r in runs}
        if key == "family":
            present |= {f.split(":")[0] for f in present}
        missing = sorted(values - present)
        if missing:
            raise ConfigError("--only", f"no run has {key}={missing[0]}; allowed: {', '.join(sorted(present))}")
    return only


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError("--shard", f"expected I/N with 1 <= I <= N; got {text!r}") from None
    if not (n >= 1 and 1 <= i <= n):
        raise ConfigError("--shard", f"expected I/N with 1 <= I <= N; got {text!r}")
    return i, n


def select(runs: list[PlannedRun], only: dict, shard: tuple[int, int] | None) -> list[PlannedRun]:
    """Shards split the full plan by index (stable whatever --only says), then --only filters."""
    if shard:
        i, n = shard
        runs = [r for r in runs if r.index % n == i - 1]
    return [r for r in runs if r.matches(only)]
