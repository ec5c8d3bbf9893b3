"""The training loop: SFT of an MDM with any method (or of an ARM) on `accelerate`, resumable.

One optimizer step s:
  1. the global batch = examples keyed by (seed, epoch), independent of the process count;
  2. this process takes its contiguous rows, cut into A micro-batches (A = gradient accumulation);
     each row keeps its index in the global batch (`positions`), so t, masks and StraTS strata are the
     same for any layout;
  3. each micro-batch loss (a mean over its rows) is scaled by rows * processes * A / global rows, so after
     accelerate's 1/A and DDP's 1/processes the gradient is exactly that of the global-batch mean;
  4. the rows' (t, loss) are gathered in position order: the logged loss, and the EMA control variate's
     update, are those of the global batch (every micro-batch sees the control variate's pre-step state);
  5. clip, AdamW step, scheduler step; one JSONL line; a checkpoint every `checkpoint_every` steps and/or
     `checkpoint_minutes` of training.
A run directory holds run_config.json, train_log.jsonl, checkpoints/, model/ (final) and result.json; with
`training.peft` also adapter/ (model/ then holds the merged weights), with `training.report_to` trackers/.
`Trainer(cfg).train()` on a directory with a checkpoint resumes and reproduces the uninterrupted run; without
one it restarts from step 0 with an empty log. A directory belongs to the configuration that wrote its
run_config.json (after setup succeeded); another configuration is refused, finished or not (`set_aside`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from mdm.adapters import checked_on_main
from mdm.cache import writable_cache
from mdm.data import Collator, get_task, mask_token_id_of
from mdm.errors import ConfigError
from mdm.eval.likelihood import heldout_nll
from mdm.io import atomic_write_json, owned_folder, read_json, space_for
from mdm.objective import ARMObjective, MDMObjective, Method
from mdm.objective.objective import model_token_ce
from mdm.progress import progress
from mdm.train import ppots, trackers
from mdm.train.checkpoints import LOG, Checkpoints
from mdm.train.config import RunConfig
from mdm.train.data import (
    accumulation_steps,
    build_data,
    check_before_compute,
    global_batch,
    load_examples,
    micro_ranges,
    total_steps,
)
from mdm.train.lora import apply_lora, check_tiny
from mdm.train.run_dir import saving, set_aside, stale_reason, state_bytes  # noqa: F401  (re-exported)
from mdm.train.trackers import check_trackers, tracker_dir

RESULT = "result.json"


class TrainingFailed(RuntimeError):
    pass


def read_log(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}  # ours -> transformers'


def lr_scheduler(optimizer, schedule: str, warmup: int, total: int):
    """transformers' schedule: linear warmup from 0, then linear / cosine decay to 0 (or constant)."""
    from transformers import get_scheduler  # deferred: transformers' schedulers, only when a run is set up

    return get_scheduler(SCHEDULES[schedule], optimizer, num_warmup_steps=warmup, num_training_steps=total)


def checkpoint_interval(setting, total: int) -> int | None:
    """Optimizer steps between checkpoints: `auto` is 4 per run (keep_checkpoints bounds the disk)."""
    return max(1, math.ceil(total / 4)) if setting == "auto" else setting


def use_bf16(setting) -> bool:
    if setting == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(setting)


