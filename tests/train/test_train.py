"""Trainer: determinism, layout invariance (accumulation, uneven micro-batches), failure, ARM, base models."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from mdm.errors import ConfigError
from mdm.train import RunConfig, Trainer, load_run_config, read_log
from mdm.train.trainer import lr_scheduler
from tests.numerics import assert_same_trajectory

TINY_SIZE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
             "head_dim": 16, "intermediate_size": 64}
VOLATILE = {"elapsed_s"}


def tiny_run(out, cache, **over) -> dict:
    """A run config of a few CPU seconds: 2-layer hidden-32 backbone, 64 arith examples (58 train, 6 held out)."""
    cfg = {
        "model": {"size": TINY_SIZE, "tokenizer_examples": 300, "cache_dir": str(cache)},
        "data": {"task": "arith", "n_train": 64, "max_length": 128},
        "method": "standard",
        "training": {"max_steps": 4, "global_batch_size": 8, "micro_batch_size": 4, "lr": 1e-3, "threads": 1,
                     "progress": False},
        "eval": {"t_grid": 2},
        "output_dir": str(out),
    }
    for key, value in over.items():
        section, _, field = key.partition("__")
        if field:
            cfg[section] = {**cfg.get(section, {}), field: value}
        else:
            cfg[section] = value
    return cfg


def train(cfg: dict) -> tuple[dict, list[dict]]:
    result = Trainer(RunConfig.model_validate(cfg)).train()
    return result, read_log(cfg["output_dir"])


def trajectory(log: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k not in VOLATILE} for e in log]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mdm-cache")


@pytest.mark.numerics
def test_same_seed_is_bit_identical_and_seeds_differ(tmp_path, cache):
    method = {"preset": "strats+mirror+ema"}
    a = train(tiny_run(tmp_path / "a", cache, method=method))
    b = train(tiny_run(tmp_path / "b", cache, method=method))
    c = train(tiny_run(tmp_path / "c", cache, method=method, training__seed=7))
    assert a[0]["status"] == "done" and len(a[1]) == 4
    assert trajectory(a[1]) == trajectory(b[1])
    assert a[0]["metrics"]["heldout_loss"] == b[0]["metrics"]["heldout_loss"]
    assert [e["loss"] for e in a[1]] != [e["loss"] for e in c[1]]
    assert [e["t"] for e in a[1]] != [e["t"] for e in c[1]]
    first = a[1][0]
    for key in ("step", "loss", "grad_norm", "lr", "t", "seq_weight", "tokens_seen", "passes", "token_passes"):
        assert key in first, key
    assert 8 < first["passes"] <= 2 * 8  # MIRROR: two views per sequence (a view with no masked token is skipped)
    assert (tmp_path / "a" / "model" / "config.json").is_file()


@pytest.mark.numerics
def test_global_batch_is_exact_under_any_accumulation_layout(tmp_path, cache):
    """8-row global batches as 1 x 8, 3 x (3, 3, 2) and 4 x 2 micro-batches: the same trajectory. One epoch of
    58 examples ends with a 2-row batch, so the 4-way split also has empty micro-batches."""
    method = {"preset": "strats+mirror+ema", "control_variate": {"optimal": False}}  # well-conditioned: tests/numerics.py
    runs = [train(tiny_run(tmp_path / f"m{m}", cache, method=method, training__max_steps=None,
                           training__epochs=1, training__micro_batch_size=m))
            for m in (8, 3, 2)]
    ref = runs[0][1]
    assert len(ref) == 8 and ref[-1]["batch_size"] == 2
    for _, log in runs[1:]:
        # keyed by position: t, weights and counts identical; float32 losses to the reassociation tolerance
        assert_same_trajectory(log, ref)
    assert [r[0]["accumulation_steps"] for r in runs] == [1, 3, 4]


@pytest.mark.numerics
def test_gradient_checkpointing_does_not_change_the_trajectory(tmp_path, cache):
    a = train(tiny_run(tmp_path / "a", cache))[1]
    b = train(tiny_run(tmp_path / "b", cache, training__gradient_checkpointing=True))[1]
    # the backward recomputes the same forward with the same kernels in the same order: bit for bit
    assert trajectory(a) == trajectory(b)


def test_non_finite_loss_stops_and_marks_the_run_failed(tmp_path, cache, monkeypatch):
    from mdm.objective import MDMObjective

    original = MDMObjective.loss

    def poisoned(self, token_ce, batch, draws):
        out = original(self, token_ce, batch, draws)
        if self._step == 2:
            out.row_losses = out.row_losses * float("nan")
        return out

    original_draw = MDMObjective.draw

    def draw(self, batch, *, seed, step, global_batch_size=None):
        self._step = step
        return original_draw(self, batch, seed=seed, step=step, global_batch_size=global_batch_size)

    monkeypatch.setattr(MDMObjective, "loss", poisoned)
    monkeypatch.setattr(MDMObjective, "draw", draw)
    result, log = train(tiny_run(tmp_path / "r", cache))
    assert result["status"] == "failed" and result["reason"] == "non-finite loss at step 3"
    assert len(log) == 2 and json.loads((tmp_path / "r" / "result.json").read_text())["status"] == "failed"


def test_arm_run_uses_next_token_loss(tmp_path, cache):
    result, log = train(tiny_run(tmp_path / "arm", cache, model={"family": "arm", "size": TINY_SIZE,
                                                                 "tokenizer_examples": 300, "cache_dir": str(cache)}))
    assert result["status"] == "done" and result["metrics"]["heldout_metric"] == "arm_nll_per_token"
    assert all(math.isfinite(e["loss"]) and "t" not in e for e in log)
    with pytest.raises(ConfigError, match="must be 'standard'"):
        from mdm.train.config import check_run

        check_run(RunConfig.model_validate(tiny_run(tmp_path / "x", cache, model={"family": "arm"},
                                                    method="mirror")), "run.yaml")


def test_ppots_with_a_json_density_weights_rows(tmp_path, cache):
    density = tmp_path / "ppots.json"
    density.write_text(json.dumps({"grid": [0.0, 0.5, 1.0], "density": [0.5, 1.0, 1.5]}))
    _, log = train(tiny_run(tmp_path / "p", cache, method={"preset": "ppots", "t_sampler": {"density": str(density)}}))
    w = [x for e in log for x in e["seq_weight"]]
    assert min(w) < 1.0 < max(w)


def test_ppots_auto_is_fitted_once_from_a_pilot_and_kept_for_resume(tmp_path, cache, monkeypatch):
    from mdm.train import ppots

    calls = []
    real = ppots.fit_density
    monkeypatch.setattr(ppots, "fit_density", lambda **kw: calls.append(kw) or real(**kw))
    cfg = tiny_run(tmp_path / "p", cache, method="ppots+mirror",
                   ppots_pilot={"a": 4, "b": 10, "c": 2, "restarts": 1})
    result, log = train(cfg)
    artifact = json.loads((tmp_path / "p" / "ppots.json").read_text())
    assert result["status"] == "done" and len(calls) == 1 and calls[0]["pilot"].a == 4
    assert len(artifact["grid"]) == len(artifact["density"]) and artifact["pilot"]["a"] == 4
    assert any(w != 1.0 for e in log for w in e["seq_weight"])
    (tmp_path / "p" / "result.json").unlink()  # a rerun of the directory reuses the saved density
    shutil.rmtree(tmp_path / "p" / "model")
    Trainer(RunConfig.model_validate(cfg)).train()
    assert len(calls) == 1


def test_runs_from_the_same_start_share_one_pilot_and_others_do_not(tmp_path, cache, monkeypatch):
    """Another seed of the same method and another P-POTS method reuse the cached pilot (identical density,
    no forward pass); a different pilot seed or different starting weights fit their own."""
    from mdm.variance import profile

    pilots = []
    real = profile.Profiler.fit_ppots
    monkeypatch.setattr(profile.Profiler, "fit_ppots", lambda self, **kw: pilots.append(1) or real(self, **kw))
    pilot = {"a": 4, "b": 10, "c": 2, "restarts": 1, "seed": 11}  # a seed no other test's pilot uses

    def run(name, **kw):
        cfg = tiny_run(tmp_path / name, cache, **{"method": "ppots", "ppots_pilot": pilot, **kw})
        train(cfg)
        return json.loads((tmp_path / name / "ppots.json").read_text())

    first = run("a")
    second = run("b", method="ppots+mirror", training__seed=7)
    assert len(pilots) == 1 and first["pilot_cache"]["reused"] is False and second["pilot_cache"]["reused"] is True
    assert second["density"] == first["density"] and second["pilot_cache"]["key"] == first["pilot_cache"]["key"]
    other = run("c", ppots_pilot={**pilot, "seed": 12})
    assert len(pilots) == 2 and other["pilot_cache"]["key"] != first["pilot_cache"]["key"]
    fresh = run("d", model__init_seed=5)
    assert len(pilots) == 3 and fresh["density"] != first["density"]


@pytest.mark.numerics
def test_crash_and_resume_restores_adaptive_ppots_and_ema_state(tmp_path, cache, monkeypatch):
    """A run that dies after its step-4 checkpoint resumes to the uninterrupted trajectory, including the
    state of a stateful t-sampler (adaptive P-POTS: statistics and refitted density) and of the EMA baseline."""
    method = {"preset": "ppots+ema", "t_sampler": {"name": "ppots_adaptive", "warmup": 2, "refit_every": 2,
                                                   "bins": 10, "min_count": 1, "restarts": 1}}

    def cfg(out):
        return tiny_run(out, cache, method=method, training__global_batch_size=32, training__micro_batch_size=16,
                        training__max_steps=8, training__checkpoint_every=4,
                        data={"task": "arith", "n_train": 128, "max_length": 128})

    whole = Trainer(RunConfig.model_validate(cfg(tmp_path / "whole")))
    whole.train()
    assert whole.objective.method.t_sampler.refits >= 1  # observe + end_step drove real refits
    original = Trainer.train_step

    def dies_at_step_6(self, step):
        if step == 5:
            raise KeyboardInterrupt
        return original(self, step)

    monkeypatch.setattr(Trainer, "train_step", dies_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        Trainer(RunConfig.model_validate(cfg(tmp_path / "cut"))).train()
    monkeypatch.setattr(Trainer, "train_step", original)
    result = Trainer(RunConfig.model_validate(cfg(tmp_path / "cut"))).train()
    assert result["resumed_from"] == [4]
    assert trajectory(read_log(tmp_path / "cut")) == trajectory(read_log(tmp_path / "whole"))


def test_lr_schedules():
    def lrs(schedule, warmup, total=10):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = lr_scheduler(opt, schedule, warmup, total)
        out = []
        for _ in range(total):
            out.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
        return out + [sched.get_last_lr()[0]]

    linear, cosine, constant = lrs("linear", 0), lrs("cosine", 2), lrs("constant", 2)
    assert linear[0] == 1.0 and linear[9] == pytest.approx(0.1) and linear[10] == 0.0
    assert cosine[:3] == [0.0, 0.5, 1.0] and cosine[6] == pytest.approx(0.5) and cosine[10] == pytest.approx(0.0)
    assert constant[:3] == [0.0, 0.5, 1.0] and constant[3:] == [1.0] * 8


def test_tiny_base_is_built_once_and_reused(tmp_path, cache):
    from mdm.train.model import base_dir

    model = {"size": TINY_SIZE, "tokenizer_examples": 300, "cache_dir": str(tmp_path / "c"), "base": "auto",
             "pretrain": {"n_examples": 64, "max_steps": 3, "global_batch_size": 16, "micro_batch_size": 16}}
    a = tiny_run(tmp_path / "a", cache, model=model)
    b = tiny_run(tmp_path / "b", cache, model=model, training__seed=5, method="mirror")
    train(a)
    base = base_dir(RunConfig.model_validate(a))
    stamp = (base / "config.json").stat().st_mtime_ns
    assert (base / "pretrain_log.jsonl").is_file() and len(read_log_file(base / "pretrain_log.jsonl")) == 3
    result, _ = train(b)
    assert result["status"] == "done" and (base / "config.json").stat().st_mtime_ns == stamp
    assert base_dir(RunConfig.model_validate(b)) == base  # method and seed do not change the base
    other = tiny_run(tmp_path / "c", cache, model={**model, "pretrain": {**model["pretrain"], "max_steps": 4}})
    assert base_dir(RunConfig.model_validate(other)) != base


def read_log_file(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_config_errors_are_one_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: {task: arith}\ntraining: {lrr: 1}\noutput_dir: x\n")
    with pytest.raises(ConfigError) as info:
        load_run_config(path)
    assert str(info.value).startswith(f"{path}: training.lrr: unknown key; allowed: epochs, max_steps")
    path.write_text("data: {task: arith}\nmethod: mirorr\noutput_dir: x\n")
    with pytest.raises(ConfigError, match=r"run.yaml: method.preset: unknown method 'mirorr'"):
        load_run_config(path)
    path.write_text("data: {task: arith}\noutput_dir: x\n")
    cfg = load_run_config(path, ["training.lr=2e-4", "method={preset: mirror}"])
    assert cfg.training.lr == 2e-4 and cfg.method == {"preset": "mirror"}


def test_a_run_dir_with_other_config_is_refused_finished_or_not(tmp_path, cache):
    cfg = tiny_run(tmp_path / "r", cache, training__max_steps=2)
    train(cfg)
    other = RunConfig.model_validate(tiny_run(tmp_path / "r", cache, training__max_steps=2, training__lr=5e-4))
    with pytest.raises(ConfigError, match="another configuration .*training.lr: 0.001 then, 0.0005 now"):
        Trainer(other).train()  # finished: not reported as this run
    (tmp_path / "r" / "result.json").unlink()
    with pytest.raises(ConfigError, match="another configuration .*training.lr.*--rerun-stale"):
        Trainer(other).train()


def test_checkpoints_on_by_default_do_not_change_the_trajectory(tmp_path, cache):
    """checkpoint_every: auto (4 per run: here after steps 1, 2, 3, each replacing the last) against none."""
    method = {"preset": "ppots_adaptive+mirror+ema", "t_sampler": {"density": "flat"}}  # stateful parts
    a = train(tiny_run(tmp_path / "a", cache, method=method))
    b = train(tiny_run(tmp_path / "b", cache, method=method, training__checkpoint_every=None))
    assert RunConfig.model_validate(tiny_run(tmp_path / "a", cache)).training.checkpoint_every == "auto"
    assert trajectory(a[1]) == trajectory(b[1]) and a[0]["metrics"] == b[0]["metrics"]


def test_log_tokens_and_passes_add_up(tmp_path, cache):
    result, log = train(tiny_run(tmp_path / "r", cache, method="multisample2"))
    assert result["tokens_seen"] == sum(e["tokens"] for e in log)
    assert result["passes"] == sum(e["passes"] for e in log) <= 2 * 8 * 4
    assert result["token_passes"] == sum(e["token_passes"] for e in log) <= 2 * result["tokens_seen"]
    assert torch.tensor([e["lr"] for e in log]).diff().le(0).all()  # linear decay


def test_eos_pad_trains_eos_up_to_the_canvas_for_mdm_only(tmp_path):
    """LLaDA SFT: responses padded with EOS tokens that carry loss (MDM runs); ARM runs and overlong pads."""
    from mdm.data import build_tokenizer, make_task
    from mdm.train.config import DataConfig
    from mdm.train.data import build_data

    tok = build_tokenizer([e["prompt"] + e["response"] for e in make_task("arith", n=200)], 512, cache_dir=tmp_path)
    cfg = DataConfig(task="arith", n_train=40, max_length=160, eos_pad=48)
    padded, plain = build_data(cfg, tok), build_data(cfg, tok, eos_pad=False)
    for p, q in zip(padded.train, plain.train):
        response = p["input_ids"][p["prompt_length"]:]
        assert len(response) == max(48, len(q["input_ids"]) - q["prompt_length"])
        assert p["input_ids"][:len(q["input_ids"])] == q["input_ids"]
        assert set(p["input_ids"][len(q["input_ids"]):]) <= {tok.eos_token_id}
        assert len(p["delimiter_mask"]) == len(p["input_ids"]) == len(p["syntax_mask"])
    assert any(len(p["input_ids"]) > len(q["input_ids"]) for p, q in zip(padded.train, plain.train))
    with pytest.raises(ValueError, match="raise max_length"):
        build_data(DataConfig(task="arith", n_train=40, max_length=80, eos_pad=60), tok)


def test_digit_space_keeps_the_space_on_the_first_digit_and_attention_scale_reaches_the_model(tmp_path):
    from mdm.data import build_tokenizer, make_task
    from mdm.models import TinySize, build_tiny_model

    texts = [e["prompt"] + e["response"] for e in make_task("arith", n=200)]
    plain, spaced = (build_tokenizer(texts, 512, cache_dir=tmp_path, digit_space=d) for d in (False, True))
    assert plain.tokenize(" has 16 apples")[1:3] == ["Ġ", "1"]  # a lone space token before the number
    assert spaced.tokenize(" has 16 apples")[1:3] == ["Ġ1", "6"]
    assert spaced.decode(spaced(" has 16 apples")["input_ids"]) == " has 16 apples"
    model = build_tiny_model(spaced, size=TinySize(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                   num_key_value_heads=1, head_dim=16, intermediate_size=64,
                                                   query_pre_attn_scalar=16))
    assert model.config.query_pre_attn_scalar == 16


def test_rope_theta_reaches_the_rotary_embedding():
    from mdm.models import TinySize, build_tiny_model
    from mdm.train.config import TinySizeConfig

    tok = _tokenizer_for_rope()
    size = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                intermediate_size=64)
    assert TinySizeConfig().rope_theta == TinySize().rope_theta == 1_000_000.0  # the default is unchanged
    slow, fast = (build_tiny_model(tok, size=TinySize(**size, rope_theta=t)) for t in (1_000_000.0, 10_000.0))
    assert fast.config.rope_parameters["full_attention"]["rope_theta"] == 10_000.0
    inv = {m: next(b for n, b in m.named_buffers() if n.endswith("inv_freq")) for m in (slow, fast)}
    assert torch.allclose(inv[fast], 1.0 / 10_000.0 ** (torch.arange(0, 16, 2).float() / 16))
    assert inv[fast][-1] > 10 * inv[slow][-1]
    untied = build_tiny_model(tok, size=TinySize(**size, tie_word_embeddings=False))
    assert slow.lm_head.weight is slow.model.embed_tokens.weight
    assert untied.lm_head.weight.data_ptr() != untied.model.embed_tokens.weight.data_ptr()


def test_an_arm_checkpoint_loads_as_a_bidirectional_mdm(tmp_path):
    from mdm.adapters import load_model
    from mdm.models import TinySize, build_tiny_model
    from mdm.train.config import PretrainConfig

    assert PretrainConfig().init_from_arm is False
    tok = _tokenizer_for_rope()
    arm = build_tiny_model(tok, causal=True, size=TinySize(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                           num_key_value_heads=1, head_dim=16, intermediate_size=64))
    arm.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    x = torch.randint(5, 200, (1, 12))
    y = x.clone()
    y[0, -1] = 7
    for causal in (True, False):
        model, _ = load_model(tmp_path, causal=causal, dtype=torch.float32)
        with torch.no_grad():
            moved = (model(input_ids=x).logits[0, 0] - model(input_ids=y).logits[0, 0]).abs().max().item()
        assert model.config.use_bidirectional_attention is (not causal)
        assert (moved > 1e-6) is (not causal)  # only the MDM's first position sees the last token


def _tokenizer_for_rope():
    import tempfile

    from mdm.data import build_tokenizer, make_task

    texts = [e["prompt"] + e["response"] for e in make_task("arith", n=50)]
    return build_tokenizer(texts, 256, cache_dir=tempfile.mkdtemp())


@pytest.mark.parametrize("family", ["mdm", "arm"])
def test_the_heldout_loss_shards_over_ranks_with_equal_forwards(tmp_path, family):
    """Each of 2 ranks takes every other batch (a short rank repeats one with weight 0, so both run the same number
    of forwards, as FSDP needs); the summed shards are the 1-process loss (masks are keyed by example index)."""
    import contextlib

    from mdm.adapters import checked
    from mdm.data import build_tokenizer, make_task, tokenize_examples
    from mdm.eval.likelihood import heldout_nll
    from mdm.models import TinySize, build_tiny_model
    from tests.numerics import approx

    examples = make_task("arith", n=40)
    tok = build_tokenizer([e["prompt"] + e["response"] for e in examples], 512, cache_dir=tmp_path)
    items, _ = tokenize_examples(tok, examples[:5], "arith", 256)
    model = build_tiny_model(tok, causal=family == "arm", size=TinySize(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
        intermediate_size=64))
    checked(model, causal=family == "arm")  # the one probe forward, before counting
    forwards = []
    model.register_forward_hook(lambda *_: forwards.append(1))

    class Rank:  # what heldout_nll uses of an accelerate.Accelerator; reduce returns this rank's sums
        num_processes, device = 2, "cpu"

        def __init__(self, index):
            self.process_index, self.sums = index, None

        def autocast(self):
            return contextlib.nullcontext()

        def reduce(self, tensor, reduction):
            self.sums = tensor
            return tensor

    kw = dict(family=family, mask_token_id=tok.mask_token_id, t_grid=2, batch_size=2, seed=0)
    one = heldout_nll(model, tok, items, "arith", 256, **kw)["nll_per_token_macro"]
    n_one, shards = len(forwards), []
    for index in (0, 1):
        forwards.clear()
        rank = Rank(index)
        heldout_nll(model, tok, items, "arith", 256, accelerator=rank, **kw)
        shards.append((rank.sums, len(forwards)))
    (s0, f0), (s1, f1) = shards
    assert n_one == 3 * (2 if family == "mdm" else 1)  # 3 batches of 2, 2 grid points each (MDM)
    assert f0 == f1 == 2 * n_one // 3  # the same number of forwards on both ranks
    grid = 2 if family == "mdm" else 1  # sums run over (sequence, grid point)
    assert float(s0[1]) == 3 * grid and float(s1[1]) == 2 * grid  # [0,1],[4] on rank 0; [2,3] + a repeat on 1
    assert float(s0[0] + s1[0]) / float(s0[1] + s1[1]) == approx(one)


def test_model_only_snapshots_are_kept_without_changing_the_trajectory(tmp_path):
    """training.save_model_every: weights + tokenizer (no optimizer) under models/step_N, the latest keep_models kept;
    the log is the run's without snapshots, bit for bit, and a snapshot loads as a model folder."""
    from mdm.adapters import load_model

    plain, plain_log = train(tiny_run(tmp_path / "plain", tmp_path / "cache"))
    snap, snap_log = train(tiny_run(tmp_path / "snap", tmp_path / "cache", training__save_model_every=1,
                                    training__keep_models=2))
    assert trajectory(snap_log) == trajectory(plain_log)
    models = tmp_path / "snap" / "models"
    assert sorted(p.name for p in models.iterdir()) == ["step_00000002", "step_00000003"]  # step 4 is <run>/model
    assert not (models / "step_00000003" / "optimizer.bin").exists()
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (models / "step_00000003").iterdir()}
    model, _ = load_model(models / "step_00000003", causal=False, dtype=torch.float32)
    final, _ = load_model(tmp_path / "snap" / "model", causal=False, dtype=torch.float32)
    w3, w4 = (dict(m.named_parameters())["model.embed_tokens.weight"] for m in (model, final))
    assert not torch.equal(w3, w4)
