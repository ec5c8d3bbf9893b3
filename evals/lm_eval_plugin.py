"""lm-evaluation-harness plugin: `--model mdm` (a trained MDM checkpoint + the mdm sampler), no fork, no vendoring.

Importing this module registers the model `mdm` with `lm_eval.api.registry.register_model`. lm-eval 0.4.13 has
no plugin entry points for models, so its CLI must run after that import; this module is the CLI wrapper (as
LLaDA's own eval_llada.py is) and passes every argument through to lm-eval's CLI, adding `--include_path` and
`--batch_size 16` when they are absent:

    python -m evals.lm_eval_plugin --model mdm \\
        --model_args pretrained=runs/x/final,gen_length=128,steps=128,block_length=32 \\
        --tasks gsm8k_mdm --num_fewshot 0 --batch_size 16 --output_path out/ --log_samples

`--include_path` defaults to a folder of task YAMLs generated on the fly (`write_tasks`): `gsm8k_mdm` is lm-eval's
own built-in `gsm8k.yaml` (same prompt, filters, metrics) with its data source swapped to the local GSM8K JSONL
(`../shared/data/gsm8k`, or env MDM_GSM8K_DIR) through the `json` loader, or the hub id `openai/gsm8k` when that
folder is absent. `evals/tasks/gsm8k_mdm.yaml` is the same file generated for the hub (portable; it is checked
against the installed lm-eval by the tests). To write the YAMLs somewhere else:

    python -m evals.lm_eval_plugin write-tasks DIR [--gsm8k-data PATH | --hub]

In Python: `import evals.lm_eval_plugin` then `lm_eval.simple_evaluate(model="mdm", ...,
task_manager=TaskManager(include_path=task_dir()))`, or pass an `MDMLM(model=..., tokenizer=...)` instance.

Model arguments (`--model_args`): pretrained (run folder or model folder), gen_length, steps, block_length,
temperature, remasking, early_stop, seed (decoding, mdm.sampler.DecodeConfig; defaults = PAPER.md GSM8K settings),
device, dtype, mc_num (Monte Carlo samples of the loglikelihood ELBO, default 128), mc_batch_size (32),
check_greedy (LLaDA's suffix-greedy check for `is_greedy`, default False). The number of prompts decoded together
is lm-eval's own `--batch_size` (this wrapper defaults it to 16; lm-eval's default is 1).

generate_until: the context is tokenized as given (a BOS is prepended when the tokenizer did not), decoded with
the batched sampler (prompts of different lengths share a batch), cut at the first EOS, then at the first
`until` string. A request with do_sample=True and temperature > 0 is sampled at that temperature; otherwise the
model's decoding knobs apply. `max_gen_toks` is ignored: the canvas length is the `gen_length` knob (as in LLaDA).
With `--apply_chat_template`, contexts are rendered with the tokenizer's chat template, or, for the tiny mdm
tokenizer, in the training format `<|bos|><|user|>...<|assistant|>`.

With `--output_path` and `--log_samples`, the wrapper also writes `authors_<samples>.json` beside lm-eval's samples:
the authors' `####` scorer on the same predictions, and lm-eval's strict / flexible numbers recomputed by
mdm.eval.scorers (they must agree per sample; `score_samples`).

Data parallel as lm-eval's own HF model: under `accelerate launch --num_processes N -m evals.lm_eval_plugin ...`
each process loads the model on its own device and reports rank / world size, lm-eval's evaluator gives it every
N-th document and gathers the results (`all_gather`, `gather_object`, `barrier` below); a request's random draws are
keyed by its document, so the answers are those of one process (2 CPU processes: the same samples, checked by hand).

loglikelihood: LLaDA's Monte Carlo ELBO (mdm.eval.likelihood.mc_loglikelihood), reproducible per request.
loglikelihood_rolling: the same ELBO of the whole string after BOS.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path

import lm_eval.models  # noqa: F401  (fills the registry first: get_model only lazy-loads an empty registry)
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

eval_logger = logging.getLogger(__name__)
TASK_DIR = Path(__file__).resolve().parent / "tasks"
GSM8K_TASK = "gsm8k_mdm"
GSM8K_HUB = ("openai/gsm8k", "main")
DEFAULT_BATCH_SIZE = 16  # the wrapper's default for lm-eval's --batch_size (lm-eval's own default is 1)


# ---------------------------------------------------------------- task YAMLs


def builtin_task_yaml(name: str = "gsm8k") -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).resolve().parent / name / f"{name}.yaml"


def gsm8k_task_config(gsm8k_data: str | Path | None = None, hub: bool = False) -> dict:
    """lm-eval's built-in gsm8k task config with the data source swapped (local JSONL, else the hub id)."""
    import yaml

    from mdm.data.tasks import gsm8k_dir

    src = builtin_task_yaml("gsm8k")
    cfg = yaml.safe_load(src.read_text(encoding="utf-8"))
    cfg["task"] = GSM8K_TASK
    cfg.pop("tag", None)  # keep the built-in tag groups unchanged
    data = Path(gsm8k_data) if gsm8k_data is not None else gsm8k_dir()
    files = {split: (data / f"{split}.jsonl").resolve() for split in ("train", "test")}
    if not hub and all(f.is_file() for f in files.values()):
        cfg["dataset_path"] = "json"
        cfg.pop("dataset_name", None)
        cfg["dataset_kwargs"] = {"data_files": {k: str(v) for k, v in files.items()}}
    else:
        cfg["dataset_path"], cfg["dataset_name"] = GSM8K_HUB
        cfg.pop("dataset_kwargs", None)
    return cfg


