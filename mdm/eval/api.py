"""`evaluate_run(run_dir, settings)`: decode a task's test prompts with a run's model, score them, measure the
held-out likelihood, and write everything into the run record.

    from mdm.eval.api import evaluate_run
    result = evaluate_run("runs/table1/gsm8k/standard/seed42", {"tasks": ["gsm8k"], "n": 200})

Settings (all optional; unknown keys are a ConfigError):
    tasks           task name or list (arith, tables, gsm8k, hitab, openscience, dataset); default: record["task"] (an
                    `mdm train` folder without a record: result.json's task, its config from run_config.json)
    n               examples per task (default: all for real data, 200 for generated tasks)
    split           default "test"
    data_seed       seed of the generated tasks (their test split is disjoint from train for every seed)
    task_options    dict passed to make_task (hitab: {"root": ...}; generated: {"level": 1}); default: the
                    run's own data.options when it is evaluated on its own task
    decoding        {gen_length, steps, block_length, temperature, remasking, early_stop, seed}; the same keys
                    are also accepted at the top level. Defaults: the run's own eval.accuracy decoding, else
                    PAPER.md settings per task (mdm.sampler.TASK_DECODING)
    batch_size      prompts decoded together (default 16)
    likelihood      compute the held-out metric (default True): MDM ELBO on a fixed t-grid, or ARM NLL
    likelihood_n    sequences for it (default: the evaluated examples, at most 256)
    t_grid, likelihood_seed   the held-out loss's grid size (16) and mask seed (0) (mdm.eval.likelihood)
    device, dtype   default: cuda if available else cpu; bfloat16 on cuda, float32 on cpu
    causal          force ARM (True) / MDM (False); default: record["model_family"] ("mdm" or an ARM name),
                    else the model config (bidirectional attention, or a known MDM model type)
    write           update the record and write per-sample files (default True)

The run directory: `final/`, `checkpoint/` (or its latest `checkpoint-N/`), `model/`, or the folder itself must
hold a transformers `save_pretrained` model with its tokenizer; a model folder can also be passed directly. An
unfinished `mdm train` run is evaluated from its last checkpoint, said so in `eval.<task>.from_checkpoint`.
Results go to record.json under `eval.<task>` (scores, decoding knobs, likelihood, timing) and, for the record's
own task, `metrics.score` / `metrics.accuracy` (percent, what `mdm report` ranks); other keys are preserved and
the file is replaced atomically. Per-sample outputs go to `eval_<task>.jsonl` next to the record.

Inside `accelerate launch` (`mdm.eval.distributed`) each process decodes its share of the prompt batches on its own
device and rank 0 writes: the per-prompt outputs are one process's (`mdm bench` evaluates a launched run this way).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from mdm.data import make_task
from mdm.data.tasks import TASKS, get_task
from mdm.errors import ConfigError
from mdm.eval import scorers
from mdm.eval.loading import checkpoint_of, find_model_dir, load_model, resolve_device, resolve_dtype  # noqa: F401
from mdm.io import atomic_write_json, finite, folder_lock, read_json, write_jsonl

SETTINGS = {
    "tasks", "n", "split", "data_seed", "task_options", "decoding", "batch_size", "likelihood", "likelihood_n",
    "t_grid", "likelihood_seed", "device", "dtype", "causal", "write",
}  # fmt: skip
DECODING_KEYS = {"gen_length", "steps", "block_length", "temperature", "remasking", "early_stop", "seed"}
GENERATED_DEFAULT_N = 200
PRIMARY = {"gsm8k": "exact_match_strict", "hitab": "accuracy", "boxed": "accuracy", "exact": "exact_match"}


# ---------------------------------------------------------------- locating and loading the model


def find_record(run_dir: Path, model_dir: Path) -> Path:
    """record.json of the run: in the run folder, else next to the model folder's parents; created if absent."""
    for cand in (run_dir, model_dir, model_dir.parent, model_dir.parent.parent):
        if (cand / "record.json").is_file():
            return cand / "record.json"
    return run_dir / "record.json"


def run_record(run_dir: Path, model_dir: Path) -> tuple[Path, dict]:
    """(record.json's path, what is known of the run): the record's keys over an `mdm train` folder's."""
    record_path = find_record(run_dir, model_dir)
    return record_path, {**train_folder_record(record_path, model_dir), **read_record(record_path)}