class Trainer(Checkpoints):
    def __init__(self, config: RunConfig):
        self.cfg = config
        self.run_dir = Path(config.output_dir)
        self.is_mdm = config.model.family == "mdm"

    # ------------------------------------------------------------ setup

    def setup(self) -> None:
        # deferred: accelerate (slow import), only when a run is set up
        from accelerate import Accelerator
        from accelerate.utils import broadcast_object_list

        # deferred: bound per run, so a test's stand-in for mdm.train.model.build_model is the one called
        from mdm.train.model import build_model, cache_root, counting_tokenizer, ensure_base

        cfg, t = self.cfg, self.cfg.training
        if t.threads:
            torch.set_num_threads(t.threads)
        check_trackers(t.report_to)  # also for a config not read by load_run_config (check_run)
        own_check = get_task(cfg.data.task).hook("check")
        if own_check is not None:  # a task plugin's checks (e.g. a model it cannot train yet), before any compute
            own_check(cfg)
        method = Method.build(cfg.method) if self.is_mdm else None
        fit_ppots = method is not None and ppots.needs_fit(method)
        echo = (lambda line: print(f"{cfg.name or self.run_dir.name}: {line}", file=sys.stderr)) \
            if int(os.environ.get("RANK", "0")) == 0 else None
        # data problems too: before the model (a tiny base may pretrain); OpenScience counts rows in the run's tokens
        examples = load_examples(cfg.data, counting_tokenizer(cfg), echo)
        check_before_compute(cfg, len(examples))  # the test source's columns, a sane step count

        if cfg.model.source == "tiny" or cfg.model.base == "auto" or fit_ppots:
            writable_cache(cfg.model.cache_dir)  # before any compute: tokenizers, bases and pilots are cached
        if t.peft is not None and cfg.model.source == "tiny":
            check_tiny(cfg)  # LoRA targets: before a tiny base is pretrained (other models: once loaded)
        if cfg.model.base == "auto":
            ensure_base(cfg)  # the tiny base is pretrained (a separate process inside a launch) before the Accelerator
        world = int(os.environ.get("WORLD_SIZE", "1"))
        self.accum = accumulation_steps(t.global_batch_size, t.micro_batch_size, world)
        self.acc = acc = Accelerator(cpu=not torch.cuda.is_available(), gradient_accumulation_steps=self.accum,
                                     mixed_precision="bf16" if use_bf16(t.bf16) else "no",
                                     log_with=t.report_to or None,
                                     project_dir=str(tracker_dir(self.run_dir)) if t.report_to else None)
        # loaded after the Accelerator: with the process group up, FSDP's RAM-efficient loading (fsdp.yaml) reads the
        # weights on rank 0 only (meta tensors elsewhere, filled by prepare), and DeepSpeed ranks load bf16
        model, tokenizer = build_model(cfg)
        if acc.num_processes != world:  # e.g. launched without torchrun
            self.accum = accumulation_steps(t.global_batch_size, t.micro_batch_size, acc.num_processes)
            acc.gradient_accumulation_steps = self.accum
        # separate_views: a micro-batch makes one backward call per view; DeepSpeed counts backward calls as
        # micro-batches (and divides each loss by their number), so it is told views x accum and the loss scaled back
        views = math.ceil(method.mask.cost - 1e-9) if self.is_mdm and t.separate_views else 1
        self.view_scale = 1.0
        if acc.state.deepspeed_plugin is not None:  # DeepSpeed counts micro-batches and clips by itself
            ds = acc.state.deepspeed_plugin.deepspeed_config
            ds.update(train_micro_batch_size_per_gpu=t.micro_batch_size, gradient_accumulation_steps=self.accum * views,
                      gradient_clipping=t.grad_clip or 0.0)
            self.view_scale = float(views)
        self.adapter = checked_on_main(model, not self.is_mdm, acc)  # one probe forward: refuses wrong attention
        if t.gradient_checkpointing:
            self.adapter.enable_checkpointing(model)
        self.peft = None
        if t.peft is not None:  # LoRA injected into `model`; the PeftModel is kept to save and merge the adapter
            # the adapters' init and LoRA dropout use torch's global generator: seeded here, saved in checkpoints
            torch.manual_seed(t.seed)
            self.peft = apply_lora(model, t.peft.lora, self.adapter)
        self.tokenizer = tokenizer
        self.data = build_data(cfg.data, tokenizer, eos_pad=cfg.model.family == "mdm", examples=examples, echo=echo,
                               model_config=model.config)
        self.collate = Collator(tokenizer, cfg.data.spec(), cfg.data.max_length,
                                pad_carries_loss=not self.adapter.can_pad)
        if self.is_mdm and not self.adapter.can_pad and not cfg.data.pad_to and t.micro_batch_size > 1 and echo:
            echo("data: this model ignores attention masks, so each row sees (and is scored on) its micro-batch's "
                 "EOS padding: its loss depends on the rows it is batched with; set data.pad_to (a fixed canvas) "
                 "to make it independent (mdm.train.data.pad_to_canvas)")
        self.mask_token_id = mask_token_id_of(tokenizer, model.config) if self.is_mdm else None
        self.objective = MDMObjective(method, self.mask_token_id) if self.is_mdm else ARMObjective()
        self.total = total_steps(len(self.data.train), t.global_batch_size, t.epochs, t.max_steps)
        self.n_params = sum(p.numel() for p in model.parameters())
        self.n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.checkpoint_every = checkpoint_interval(t.checkpoint_every, self.total)

        params = [p for p in model.parameters() if p.requires_grad]  # all of them, unless LoRA froze the backbone
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}],
                                      lr=t.lr, betas=t.adam_betas, eps=t.adam_eps)
        warmup = t.warmup_steps or round(t.warmup_ratio * self.total)
        self.scheduler = lr_scheduler(optimizer, t.schedule, warmup, self.total)
        # the scheduler is not prepared: accelerate would step it once per process
        self.model, self.optimizer = acc.prepare(model, optimizer)
        acc.register_for_checkpointing(self.scheduler)
        self.t_sampler = self.objective.method.t_sampler if self.is_mdm else None
        if self.is_mdm:
            acc.register_for_checkpointing(self.objective.method.control_variate)
            if hasattr(self.t_sampler, "state_dict"):  # stateful t-samplers (adaptive P-POTS)
                acc.register_for_checkpointing(self.t_sampler)

        if acc.is_main_process and not (self.run_dir / "run_config.json").is_file():  # set up: the folder is ours
            atomic_write_json(self.run_dir / "run_config.json",
                              {"trajectory": self.cfg.trajectory_dict(), "config": self.cfg.model_dump(mode="json")})
        if fit_ppots:  # fitted once (the pilot's forwards sharded over all ranks) and kept for a resume
            path = self.run_dir / "ppots.json"
            shared = [read_json(path) if acc.is_main_process and path.is_file() else None]
            broadcast_object_list(shared, from_process=0)
            if shared[0] is None:
                shared[0] = ppots.fit_density(
                    model=self.model, items=self.data.train, collate=self.collate, mask_token_id=self.mask_token_id,
                    pilot=cfg.ppots_pilot, device=acc.device, meta={"run": cfg.name, "task": cfg.data.task},
                    cache_dir=cache_root(cfg.model) / "ppots", accelerator=acc)
                if acc.is_main_process:
                    atomic_write_json(path, shared[0])
            ppots.install(method.t_sampler, shared[0])

        self.state = {"step": 0, "tokens_seen": 0, "passes": 0, "token_passes": 0, "elapsed_s": 0.0}
        ckpt = self.latest_checkpoint()
        if ckpt is not None:
            acc.load_state(str(ckpt))
            self.state = read_json(ckpt / "trainer_state.json")
            self.state["resumed_from"] = [*self.state.get("resumed_from", []), self.state["step"]]
        if acc.is_main_process:  # the steps after the checkpoint (or all: no checkpoint) are trained again
            self._truncate_log(self.state["step"])
        acc.wait_for_everyone()

    def _check_run_dir(self) -> None:
        """A run directory belongs to one configuration: resuming with another would mix trajectories, and a
        finished one would be reported as this run. Also: the folder must be creatable and writable."""
        why = stale_reason(self.run_dir, self.cfg)
        if why:
            raise ConfigError(str(self.run_dir), f"holds a run of another configuration ({why}); pass --rerun-stale "
                              "to move it aside (kept as <folder>.stale-N), or use another output_dir")
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError("output_dir", f"{self.run_dir}: cannot create the run folder ({e.strerror})") from None
        if not os.access(self.run_dir, os.W_OK):
            raise ConfigError("output_dir", f"{self.run_dir}: the run folder is not writable")

    def _elapsed(self) -> float:
        return self.state["elapsed_s"] + time.perf_counter() - self._segment_start

    # ------------------------------------------------------------ one optimizer step

    def train_step(self, step: int) -> dict:
        """Forward/backward over this process's micro-batches of global batch `step` (0-based), then update."""
        # deferred: accelerate (slow import) stays out of this module's import
        from accelerate.utils import gather_object

        acc, t = self.acc, self.cfg.training
        items = self.data.train
        epoch, idx = global_batch(len(items), t.global_batch_size, t.seed, step)
        n = len(idx)
        cv = self.objective.method.control_variate if self.is_mdm else None
        snapshot = cv.state_dict() if cv is not None else None
        local = {"pos": [], "t": [], "w": [], "rows": [], "passes": 0, "token_passes": 0, "masked": 0}
        self.model.train()
        for lo, hi in micro_ranges(n, acc.num_processes, acc.process_index, self.accum):
            empty = hi == lo  # fewer rows than micro-batches (a short last batch): a zero-weight pass keeps DDP in step
            rows = idx[lo:hi] if not empty else idx[:1]
            batch = self.collate([items[i] for i in rows])
            batch.positions = torch.arange(lo, hi) if not empty else torch.zeros(1, dtype=torch.long)
            batch = batch.to(acc.device)
            with acc.accumulate(self.model):
                scale = (hi - lo) * acc.num_processes * self.accum / n
                if self.is_mdm:
                    cv.load_state_dict(snapshot)  # offsets from the pre-step state, whatever the layout
                    draws = self.objective.draw(batch, seed=t.seed, step=step, global_batch_size=n)
                    if t.separate_views:  # each view's forward + backward in turn (setup: DeepSpeed counts them)
                        out = self.objective.loss_by_view(model_token_ce(self.model), batch, draws,
                                                          lambda part, s=scale: acc.backward(part * s * self.view_scale))
                    else:
                        out = self.objective.loss(model_token_ce(self.model), batch, draws)
                    lengths = batch.attention_mask.sum(1).to(draws.active.device)
                    token_passes = int((draws.active.long() * lengths[None]).sum())
                else:
                    out = self.objective(self.model, batch)
                    token_passes = int(batch.attention_mask.sum())
                if not (self.is_mdm and t.separate_views):
                    acc.backward(out.loss * scale)
            if empty:
                continue
            if hasattr(self.t_sampler, "observe"):  # adaptive t-samplers learn from every row's loss
                self.t_sampler.observe(out)
            local["pos"] += batch.positions.tolist()
            local["t"] += out.t.double().tolist()
            local["w"] += out.seq_weight.double().tolist()
            local["rows"] += out.row_losses.double().tolist()
            local["passes"] += out.passes
            local["token_passes"] += token_passes
            local["masked"] += out.masked_tokens
        parts = gather_object([local]) if acc.num_processes > 1 else [local]

        flat = {k: [x for part in parts for x in part[k]] for k in ("pos", "t", "w", "rows")}
        order = sorted(range(len(flat["pos"])), key=flat["pos"].__getitem__)
        assert [flat["pos"][i] for i in order] == list(range(n)), "every row of the global batch exactly once"
        t_all = torch.tensor([flat["t"][i] for i in order], dtype=torch.float64)
        rows_all = torch.tensor([flat["rows"][i] for i in order], dtype=torch.float64)
        if cv is not None:  # the control variate's update: the global batch, in position order
            cv.load_state_dict(snapshot)
            offsets = cv.offsets(t_all, rows_all)
        else:
            offsets = torch.zeros_like(rows_all)
        loss = float((rows_all - offsets).mean())
        if not math.isfinite(loss):
            raise TrainingFailed(f"non-finite loss at step {step + 1}")

        grad_norm = acc.clip_grad_norm_(self.model.parameters(), t.grad_clip or float("inf"))
        grad_norm = None if grad_norm is None else float(grad_norm)
        if grad_norm is not None and not math.isfinite(grad_norm):
            raise TrainingFailed(f"non-finite gradient norm at step {step + 1}")
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if hasattr(self.t_sampler, "end_step"):  # once per optimizer step, on every process
            self.t_sampler.end_step(step)

        tokens = sum(len(items[i]["input_ids"]) for i in idx)
        passes = sum(p["passes"] for p in parts)
        token_passes = sum(p["token_passes"] for p in parts)
        s = self.state
        s["step"] = step + 1
        s["tokens_seen"] += tokens
        s["passes"] += passes
        s["token_passes"] += token_passes
        entry = {"step": step + 1, "epoch": epoch, "loss": loss, "loss_raw": float(rows_all.mean()),
                 "grad_norm": grad_norm, "lr": lr, "batch_size": n, "tokens": tokens, "tokens_seen": s["tokens_seen"],
                 "passes": passes, "passes_seen": s["passes"], "token_passes": token_passes,
                 "token_passes_seen": s["token_passes"], "masked_tokens": sum(p["masked"] for p in parts)}
        if self.is_mdm:
            entry["t"] = t_all.tolist()
            entry["seq_weight"] = [flat["w"][i] for i in order]
        return entry

    # ------------------------------------------------------------ the run

    def train(self) -> dict:
        """Train (or resume, or return the finished result). Returns result.json's content. The run folder is held
        by this process throughout (by rank 0 of a launch): a second one on it is refused, naming the holder."""
        created = not self.run_dir.exists()
        try:
            self._check_run_dir()
        except BaseException:
            if created:  # e.g. not writable: a refused run leaves no folder
                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise
        if int(os.environ.get("RANK", "0")) != 0:
            return self._train(created)
        with owned_folder(self.run_dir, "mdm train"):
            return self._train(created)

    def _train(self, created: bool) -> dict:
        try:
            self._check_run_dir()  # again, as the owner: another process may have set the folder up meanwhile
            done = read_json(self.run_dir / RESULT)
            if done and done.get("status") == "done":
                return done
            self.setup()
        except BaseException:
            if created and not (self.run_dir / "run_config.json").exists():  # a failed setup leaves no folder
                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise
        self._segment_start = time.perf_counter()
        acc, t = self.acc, self.cfg.training
        every = max(1, math.ceil(self.total / 10)) if t.log_every == "auto" else t.log_every
        bar = progress(self.total, self.cfg.name or self.run_dir.name, initial=self.state["step"], every=every,
                       enabled=acc.is_main_process and t.progress)
        if t.report_to:
            acc.init_trackers(self.cfg.name or self.run_dir.name,
                              config=trackers.flat_config(self.cfg.model_dump(mode="json")),
                              init_kwargs=trackers.init_kwargs(t.report_to, self.run_dir))
        log = open(self.run_dir / LOG, "a") if acc.is_main_process else None
        try:
            while self.state["step"] < self.total:
                entry = self.train_step(self.state["step"])
                entry["elapsed_s"] = round(self._elapsed(), 3)
                if log:
                    with space_for(self.run_dir / LOG, 1 << 16, "the training log", "nothing else is written"):
                        log.write(json.dumps(entry) + "\n")
                        log.flush()
                if t.report_to:
                    acc.log(trackers.step_values(entry), step=entry["step"])
                bar.set_postfix(loss=f"{entry['loss']:.4f}", refresh=False)
                bar.update(1)
                if self._checkpoint_due() and self.state["step"] < self.total:
                    self.save_checkpoint()
                if t.save_model_every and self.state["step"] % t.save_model_every == 0 and \
                        self.state["step"] < self.total:  # the last step's model is <run>/model
                    self.save_model_snapshot()
        except TrainingFailed as e:
            return self._finish("failed", str(e))
        except BaseException:  # killed or crashed: close the trackers' files (a rerun resumes)
            if t.report_to:
                trackers.finish(acc)
            raise
        finally:
            bar.close()
            if log:
                log.close()
        return self._finish("done")

    def _finish(self, status: str, reason: str = "") -> dict:
        acc, cfg = self.acc, self.cfg
        metrics: dict = {}
        if status == "done":
            if self.peft is not None:  # the adapter, then the merged weights as the run's model
                if acc.is_main_process:
                    self.peft.save_pretrained(self.run_dir / "adapter")
                self.peft.merge_and_unload()
            state_dict = acc.get_state_dict(self.model)
            if acc.is_main_process:  # written whole, then renamed: a full disk leaves the checkpoints as they are
                tmp, final = self.run_dir / ".tmp-model", self.run_dir / "model"
                shutil.rmtree(tmp, ignore_errors=True)
                with saving(tmp, state_bytes(self.model, 0), "the final model", self.latest_checkpoint()):
                    acc.unwrap_model(self.model).save_pretrained(tmp, state_dict=state_dict)
                    self.tokenizer.save_pretrained(tmp)
                shutil.rmtree(final, ignore_errors=True)
                os.replace(tmp, final)
            metrics = self._metrics()  # every rank: the held-out loss is sharded over them
        result = {
            "status": status, "reason": reason, "name": cfg.name, "family": cfg.model.family,
            "task": cfg.data.task, "seed": cfg.training.seed, "steps": self.state["step"], "total_steps": self.total,
            "tokens_seen": self.state["tokens_seen"], "passes": self.state["passes"],
            "token_passes": self.state["token_passes"], "wall_time_s": round(self._elapsed(), 3),
            "resumed_from": self.state.get("resumed_from", []),
            "num_processes": acc.num_processes, "accumulation_steps": self.accum,
            "n_train": len(self.data.train), "n_heldout": len(self.data.heldout), "dropped": self.data.dropped,
            "model_params": self.n_params, "trainable_params": self.n_trainable,
            "peft": None if self.peft is None else "lora", "mixed_precision": acc.mixed_precision, "adapter": repr(self.adapter),
            "metrics": metrics,
        }
        if cfg.training.report_to:
            acc.log({f"final/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))} |
                    {"final/failed": int(status != "done")}, step=self.state["step"])
            trackers.finish(acc)
        if acc.is_main_process:
            atomic_write_json(self.run_dir / RESULT, result)
            if status == "done":
                shutil.rmtree(self.run_dir / "checkpoints", ignore_errors=True)
        acc.wait_for_everyone()
        return result

    def _metrics(self) -> dict:
        """Train-loss summaries (main process: it wrote the log) and the held-out loss of the wrapped model, sharded
        over all ranks under autocast (mdm.eval.likelihood)."""
        metrics: dict = {}
        if self.acc.is_main_process:
            losses = [e["loss_raw"] for e in read_log(self.run_dir)]
            tail = losses[-max(1, len(losses) // 10):]
            metrics = {"train_loss_final": losses[-1] if losses else None,
                       "train_loss_last10pct": sum(tail) / len(tail) if tail else None}
        e = self.cfg.eval
        if e.heldout and self.data.heldout:
            items = self.data.heldout[: e.max_examples]
            metrics["heldout_loss"] = heldout_nll(
                self.model, self.tokenizer, items, self.collate.task, self.cfg.data.max_length,
                family=self.cfg.model.family, mask_token_id=self.mask_token_id, t_grid=e.t_grid,
                batch_size=e.batch_size, seed=e.seed, device=self.acc.device,
                accelerator=self.acc)["nll_per_token_macro"]
            metrics["heldout_metric"] = "mdm_neg_elbo_per_token" if self.is_mdm else "arm_nll_per_token"
            metrics["heldout_examples"] = len(items)
        return metrics


def train_run(config: RunConfig) -> dict:
    return Trainer(config).train()