def render_task_yaml(cfg: dict) -> str:
    import yaml

    src = builtin_task_yaml("gsm8k")
    header = (f"# Generated by evals.lm_eval_plugin.write_tasks from lm-eval's built-in {src.parent.name}/{src.name}\n"
              "# (same prompt, filters and metrics); only the task name and the data source differ.\n")  # fmt: skip
    return header + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)


def write_tasks(out_dir: str | Path, gsm8k_data: str | Path | None = None, hub: bool = False) -> list[Path]:
    """Write the `--include_path` task YAMLs into out_dir; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{GSM8K_TASK}.yaml"
    text = render_task_yaml(gsm8k_task_config(gsm8k_data, hub))
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        tmp = path.with_suffix(f".yaml.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return [path]


def task_dir(gsm8k_data: str | Path | None = None) -> Path:
    """A cache folder holding the generated YAMLs for this machine's data (under $MDM_CACHE, ~/.cache/mdm)."""
    text = render_task_yaml(gsm8k_task_config(gsm8k_data))
    root = Path(os.environ.get("MDM_CACHE", Path.home() / ".cache" / "mdm")) / "lm_eval_tasks"
    out = root / hashlib.sha256(text.encode()).hexdigest()[:16]
    write_tasks(out, gsm8k_data)
    return out


# ---------------------------------------------------------------- the model


def _int(v, name):
    from mdm.errors import ConfigError

    try:
        return int(v)
    except (TypeError, ValueError):
        raise ConfigError(f"model_args.{name}", f"expected an integer, got {v!r}") from None


def _bool(v) -> bool:
    return v if isinstance(v, bool) else str(v).strip().lower() in ("1", "true", "yes", "y")


