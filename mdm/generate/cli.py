"""`mdm generate RUN_DIR|MODEL_FOLDER|HUB_ID [--prompt TEXT ...]`: answer prompts with a model, formatted as in
training (`mdm.data.format_chat`) and decoded with the LLaDA sampler (`mdm.sampler`; ARM runs: greedy or sampled
`generate`). Without --prompt it reads one prompt per line from stdin until EOF.

Decoding defaults: the knobs of the run's own accuracy eval (eval.accuracy.decoding), else the task's PAPER.md
settings (mdm.sampler.TASK_DECODING), else DecodeConfig's; every knob can be given on the command line.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from mdm.errors import ConfigError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_target(target: str) -> tuple[str, Path | None]:
    """("local", run-or-model folder) or ("hub", None); a path that is neither is one ConfigError."""
    path = Path(target).expanduser()
    if path.exists():
        from mdm.eval.api import find_model_dir  # deferred: the CLI's subcommands import only what they run

        find_model_dir(path)  # names what was looked for when the folder holds no model
        return "local", path
    if HUB_ID.match(target):
        return "hub", None
    raise ConfigError("run_dir", f"{target}: no such run or model folder (nor a hub id like owner/name)")


def run_defaults(path: Path | None) -> tuple[dict, str | None, str]:
    """(decoding knobs, task, model family) a run folder records; empty for a model folder or a hub id."""
    if path is None:
        return {}, None, ""
    # deferred: the CLI's subcommands import only what they run
    from mdm.eval.api import find_model_dir, run_decoding, run_record

    _, record = run_record(path, find_model_dir(path))
    return run_decoding(record), record.get("task"), str(record.get("model_family", ""))


def load(target: str, kind: str, device, dtype):
    # deferred: the CLI's subcommands import only what they run
    from transformers.utils import logging as hf_logging

    from mdm.eval.api import load_model, resolve_device, resolve_dtype

    hf_logging.disable_progress_bar()  # stdout / stderr carry the answers and the prompt marker only

    if kind == "local":
        model, tokenizer, _ = load_model(target, device, dtype)
        return model, tokenizer
    from mdm.models import load_hub_model  # deferred: the CLI's subcommands import only what they run

    dev = resolve_device(device)
    try:
        model, tokenizer = load_hub_model(target, dtype=resolve_dtype(dtype, dev))
    except (OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError("run_dir", f"{target}: not a local folder, and the hub model cannot be loaded "
                          f"({first})") from None
    return model.to(dev).eval(), tokenizer


def cmd_generate(args) -> None:
    kind, path = resolve_target(args.target)
    run_decoding, task, family = run_defaults(path)
    # deferred: the CLI's subcommands import only what they run
    from mdm.sampler import TASK_DECODING, DecodeConfig

    cli = {"gen_length": args.gen_length, "steps": args.steps, "block_length": args.block_length,
           "temperature": args.temperature, "remasking": args.remasking, "seed": args.seed}
    if args.no_early_stop:
        cli["early_stop"] = False
    config = DecodeConfig.from_dict(run_decoding | {k: v for k, v in cli.items() if v is not None},
                                    base=TASK_DECODING.get(task or "", DecodeConfig()))  # checked before loading
    if args.batch_size < 1:
        raise ConfigError("--batch-size", f"must be >= 1, got {args.batch_size}")

    model, tokenizer = load(args.target, kind, args.device, args.dtype)
    answer = Answerer(model, tokenizer, config, family, args.batch_size)
    if args.prompt:
        show(args.prompt, answer(args.prompt), args.json)
        return
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        if line.strip():
            show([line.rstrip("\n")], answer([line.rstrip("\n")]), args.json, single=True)


class Answerer:
    """Prompts -> response texts, in the run's chat format and with one decoding config."""

    def __init__(self, model, tokenizer, config, family: str, batch_size: int):
        # deferred: the CLI's subcommands import only what they run
        from mdm.data import mask_token_id_of
        from mdm.sampler import is_autoregressive

        self.model, self.tokenizer, self.config, self.batch_size = model, tokenizer, config, batch_size
        self.causal = family != "mdm" if family else is_autoregressive(model)
        self.mask_id = None if self.causal else mask_token_id_of(tokenizer, getattr(model, "config", None))

    def __call__(self, prompts: list[str]) -> list[str]:
        # deferred: the CLI's subcommands import only what they run
        from mdm.sampler import autoregressive_generate, chat_prompt_ids, decode_text, generate

        tok = self.tokenizer
        ids = [chat_prompt_ids(tok, p) for p in prompts]
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        if self.causal:
            out = autoregressive_generate(self.model, ids, self.config, eos_token_id=tok.eos_token_id,
                                          pad_token_id=pad, batch_size=self.batch_size)
        else:
            out = generate(self.model, ids, self.config, mask_token_id=self.mask_id, eos_token_id=tok.eos_token_id,
                           pad_token_id=pad, batch_size=self.batch_size, vocab_size=len(tok))
        return [decode_text(tok, t) for t in out.tokens]


def show(prompts: list[str], responses: list[str], as_json: bool, single: bool = False) -> None:
    if as_json:
        for p, r in zip(prompts, responses):
            print(json.dumps({"prompt": p, "response": r}, ensure_ascii=False), flush=True)
        return
    for i, r in enumerate(responses):
        if len(responses) > 1 and not single:
            print(f"[{i + 1}] {prompts[i]}")
        print(r, flush=True)


def register(sub) -> None:
    p = sub.add_parser("generate", help="answer prompts with a run's model (LLaDA sampler), as it was trained")
    p.add_argument("target", metavar="RUN_DIR|MODEL_FOLDER|HUB_ID",
                   help="an `mdm train` run folder, a save_pretrained folder, or a hub model id")
    p.add_argument("--prompt", action="append", help="a prompt (repeatable: decoded as one batch); default: read "
                   "one prompt per line from stdin until EOF")
    g = p.add_argument_group("decoding (defaults: the run's eval.accuracy decoding, else the task's settings)")
    g.add_argument("--gen-length", type=int, help="tokens in the answer canvas")
    g.add_argument("--steps", type=int, help="denoising steps in all (a multiple of the number of blocks)")
    g.add_argument("--block-length", type=int, help="semi-autoregressive block size (divides gen-length)")
    g.add_argument("--temperature", type=float, help="0: greedy; > 0: Gumbel-max sampling")
    g.add_argument("--remasking", help="low_confidence | random")
    g.add_argument("--seed", type=int, help="decoding seed (temperature > 0 or random remasking)")
    g.add_argument("--no-early-stop", action="store_true", help="decode every block even after EOS")
    p.add_argument("--batch-size", type=int, default=16, help="prompts decoded together (default 16)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--dtype", help="float32 | bfloat16 | float16 (default: bfloat16 on cuda, float32 on cpu)")
    p.add_argument("--json", action="store_true", help="one JSON line {prompt, response} per prompt")
    p.set_defaults(func=cmd_generate)