def train_folder_record(record_path: Path, model_dir: Path) -> dict:
    """What an `mdm train` folder (result.json, run_config.json) says about its run: the task, the model family
    and the config (whose data.options the run's own task is evaluated with). A record's own keys come first."""
    for folder in (record_path.parent, model_dir.parent):
        config = (read_json(folder / "run_config.json") or {}).get("config")
        result = read_json(folder / "result.json") or {}
        if config or result:
            config = config or {}
            method = config.get("method")
            record = {"task": result.get("task") or (config.get("data") or {}).get("task"),
                      "model_family": result.get("family") or (config.get("model") or {}).get("family"),
                      "method": method.get("preset") if isinstance(method, dict) else method,
                      "seed": result.get("seed", (config.get("training") or {}).get("seed")), "config": config,
                      "status": result.get("status", "unfinished"), "reason": result.get("reason"),
                      "metrics": result.get("metrics"), "passes": result.get("passes"),
                      "tokens": result.get("tokens_seen"), "wall_time_s": result.get("wall_time_s")}
            return {k: v for k, v in record.items() if v is not None}
    return {}


# ---------------------------------------------------------------- settings


def _task_options(settings: dict, record: dict | None, tasks: list[str]) -> dict:
    """Explicit `task_options`, else the options the run trained with when it is evaluated on its own task (a
    generated task's level must match the one it was trained on)."""
    if settings.get("task_options") is not None:
        return dict(settings["task_options"])
    data = ((record or {}).get("config") or {}).get("data") or {}
    return dict(data.get("options") or {}) if tasks == [data.get("task")] else {}


def run_decoding(record: dict | None) -> dict:
    """The decoding knobs a run's config sets for its accuracy eval (eval.accuracy.decoding, or its top-level
    decoding keys); {} when none."""
    accuracy = (((record or {}).get("config") or {}).get("eval") or {}).get("accuracy") or {}
    if not isinstance(accuracy, dict):
        return {}
    return dict(accuracy.get("decoding") or {}) | {k: v for k, v in accuracy.items() if k in DECODING_KEYS}


def normalize_settings(settings: dict | None, record: dict | None = None) -> dict:
    settings = dict(settings or {})
    decoding = run_decoding(record) | dict(settings.pop("decoding", None) or {})
    for key in list(settings):
        if key in DECODING_KEYS:
            decoding[key] = settings.pop(key)
    unknown = sorted(set(settings) - SETTINGS)
    if unknown:
        raise ConfigError(f"eval.{unknown[0]}", f"unknown setting; allowed: {', '.join(sorted(SETTINGS | DECODING_KEYS))}")
    tasks = settings.get("tasks")
    if tasks is None and record:
        tasks = record.get("task") or (record.get("config") or {}).get("task")
        if isinstance(tasks, dict):
            tasks = tasks.get("name")
    if not tasks:
        raise ConfigError("eval.tasks", "no task given and the run record names none; pass --task")
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    for t in tasks:
        get_task(t)  # unknown task -> ConfigError listing the allowed ones
    out = {
        "tasks": tasks, "n": settings.get("n"), "split": settings.get("split", "test"),
        "data_seed": int(settings.get("data_seed", 0)), "task_options": _task_options(settings, record, tasks),
        "decoding": decoding, "batch_size": int(settings.get("batch_size", 16)),
        "likelihood": bool(settings.get("likelihood", True)), "likelihood_n": settings.get("likelihood_n"),
        "t_grid": int(settings.get("t_grid", 16)),
        "likelihood_seed": int(settings.get("likelihood_seed", 0)), "device": settings.get("device"),
        "dtype": settings.get("dtype"), "causal": settings.get("causal"), "write": bool(settings.get("write", True)),
    }  # fmt: skip
    if out["n"] is not None and (not isinstance(out["n"], int) or out["n"] < 1):
        raise ConfigError("eval.n", f"must be a positive integer, got {out['n']!r}")
    if out["batch_size"] < 1:
        raise ConfigError("eval.batch_size", f"must be >= 1, got {out['batch_size']}")
    return out


def decode_config_for(task: str, decoding: dict):
    from mdm.sampler import TASK_DECODING, DecodeConfig  # deferred: mdm.sampler imports torch

    return DecodeConfig.from_dict(decoding, base=TASK_DECODING.get(task, DecodeConfig()))


