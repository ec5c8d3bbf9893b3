"""LLaDA's real remote code end to end: tiny hub-shaped folders of both fixture variants (`tests/llada_fixture.py`)
through the loader (transformers 5.x shim), the attention probe, the objective, the sampler and the CLI."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import yaml

from mdm.adapters import Adapter, adapter_class, checked, load_model, probe
from mdm.cli import main
from mdm.data import Collator, make_task, mask_token_id_of
from mdm.data.collate import tokenize_examples
from mdm.errors import ConfigError
from mdm.objective import MDMObjective
from mdm.objective.objective import model_token_ce
from mdm.sampler import DecodeConfig, _Denoiser, chat_prompt_ids, generate
from tests.eval.test_lm_eval_plugin import HAVE_LOCAL_GSM8K, lm_eval_cli
from tests.llada_fixture import FILES, REMOTE, VARIANTS, llada_folder, requires_remote_code
from tests.numerics import REASSOCIATION_RTOL

pytestmark = [requires_remote_code, pytest.mark.usefixtures("one_thread")]
PADDING = {"llada": "bias", "llada_hub": "eos"}  # MMaDA's copy honours attention_bias; the hub's code no mask


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("llada")
    return {v: llada_folder(root / v, v) for v in VARIANTS}


def load(folder):
    return load_model(folder, causal=False, dtype=torch.float32)


@pytest.mark.parametrize("variant", VARIANTS)
def test_unmodified_remote_code_loads_on_transformers_5(folders, variant):
    from safetensors.torch import load_file

    folder = folders[variant]
    for f in FILES:  # the code files are the fixtures byte for byte: the shim lives in the loader
        assert (folder / f).read_bytes() == (REMOTE / variant / f).read_bytes()
    model, tok = load(folder)
    saved = load_file(folder / "model.safetensors")
    assert set(saved) == set(model.state_dict())
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert model.config.use_cache is False and model.dtype == torch.float32
    assert tok.mask_token is None and tok.pad_token_id == tok.eos_token_id
    assert mask_token_id_of(tok, model.config) == tok.convert_tokens_to_ids("<|mdm_mask|>")
    out = model(input_ids=torch.tensor([[5, 6, 7]]))  # no use_cache=: the config's default is read
    assert out.logits.shape == (1, 3, model.config.vocab_size)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.numerics
def test_probe_finds_the_padding_each_code_honours(folders, variant):
    model, _ = load(folders[variant])
    assert checked(model).padding == PADDING[variant]
    # a plain 2-D mask: MMaDA's copy turns causal, the hub's code attends to the pads; both are caught
    verdict = probe(model, Adapter("mask"), causal=False)
    assert verdict == {"llada": "position 0 does not see the last token (causal)",
                       "llada_hub": "padding tokens change the logits of real tokens (the mask is ignored)"}[variant]


def test_default_mask_token_id_is_refused(tmp_path):
    folder = llada_folder(tmp_path / "nomask", "llada", mask_token_id=False)
    model, tok = load(folder)
    assert model.config.mask_token_id == 50256  # LLaDAConfig's default, an ordinary token of the real vocabulary
    with pytest.raises(ConfigError, match="50256 .LLaDAConfig's default: config.json has no mask_token_id"):
        mask_token_id_of(tok, model.config)


def test_dream_is_adapted_not_refused():
    """Dream was refused (shifted logits); its adapter now declares the shift (tests/adapters/test_families.py)."""
    assert adapter_class(SimpleNamespace(model_type="Dream")).shift == 1


def padded_batch(tok, n=4):
    items, _ = tokenize_examples(tok, make_task("arith", "train", n=n, seed=3), "arith", max_length=128)
    assert len({len(it["input_ids"]) for it in items}) > 1  # really padded
    return items


@torch.no_grad()
def objective_and_hand_written_sft_loss(model, batch, mask_id: int) -> tuple[float, float]:
    """The Standard objective on `batch` and LLaDA's SFT loss written by hand, each row alone over its real tokens,
    with the same draws: CE at masked answer tokens / p, summed / answer length, mean over rows."""
    objective = MDMObjective("standard", mask_id)
    draws = objective.draw(batch, seed=1, step=0)
    ours = float(objective.loss(model_token_ce(model), batch, draws).loss)
    p = (1 - objective.eps) * draws.t + objective.eps
    rows = []
    for r in range(batch.size):
        n = int(batch.attention_mask[r].sum())
        ids, masked = batch.input_ids[r, :n], draws.masked[0, r, :n]
        logits = model(input_ids=torch.where(masked, mask_id, ids)[None]).logits[0]
        ce = F.cross_entropy(logits[masked], ids[masked], reduction="none") / p[r]
        rows.append(ce.sum() / (n - int(batch.prompt_lengths[r])))
    return ours, float(torch.stack(rows).mean())


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.numerics
def test_objective_equals_hand_written_llada_sft_loss(folders, variant):
    """LLaDA's SFT loss (its GUIDELINES: CE at masked answer tokens / p, summed / answer length, mean over rows).
    bias: each row alone, unpadded; eos: the batch padded with EOS that carries loss, no mask (LLaDA's own recipe)."""
    model, tok = load(folders[variant])
    adapter = checked(model)
    mask_id = mask_token_id_of(tok, model.config)
    batch = Collator(tok, "arith", 128, pad_carries_loss=not adapter.can_pad)(padded_batch(tok))
    ours, theirs = objective_and_hand_written_sft_loss(model, batch, mask_id)  # eos: rows are the padded width
    assert ours == pytest.approx(theirs, rel=REASSOCIATION_RTOL)  # one row at a time vs batched: reassociation
    if variant == "llada_hub":
        assert bool(batch.attention_mask.all())  # the pads are EOS tokens of the response


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.numerics
def test_batched_decoding_equals_one_at_a_time_and_stays_in_the_vocabulary(folders, variant):
    model, tok = load(folders[variant])
    prompts = [chat_prompt_ids(tok, ex["prompt"]) for ex in make_task("arith", "test", n=6, seed=0)]
    prompts += [prompts[0][:-2] + prompts[1][-2:], prompts[1]]  # equal lengths too: the hub's code batches those
    assert len({len(p) for p in prompts}) > 1
    config = DecodeConfig(gen_length=8, steps=8, block_length=4)
    kw = dict(mask_token_id=mask_token_id_of(tok, model.config), eos_token_id=tok.eos_token_id,
              pad_token_id=tok.pad_token_id, vocab_size=len(tok))
    batched = generate(model, prompts, config, batch_size=8, **kw)
    alone = generate(model, prompts, config, batch_size=1, **kw)
    assert batched.tokens == alone.tokens  # greedy ids: bit for bit (tests/README.md)
    assert batched.forward_passes < alone.forward_passes  # rows really shared a forward
    assert max(max(t) for t in batched.tokens) < len(tok) < model.config.vocab_size
    denoise = _Denoiser(model, len(tok))
    x = torch.tensor([prompts[0]])
    assert denoise(x, None, None, 0, x.shape[1]).shape[-1] == len(tok)  # padded embedding rows are never proposed


# ---------------------------------------------------------------- through the CLI


def run_yaml(tmp_path, folder, **over) -> str:
    cfg = {"model": {"source": str(folder)},
           "data": {"task": "arith", "n_train": 24, "max_length": 128},
           "method": "standard",
           "training": {"max_steps": 2, "global_batch_size": 4, "micro_batch_size": 2, "lr": 1e-3, "threads": 1,
                        "progress": False, "bf16": False},
           "ppots_pilot": {"a": 2, "b": 10, "c": 2, "restarts": 1},
           "eval": {"t_grid": 2},
           "output_dir": str(tmp_path / "run")}
    for key, value in over.items():
        section, _, field = key.partition("__")
        cfg[section] = {**cfg[section], field: value} if field else value
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("method", ["standard", "mirror", "ppots", "ppots+mirror"])  # ppots: density auto
def test_mdm_train_on_llada(folders, tmp_path, capsys, variant, method):
    assert main(["train", run_yaml(tmp_path, folders[variant], method=method)]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "done" and result["steps"] == 2
    assert result["adapter"] == f"llada(padding={PADDING[variant]})"
    assert result["metrics"]["heldout_loss"] > 0
    saved = tmp_path / "run" / "model"
    assert all((saved / f).is_file() for f in FILES)  # the saved model loads again with its code
    reloaded, _ = load(saved)
    assert checked(reloaded).padding == PADDING[variant]


@pytest.mark.numerics
def test_gradient_checkpointing_runs_llada_blocks_checkpointed_with_identical_steps(folders, tmp_path, monkeypatch):
    import torch.utils.checkpoint as ckpt

    calls = []
    real = ckpt.checkpoint

    def counting(fn, *args, **kwargs):
        calls.append(type(fn).__name__)
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(ckpt, "checkpoint", counting)  # LLaDA binds it when the model is built
    logs = {}
    for on in (False, True):
        out = tmp_path / str(on)
        out.mkdir()
        assert main(["train", run_yaml(out, folders["llada"], training__gradient_checkpointing=on)]) == 0
        logs[on] = [json.loads(line) for line in (out / "run" / "train_log.jsonl").read_text().splitlines()]
    assert calls and set(calls) == {"LLaDALlamaBlock"}  # whole blocks, recomputed in the backward
    keys = ("loss", "loss_raw", "grad_norm")
    assert [{k: e[k] for k in keys} for e in logs[True]] == [{k: e[k] for k in keys} for e in logs[False]]


def test_mdm_eval_on_a_trained_llada_run(folders, tmp_path, capsys):
    assert main(["train", run_yaml(tmp_path, folders["llada_hub"])]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--task", "arith", "--n", "3", "--gen-length", "8", "--steps", "8",
                 "--block-length", "8", "--t-grid", "2", "--json"]) == 0
    task = json.loads(capsys.readouterr().out)["tasks"]["arith"]
    assert task["n"] == 3 and task["model_kind"] == "mdm"
    assert task["likelihood"]["nll_per_token"] > 0 and task["likelihood"]["n_sequences"] == 3


def test_causal_backbone_is_refused_before_compute(tmp_path, capsys):
    """An ARM checkpoint (a transformers Llama) given as an MDM: the probe sees causal attention and refuses it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.llada_fixture import llada_tokenizer

    tok = llada_tokenizer()
    tok.add_special_tokens({"mask_token": "<|mdm_mask|>"})
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1,
                         mask_token_id=tok.mask_token_id, pad_token_id=tok.pad_token_id)
    folder = tmp_path / "llama"
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    capsys.readouterr()
    assert main(["train", run_yaml(tmp_path, folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mdm train: error: model: LlamaForCausalLM (transformers) does not have bidirectional attention "
                   "under the project's padding (mask: position 0 does not see the last token (causal)); "
                   "refusing to train or decode it"]
    assert not (tmp_path / "run" / "train_log.jsonl").exists()  # refused before any step


def test_checkpointing_a_model_cannot_do_is_an_error():
    with pytest.raises(ConfigError, match="training.gradient_checkpointing: Linear cannot checkpoint activations"):
        Adapter().enable_checkpointing(torch.nn.Linear(2, 2))


ARMS = {"qwen2": ("Qwen2Config", "Qwen2ForCausalLM"), "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
        "llama": ("LlamaConfig", "LlamaForCausalLM")}


@pytest.mark.parametrize("arm", sorted(ARMS))
def test_transformers_arm_trains_as_the_arm_family(tmp_path, arm):
    import transformers

    from tests.llada_fixture import llada_tokenizer

    tok = llada_tokenizer()
    config_cls, model_cls = (getattr(transformers, name) for name in ARMS[arm])
    config = config_cls(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, num_key_value_heads=1, head_dim=16, pad_token_id=tok.pad_token_id)
    folder = tmp_path / arm
    model_cls(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    assert main(["train", run_yaml(tmp_path, folder, model__family="arm")]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "done" and result["adapter"] == "transformers(padding=mask)"
    assert result["metrics"]["heldout_metric"] == "arm_nll_per_token" and result["metrics"]["heldout_loss"] > 0


def test_mdm_bench_set_points_a_preset_at_a_local_llada(folders, tmp_path, capsys):
    spec = {"name": "t", "seeds": [1], "methods": ["standard", "ppots+mirror"],
            "presets": {"tiny": {"tasks": {"arith": {"n_train": 24, "max_length": 128}},
                                 "training": {"max_steps": 2, "global_batch_size": 4, "micro_batch_size": 2,
                                              "threads": 1, "progress": False},
                                 "ppots_pilot": {"a": 2, "b": 10, "c": 2, "restarts": 1},
                                 "eval": {"t_grid": 2}}}}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["bench", str(path), "--set", f"model.source={folders['llada']}", "--set", "training.lr=1e-3",
                 "--only", "method=ppots+mirror", "--results", str(tmp_path / "runs")]) == 0
    records = list((tmp_path / "runs").rglob("record.json"))
    assert len(records) == 1 and "ppots+mirror" in str(records[0])
    record = json.loads(records[0].read_text())
    assert record["status"] == "done", record
    assert record["config"]["model"]["source"] == str(folders["llada"]) and record["config"]["training"]["lr"] == 1e-3


@pytest.fixture
def fresh_accelerator():
    """accelerate keeps one mixed-precision setting per process: start from none, leave none behind."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_bf16_autocast_training(folders, tmp_path, variant, fresh_accelerator):
    assert main(["train", run_yaml(tmp_path, folders[variant], method="mirror", training__bf16=True)]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "done" and result["mixed_precision"] == "bf16"


def test_variance_gradient_default_params_find_the_last_llada_block(folders):
    from mdm.variance.gradient import select_linears

    model, _ = load(folders["llada"])
    names = [n for n, _ in select_linears(model, "last")]
    last = model.config.n_layers - 1
    assert names and all(f".blocks.{last}." in n for n in names)
    assert {n.rsplit(".", 1)[-1] for n in names} >= {"attn_out", "ff_out", "ff_proj", "up_proj"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_mdm_variance_and_fit_ppots_on_llada(folders, tmp_path, variant):
    spec = {"name": "llada", "seed": 0, "data": {"task": "arith", "n_train": 40, "max_length": 96},
            "model": {"source": str(folders[variant])}, "dtype": "float32",
            "pilot": {"a": 3, "b": 10, "c": 2, "bootstrap": 20, "token_budget": 4096},
            "fit": {"restarts": 1}, "gradient": {"projection": 16, "a": 2, "b": 3, "c": 2}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    for mode in ([], ["--gradient"]):  # --gradient with the default params: the last of LLaDA's blocks.N
        out = tmp_path / f"out{len(mode)}"
        assert main(["variance", "--config", str(path), "--methods", "standard,mirror", *mode, "--out", str(out),
                     "--no-progress"]) == 0
        result = json.loads((out / "variance.json").read_text())
        assert result["methods"]["standard"]["A"] > 0 and result["methods"]["mirror"]["total"] > 0
    assert main(["fit-ppots", "--config", str(path), "--out", str(tmp_path / "fit"), "--no-progress"]) == 0


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_LOCAL_GSM8K, reason="needs ../shared/data/gsm8k (offline)")
def test_lm_eval_plugin_on_three_local_gsm8k_items(folders, tmp_path):
    out = tmp_path / "lm_eval_out"
    proc = lm_eval_cli(["--model", "mdm", "--model_args",
                        f"pretrained={folders['llada_hub']},gen_length=16,steps=8,block_length=8",
                        "--tasks", "gsm8k_mdm", "--limit", "3", "--num_fewshot", "0", "--device", "cpu",
                        "--output_path", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results_file,) = out.rglob("results_*.json")
    results = json.loads(results_file.read_text())
    assert results["n-samples"]["gsm8k_mdm"]["effective"] == 3
    assert "exact_match,strict-match" in results["results"]["gsm8k_mdm"]


def test_sampler_refuses_a_causal_model_before_decoding():
    from mdm.models import build_tiny_model
    from tests.helpers import FakeTokenizer

    arm = build_tiny_model(FakeTokenizer(), causal=True)
    with pytest.raises(ConfigError, match=r"does not have bidirectional attention .*\(mask: position 0 does not see"):
        generate(arm, [[2, 5, 6]], DecodeConfig(gen_length=4, steps=4, block_length=4), mask_token_id=1)


def test_lora_on_llada_adapts_the_blocks_default_projections_not_the_output_layer(folders, tmp_path):
    from safetensors import safe_open

    assert main(["train", run_yaml(tmp_path, folders["llada"], training__peft={"lora": {"r": 2}})]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "done" and result["peft"] == "lora"
    with safe_open(str(tmp_path / "run" / "adapter" / "adapter_model.safetensors"), "pt") as f:
        adapted = {k.split(".lora_")[0].split("transformer.")[1] for k in f.keys()}
    assert adapted == {f"blocks.{i}.{n}" for i in range(2) for n in
                       ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")}
    model, _ = load(tmp_path / "run" / "model")  # the merged weights: LLaDA's own code, no peft
    assert not any("lora" in n for n, _ in model.named_parameters())