@register_model("mdm")
class MDMLM(LM):
    """A masked diffusion LM for lm-eval: generation by mdm.sampler, likelihood by LLaDA's Monte Carlo ELBO."""

    def __init__(
        self,
        pretrained: str | None = None,
        *,
        model=None,
        tokenizer=None,
        gen_length=None,
        steps=None,
        block_length=None,
        temperature=None,
        remasking=None,
        early_stop=None,
        seed=None,
        batch_size=16,
        max_batch_size=None,
        device=None,
        dtype=None,
        mc_num=128,
        mc_batch_size=32,
        check_greedy=False,
        **kwargs,
    ):
        super().__init__()
        from mdm.data import mask_token_id_of
        from mdm.errors import ConfigError
        from mdm.sampler import DecodeConfig

        kwargs.pop("trust_remote_code", None)
        if kwargs:
            raise ConfigError(f"model_args.{sorted(kwargs)[0]}", "unknown model argument for --model mdm; allowed: "
                              "pretrained, gen_length, steps, block_length, temperature, remasking, early_stop, seed, "
                              "batch_size, device, dtype, mc_num, mc_batch_size, check_greedy")  # fmt: skip
        if device is not None and str(device).startswith("cuda"):
            import torch

            if not torch.cuda.is_available():  # lm-eval's --device defaults to cuda
                eval_logger.warning("device %s is not available; using cpu", device)
                device = "cpu"
        from mdm.eval.distributed import ranks

        self._ranks = ranks()  # inside `accelerate launch`: lm-eval gives each rank every world-th document
        self._rank, self._world_size = self._ranks.rank, self._ranks.world
        if model is None:
            if not pretrained:
                raise ConfigError("model_args.pretrained", "give a run folder or model folder: pretrained=PATH")
            from mdm.eval.api import load_model

            model, tokenizer, model_dir = load_model(pretrained, self._ranks.device or device, dtype)
            self._name = str(model_dir)
        else:
            if tokenizer is None:
                raise ValueError("MDMLM(model=...) needs tokenizer=...")
            self._name = getattr(getattr(model, "config", None), "_name_or_path", "") or "in-memory"
        self.model, self.tokenizer = model.eval(), tokenizer
        self._device = next(model.parameters()).device
        self.mask_token_id = mask_token_id_of(tokenizer, getattr(model, "config", None))
        knobs = {"gen_length": gen_length, "steps": steps, "block_length": block_length, "temperature": temperature,
                 "remasking": remasking, "seed": seed}  # fmt: skip
        knobs = {k: (float(v) if k == "temperature" else v if k == "remasking" else _int(v, k))
                 for k, v in knobs.items() if v is not None}  # fmt: skip
        if early_stop is not None:
            knobs["early_stop"] = _bool(early_stop)
        self.decoding = DecodeConfig.from_dict(knobs)
        bs = str(batch_size)
        self.batch_size = _int(max_batch_size or 16, "max_batch_size") if bs.startswith("auto") else _int(bs, "batch_size")
        self.mc_num, self.mc_batch_size = _int(mc_num, "mc_num"), _int(mc_batch_size, "mc_batch_size")
        self.check_greedy = _bool(check_greedy)
        self.generation_stats = {"forward_passes": 0, "prompts": 0}

    # -- lm-eval plumbing (data parallel as lm-eval's HFLM: its evaluator shards the documents by rank / world_size,
    # pads every rank to the same request count, and gathers the per-document results with these primitives)
    def all_gather(self, tensor):
        if self._world_size <= 1:
            return tensor
        from accelerate.utils import gather  # deferred: accelerate (slow import), only inside a launch

        return gather(tensor if tensor.dim() else tensor[None])

    def gather_object(self, obj, dst=0):
        gathered = self._ranks.gather(obj)
        return gathered if self._rank == dst else None

    def barrier(self) -> None:
        self._ranks.barrier()

    @property
    def tokenizer_name(self) -> str:
        return getattr(self.tokenizer, "name_or_path", "mdm").replace("/", "__")

    def chat_template(self, chat_template=False) -> str:
        return getattr(self.tokenizer, "chat_template", None) or "mdm-plain: <|bos|><|user|>...<|assistant|>"

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(chat_history, tokenize=False, add_generation_prompt=add_generation_prompt)
        from mdm.data.tokenizer import ASSISTANT, USER

        text, system = tok.bos_token or "", ""
        for msg in chat_history:
            if msg["role"] == "system":
                system += msg["content"] + "\n"
            elif msg["role"] == "user":
                text += USER + system + msg["content"]
                system = ""
            else:
                text += ASSISTANT + msg["content"] + (tok.eos_token or "")
        return text + (ASSISTANT if add_generation_prompt else "")

    def get_model_info(self) -> dict:
        return {"model_name": self._name, "mdm_decoding": self.decoding.to_dict(),
                "mdm_batch_size": self.batch_size, "mdm_mc_num": self.mc_num}  # fmt: skip

    def encode(self, text: str) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        bos = self.tokenizer.bos_token_id
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos] + ids
        return ids

    # -- generation
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from mdm.sampler import DecodeConfig, decode_text, generate

        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        out: list[str] = [""] * len(requests)
        keys = _row_keys(requests)
        for key, idx in groups.items():
            kw = json.loads(key)
            until = kw.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            config = self.decoding
            if _bool(kw.get("do_sample", False)) and float(kw.get("temperature") or 0) > 0:
                config = DecodeConfig.from_dict({"temperature": float(kw["temperature"])}, base=config)
            prompts = [self.encode(requests[i].args[0]) for i in idx]
            res = generate(self.model, prompts, config, mask_token_id=self.mask_token_id,
                           eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id,
                           batch_size=self.batch_size, row_keys=[keys[i] for i in idx],
                           vocab_size=len(self.tokenizer))  # fmt: skip
            self.generation_stats["forward_passes"] += res.forward_passes
            self.generation_stats["prompts"] += len(idx)
            for i, toks in zip(idx, res.tokens):
                text = decode_text(self.tokenizer, toks)
                for stop in until:
                    if stop and stop in text:
                        text = text.split(stop)[0]
                out[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return out

    # -- likelihood
    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation, context = context[-n_spaces:] + continuation, context[:-n_spaces]
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        return ctx, whole[len(ctx) :]

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        from mdm.eval.likelihood import mc_loglikelihood, suffix_greedy

        out = []
        for req in requests:
            ctx, cont = self._encode_pair(*req.args)
            ll = mc_loglikelihood(self.model, ctx, cont, self.mask_token_id, mc_num=self.mc_num,
                                  batch_size=self.mc_batch_size, seed=self.decoding.seed)  # fmt: skip
            greedy = suffix_greedy(self.model, ctx, cont, self.mask_token_id) if self.check_greedy else False
            out.append((ll, greedy))
            self.cache_hook.add_partial("loglikelihood", req.args, (ll, greedy))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        from mdm.eval.likelihood import mc_loglikelihood

        out = []
        for req in requests:
            ids = self.encode(req.args[0])
            prefix = ids[:1] if ids and ids[0] == self.tokenizer.bos_token_id else []
            out.append(mc_loglikelihood(self.model, prefix, ids[len(prefix) :], self.mask_token_id,
                                        mc_num=self.mc_num, batch_size=self.mc_batch_size, seed=self.decoding.seed))  # fmt: skip
        return out


def _row_keys(requests) -> list:
    """The keys of the requests' random draws: a request's document (task, doc_id, its index among the document's
    requests, which of its `repeats` copies) when lm-eval gives one, so a sampled answer does not depend on the rank,
    or the position in the rank's list, the document landed in; else its position (a request built by hand)."""
    keys, copies = [], {}
    for i, req in enumerate(requests):
        doc_id = getattr(req, "doc_id", None)
        if doc_id is None:
            keys.append(i)
            continue
        copy = copies[id(req)] = copies.get(id(req), -1) + 1  # lm-eval repeats a request as the same object
        keys.append((getattr(req, "task_name", None), doc_id, getattr(req, "idx", 0), copy))
    return keys


# ---------------------------------------------------------------- the authors' scorer on lm-eval's samples


def score_samples(samples_path: str | Path) -> dict:
    """GSM8K scores from an lm-eval samples file (--log_samples): lm-eval's own strict / flexible exact match as
    logged, the same two recomputed by mdm.eval.scorers on the logged raw responses (they must agree), and the
    authors' `####` scorer, which lm-eval's task cannot express (its metrics apply to every filter)."""
    from mdm.eval.scorers import gsm8k_authors, gsm8k_flexible, gsm8k_strict

    lm, ours, authors = {}, {}, {}
    with open(samples_path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            s = json.loads(line)
            pred, gold = s["resps"][0][0], s["target"]
            rule = {"strict-match": gsm8k_strict, "flexible-extract": gsm8k_flexible}.get(s.get("filter"))
            if rule is None:
                continue
            lm.setdefault(s["filter"], {})[s["doc_id"]] = float(s["exact_match"])
            ours.setdefault(s["filter"], {})[s["doc_id"]] = float(rule(pred, gold))
            authors[s["doc_id"]] = float(gsm8k_authors(pred, gold))
    mean = lambda d: sum(d.values()) / len(d) if d else float("nan")
    out = {"n": len(authors), "authors_exact_match": mean(authors)}
    for name in ("strict-match", "flexible-extract"):
        out[f"exact_match,{name}"] = mean(lm.get(name, {}))
        out[f"mdm_scorer,{name}"] = mean(ours.get(name, {}))
    out["mdm_scorers_agree_per_sample"] = all(lm[k] == ours[k] for k in lm)
    return out


def _post_run(argv: list[str], started: float) -> None:
    """After a run with --output_path and --log_samples: add the authors' scorer next to lm-eval's results."""
    out_path = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--output_path"), None)
    out_path = out_path or next((a.split("=", 1)[1] for a in argv if a.startswith("--output_path=")), None)
    if not out_path or not _has_option(argv, "--log_samples"):
        return
    root = Path(out_path)
    root = root.parent if root.suffix == ".json" else root
    files = [p for p in (root.rglob("samples_gsm8k*.jsonl") if root.is_dir() else [])
             if p.stat().st_mtime >= started - 1]  # fmt: skip
    for samples in files:
        scores = score_samples(samples)
        dest = samples.with_name(samples.name.replace("samples_", "authors_", 1).replace(".jsonl", ".json"))
        dest.write_text(json.dumps(scores, indent=2) + "\n", encoding="utf-8")
        print(f"{samples.name}: authors' #### exact match = {scores['authors_exact_match']:.4f} "
              f"(strict {scores['exact_match,strict-match']:.4f}, flexible {scores['exact_match,flexible-extract']:.4f}; "
              f"mdm scorers agree: {scores['mdm_scorers_agree_per_sample']}) -> {dest}")  # fmt: skip


# ---------------------------------------------------------------- CLI wrapper


def _has_option(argv: list[str], name: str) -> bool:
    return any(a == name or a.startswith(name + "=") for a in argv)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "write-tasks":
        import argparse

        p = argparse.ArgumentParser(prog="python -m evals.lm_eval_plugin write-tasks")
        p.add_argument("out_dir")
        p.add_argument("--gsm8k-data", help="folder with train.jsonl and test.jsonl (default: ../shared/data/gsm8k)")
        p.add_argument("--hub", action="store_true", help="use the hub id openai/gsm8k instead of local files")
        a = p.parse_args(argv[1:])
        for path in write_tasks(a.out_dir, a.gsm8k_data, a.hub):
            print(path)
        return
    subcommands = ("run", "ls", "validate")
    is_run = not argv or argv[0] not in subcommands[1:]
    if is_run and argv and not any(a in ("-h", "--help") for a in argv):
        if not _has_option(argv, "--include_path"):
            argv += ["--include_path", str(task_dir())]
        if not _has_option(argv, "--batch_size"):
            argv += ["--batch_size", str(DEFAULT_BATCH_SIZE)]
    import time

    from lm_eval.__main__ import cli_evaluate

    from mdm.errors import ConfigError

    sys.argv = ["lm-eval", *argv]
    started = time.time()
    try:
        cli_evaluate()
    except ConfigError as e:
        sys.exit(f"lm_eval_plugin: error: {e}")
    except ValueError as e:
        if not str(e).startswith("Tasks not found"):
            raise
        sys.exit(f"lm_eval_plugin: error: {e} (the mdm include path adds: {GSM8K_TASK}; "
                 "`lm-eval ls tasks` lists lm-eval's own)")  # fmt: skip
    if is_run:
        _post_run(argv, started)


if __name__ == "__main__":
    main()