# ---------------------------------------------------------------- scoring


def _safe(fn, *args):
    """A scorer never crashes a run: an exception scores as wrong."""
    try:
        return fn(*args), None
    except Exception as e:  # noqa: BLE001
        return None, f"{type(e).__name__}: {e}"


def score_predictions(task, predictions: list[str], examples: list[dict]) -> tuple[dict, list[dict]]:
    """(aggregate scores, per-sample score dicts) under the task's rule (PAPER.md "Scoring"); `task`: a name or a
    TaskSpec (a `dataset` run's, built from its options)."""
    metric = get_task(task).metric
    per = []
    if metric == "exact":
        for pred, ex in zip(predictions, examples):
            per.append({"correct": scorers.exact_match(pred, ex.get("answer", ex.get("response", "")))})
        agg = {"exact_match": sum(r["correct"] for r in per) / max(len(per), 1)}
    elif metric == "gsm8k":
        for pred, ex in zip(predictions, examples):
            gold = gsm8k_gold(ex)
            row = {}
            for name, fn in (("strict", scorers.gsm8k_strict), ("flexible", scorers.gsm8k_flexible),
                             ("authors", scorers.gsm8k_authors)):  # fmt: skip
                ok, err = _safe(fn, pred, gold)
                row[name] = bool(ok)
                if err:
                    row["error"] = err
            per.append(row)
        n = max(len(per), 1)
        agg = {"exact_match_strict": sum(r["strict"] for r in per) / n,
               "exact_match_flexible": sum(r["flexible"] for r in per) / n,
               "authors_exact_match": sum(r["authors"] for r in per) / n}  # fmt: skip
    elif metric == "hitab":
        for pred, ex in zip(predictions, examples):
            s, err = _safe(scorers.hitab_score, pred, ex["answer"])
            if s is None:
                gold = _safe(scorers.hitab_gold_list, ex["answer"])[0] or [None]
                s = {"correct": 0, "n_gold": len(gold), "n_pred": 0, "accuracy": 0.0, "precision": 0.0, "f1": 0.0,
                     "error": err}  # fmt: skip
            per.append(s)
        agg = {k: v for k, v in scorers.hitab_aggregate(per).items() if k in ("accuracy", "precision", "f1")}
    else:
        for pred, ex in zip(predictions, examples):
            gold = ex["response"] if "\\boxed{" in ex.get("response", "") else "\\boxed{" + str(ex["answer"]) + "}"
            ok, err = _safe(scorers.boxed_match, pred, gold)
            per.append({"correct": bool(ok)} | ({"error": err} if err else {}))
        agg = {"accuracy": sum(r["correct"] for r in per) / max(len(per), 1)}
    agg["primary"] = PRIMARY[metric]
    agg["n"] = len(per)
    return agg, per


def gsm8k_gold(example: dict) -> str:
    """lm-eval's gsm8k target is the full answer text ending in '#### N'; generated arith responses have the same form."""
    response = example.get("response") or ""
    return response if "####" in response else str(example.get("answer", ""))


# ---------------------------------------------------------------- the record


def read_record(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(str(path), f"not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(record, dict):
        raise ConfigError(str(path), "record.json does not hold a JSON object")
    return record


def update_record(path: Path, task_results: dict[str, dict], metrics: dict | None = None) -> dict:
    """Merge `eval.<task>` entries (and `metrics` keys) into the record on disk, atomically; other keys survive."""
    with folder_lock(path.parent):
        record = read_record(path)
        evals = record.get("eval") if isinstance(record.get("eval"), dict) else {}
        evals.update(finite(task_results))
        record["eval"] = evals
        if metrics:
            record["metrics"] = (record.get("metrics") if isinstance(record.get("metrics"), dict) else {}) | finite(metrics)
        atomic_write_json(path, record)
    return record


# ---------------------------------------------------------------- evaluation


def evaluate_run(run_dir: str | Path, settings: dict | None = None, *, model=None, tokenizer=None) -> dict:
    """Evaluate a run (see module docstring). `model`/`tokenizer` skip loading (the trainer's in-memory model)."""
    from mdm.eval.distributed import Ranks, ranks  # deferred: accelerate, only inside a launch

    run_dir = Path(run_dir)
    model_dir = find_model_dir(run_dir) if model is None else run_dir
    record_path, record = run_record(run_dir, model_dir)
    rk = ranks() if model is None else Ranks()  # inside `accelerate launch`: this process's share of the prompts
    own = TASKS[record["task"]].hook("evaluate") if record.get("task") in TASKS else None
    if own is not None and model is None:  # a task plugin that decodes and scores its runs itself (text-to-image;
        return own(run_dir, settings)  # inside a launch it shards its own decoding)
    cfg = normalize_settings(settings, record)
    decodings = {t: decode_config_for(t, cfg["decoding"]) for t in cfg["tasks"]}  # validate before loading
    if not rk.is_main:
        cfg["write"] = False  # rank 0 writes the record and the samples
    if model is None:
        model, tokenizer, model_dir = load_model(run_dir, rk.device or cfg["device"], cfg["dtype"])
    elif tokenizer is None:
        raise ValueError("pass the tokenizer with the model")
    from mdm.data import mask_token_id_of  # deferred: mdm.data's tokenizer imports transformers
    from mdm.sampler import is_autoregressive  # deferred: mdm.sampler imports torch

    family = str(record.get("model_family", ""))
    if cfg["causal"] is not None:
        causal = bool(cfg["causal"])
    elif family:
        causal = family != "mdm"  # mdm report's convention: "mdm" rows are MDMs, anything else an ARM
    else:
        causal = is_autoregressive(model)
    mask_id = None if causal else mask_token_id_of(tokenizer, getattr(model, "config", None))
    results = {}
    for task in cfg["tasks"]:
        results[task] = _evaluate_task(task, cfg, decodings[task], model, tokenizer, causal, mask_id,
                                       record_path.parent if cfg["write"] else None, rk)  # fmt: skip
        results[task]["model_dir"] = str(model_dir)
        if checkpoint_of(model_dir):
            results[task]["from_checkpoint"] = checkpoint_of(model_dir)
    metrics = None
    own = record.get("task")
    main_task = own if own in results else (cfg["tasks"][0] if not own and len(cfg["tasks"]) == 1 else None)
    if main_task:
        r = results[main_task]
        metrics = {"eval_task": main_task}
        if r["scores"].get("primary"):  # scorer none: held-out likelihood only
            score = 100.0 * r["scores"][r["scores"]["primary"]]
            metrics |= {"score": score, "accuracy": score}
        if r.get("likelihood"):
            metrics["heldout_nll_per_token"] = r["likelihood"]["nll_per_token"]
        if r.get("from_checkpoint"):  # the score is of an unfinished run's last checkpoint
            metrics["from_checkpoint_step"] = r["from_checkpoint"]["step"]
        if "paper_n" in r:  # the leaderboard shows the items scored beside the paper's count
            metrics |= {"eval_n": r["n"], "paper_eval_n": r["paper_n"]}
    if cfg["write"]:
        update_record(record_path, results, metrics)
    return {"run_dir": str(run_dir), "model_dir": str(model_dir), "record": str(record_path), "tasks": results,
            "metrics": metrics or {}}  # fmt: skip


def eval_examples(task: str, cfg: dict, tokenizer) -> list[dict]:
    """The examples `mdm eval` scores (`cfg`: normalised settings); a task that selects rows by token count
    (OpenScience) counts them with the model's tokenizer, as its training selection does (`mdm.train.data`)."""
    opts = dict(cfg["task_options"])
    spec = get_task(task, opts)
    n = cfg["n"] if cfg["n"] is not None else (GENERATED_DEFAULT_N if spec.generated else None)
    if spec.counts_tokens:
        opts.setdefault("tokenizer", tokenizer)
    try:
        examples = make_task(task, cfg["split"], n, seed=cfg["data_seed"], **opts)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001  (missing files, no internet for a hub dataset, malformed rows)
        raise ConfigError(f"eval.{task}", f"cannot load the {cfg['split']} data: {type(e).__name__}: {e}") from None
    if not examples:
        raise ConfigError(f"eval.{task}", f"no {cfg['split']} examples")
    for note in getattr(examples, "notes", ()):  # rows the loader dropped (a null or empty response): said, not silent
        print(f"eval {task}: {note}", file=sys.stderr)
    return examples


def _evaluate_task(task, cfg, decoding, model, tokenizer, causal, mask_id, out_dir, rk) -> dict:
    # deferred: collation, likelihood and the sampler import torch
    from mdm.data.collate import tokenize_examples
    from mdm.eval.distributed import merge_generation
    from mdm.eval.likelihood import heldout_nll
    from mdm.sampler import autoregressive_generate, chat_prompt_ids, decode_text, generate

    spec = get_task(task, dict(cfg["task_options"]))
    examples = eval_examples(task, cfg, tokenizer)
    prompts = [chat_prompt_ids(tokenizer, ex["prompt"], ex.get("messages")) for ex in examples]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    t0 = time.perf_counter()
    if spec.metric == "none":  # no scorer: the held-out likelihood only
        from mdm.sampler import GenerationOutput  # deferred: mdm.sampler imports torch

        out = GenerationOutput([[] for _ in examples], [0] * len(examples), config={"sampler": "none"})
    elif causal:
        out = autoregressive_generate(model, prompts, decoding, eos_token_id=tokenizer.eos_token_id,
                                      pad_token_id=pad, batch_size=cfg["batch_size"], shard=rk.shard)  # fmt: skip
    else:
        out = generate(model, prompts, decoding, mask_token_id=mask_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=pad, batch_size=cfg["batch_size"], vocab_size=len(tokenizer),
                       shard=rk.shard)  # fmt: skip
    out = merge_generation(out, rk)  # every prompt's tokens on every rank
    gen_s = time.perf_counter() - t0
    predictions = []
    for toks in out.tokens:
        text, err = _safe(decode_text, tokenizer, toks)
        predictions.append(text if text is not None else "")
    if spec.metric == "none":
        scores, per = {"primary": None, "n": len(examples)}, [{} for _ in examples]
    else:
        scores, per = score_predictions(spec, predictions, examples)

    likelihood, per_seq = None, {}
    if cfg["likelihood"]:
        t1 = time.perf_counter()
        k = cfg["likelihood_n"] if cfg["likelihood_n"] is not None else min(len(examples), 256)
        items, _ = tokenize_examples(tokenizer, examples[:k], spec, max_length=1 << 30)
        items = [it for it in items if len(it["input_ids"]) > it["prompt_length"]]
        likelihood = heldout_nll(model, tokenizer, items, spec, 1 << 30, family="arm" if causal else "mdm",
                                 mask_token_id=mask_id, t_grid=cfg["t_grid"], batch_size=cfg["batch_size"],
                                 seed=cfg["likelihood_seed"], device=next(model.parameters()).device,
                                 accelerator=rk if rk.world > 1 else None, gather_rows=True)
        per_seq = {it["id"]: v for it, v in zip(items, likelihood.pop("per_sequence_nll"))}
        likelihood["data"] = f"{task} {cfg['split']} references (prompt + response), first {len(items)}"
        likelihood["time_s"] = time.perf_counter() - t1

    samples_file = None
    if out_dir is not None:
        samples_file = out_dir / f"eval_{task}.jsonl"
        rows = []
        for i, (ex, pred, sc) in enumerate(zip(examples, predictions, per)):
            row = {"i": i, "id": ex.get("id"), "prompt": ex["prompt"], "prediction": pred,
                   "gold": gsm8k_gold(ex) if spec.metric == "gsm8k" else ex.get("answer"),
                   "scores": sc, "generated_tokens": len(out.tokens[i]), "steps_run": out.steps_run[i]}  # fmt: skip
            if ex.get("id") in per_seq:
                row["heldout_nll"] = per_seq[ex.get("id")]
            rows.append(row)
        write_jsonl(samples_file, rows)
    return {
        "task": task,
        "split": cfg["split"],
        "n": len(examples),
        "model_kind": "arm" if causal else "mdm",
        "scores": scores,
        "decoding": out.config | {"batch_size": cfg["batch_size"], "prompt_format": "chat (mdm.data.format_chat)"},
        "likelihood": likelihood,
        "generation": {"time_s": gen_s, "examples_per_s": len(examples) / gen_s if gen_s > 0 else None,
                       "forward_passes": out.forward_passes,
                       "mean_generated_tokens": sum(map(len, out.tokens)) / len(out.tokens)},  # fmt: skip
        "samples_file": samples_file.name if samples_file else None,
        "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    } | ({"processes": rk.world} if rk.world > 1 else {}) | scorers.paper_count(spec, len(examples))
