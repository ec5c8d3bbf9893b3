"""Real small MDM families (`mdm.adapters`: A2D, masked-LM encoders, the logit-shifted Dream) on tiny random-weight
hub-shaped folders (`tests/family_fixture.py`): loading, the probe, the shift against hand-written references,
batched == one-at-a-time decoding, and the real CLI (train, eval, variance, generate, bench, the lm-eval plugin)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import yaml

from mdm.adapters import checked, load_model
from mdm.cli import main
from mdm.data import Collator, make_task, mask_token_id_of
from mdm.data.collate import tokenize_examples
from mdm.objective import MDMObjective
from mdm.objective.objective import model_token_ce
from mdm.sampler import DecodeConfig, _Denoiser, chat_prompt_ids, generate
from tests.adapters.test_llada import run_yaml
from tests.eval.test_lm_eval_plugin import HAVE_LOCAL_GSM8K, lm_eval_cli
from tests.family_fixture import FAMILIES, MORE, family_folder
from tests.numerics import REASSOCIATION_RTOL

pytestmark = pytest.mark.usefixtures("one_thread")
ADAPTER = {"a2d-qwen3": "a2d(padding=mask4d)", "a2d-qwen2": "a2d(padding=mask4d)", "a2d-llama": "a2d(padding=mask4d)",
           "modernbert": "modernbert(padding=mask)", "dream": "dream(padding=mask4d)"}
MODEL_CLASS = {"a2d-qwen3": "Qwen3ForCausalLM", "a2d-qwen2": "Qwen2ForCausalLM", "a2d-llama": "LlamaForCausalLM",
               "modernbert": "ModernBertForMaskedLM", "dream": "Qwen2ForCausalLM"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {f: family_folder(root / f, f) for f in FAMILIES + MORE}


def load(folder):
    return load_model(folder, causal=False, dtype=torch.float32)


def raw_logits(model, ids, attention_mask=None):
    """The model's own output, bidirectional through a hand-built 4-D mask (no adapter): for the references."""
    keys = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    n = ids.shape[1]
    return model(input_ids=ids, attention_mask=keys[:, None, None, :].expand(-1, 1, n, n), use_cache=False).logits


@pytest.mark.parametrize("family", FAMILIES + MORE)
def test_family_loads_natively_with_its_head_mask_token_and_probe(folders, family):
    from safetensors.torch import load_file

    model, tok = load(folders[family])
    assert type(model).__name__ == MODEL_CLASS[family]
    assert repr(checked(model)) == ADAPTER[family]
    saved = load_file(folders[family] / "model.safetensors")
    state = model.state_dict()
    assert set(saved) <= set(state) and all(torch.equal(saved[k], state[k]) for k in saved)  # the LM head included
    assert mask_token_id_of(tok, model.config) == tok.mask_token_id  # its own: <|mask|> or [MASK]
    assert not any(p.name.endswith(".py") for p in folders[family].iterdir())  # Dream's auto_map code is never run
    assert checked(model).shift == (family == "dream")


def test_a2d_qwen_chat_prompts_close_an_empty_think_block_as_dllm_trained_them(folders, tmp_path):
    """dllm's A2D Qwen prompts default to enable_thinking=False; the adapter puts that default in the template, so
    the data, the sampler and a saved run's tokenizer all see it; an explicit enable_thinking=True still wins."""
    from mdm.data.collate import format_chat

    _, tok = load(folders["a2d-qwen3"])
    turn = [{"role": "user", "content": "Hi"}]
    assert tok.apply_chat_template(turn, add_generation_prompt=True, tokenize=False).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert tok.apply_chat_template(turn, add_generation_prompt=True, tokenize=False, enable_thinking=True).endswith(
        "<|im_start|>assistant\n")
    ids, n_prompt = format_chat(tok, "Hi", "4")
    assert tok.decode(ids[n_prompt:]).startswith("<|im_start|>assistant\n<think>\n\n</think>\n\n4")
    tok.save_pretrained(tmp_path / "tok")
    saved = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text()).get("chat_template") or \
        (tmp_path / "tok" / "chat_template.jinja").read_text()
    assert saved == tok.chat_template  # a run's saved tokenizer keeps the default


def test_a2d_without_the_adapter_mask_is_causal_and_with_it_bidirectional(folders):
    """The weights are transformers' causal Qwen3: only the adapter's 4-D mask makes them bidirectional."""
    model, _ = load(folders["a2d-qwen3"])
    x = torch.tensor([[5, 6, 7, 8, 9]])
    y = x.clone()
    y[0, -1] = 10
    with torch.no_grad():
        assert torch.equal(model(input_ids=x).logits[0, 0], model(input_ids=y).logits[0, 0])  # causal by itself
        ad = checked(model)
        assert not torch.allclose(ad.logits(model, x)[0, 0], ad.logits(model, y)[0, 0])


@pytest.mark.parametrize("family", ["a2d-qwen3", "a2d-qwen2", "a2d-llama"])
@pytest.mark.numerics
def test_a2d_logits_equal_dllm_style_padding_only_additive_mask(folders, family):
    """dllm's A2D decoder replaces the causal mask by transformers' `_prepare_4d_attention_mask` of the padding: an
    additive float mask [B, 1, L, L], 0 on real keys and the dtype's minimum on pads (built by hand here); the
    adapter's boolean 4-D mask gives the same logits at every real position, padded or not."""
    model, _ = load(folders[family])
    x = torch.tensor([[5, 6, 7, 8, 9, 3], [11, 12, 13, 14, 0, 0]])
    pad = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        ours = checked(model).logits(model, x, pad)
        additive = (1.0 - pad[:, None, None, :].float()) * torch.finfo(torch.float32).min
        dllm = model(input_ids=x, attention_mask=additive.expand(-1, 1, 6, 6), use_cache=False).logits
    torch.testing.assert_close(ours[pad.bool()], dllm[pad.bool()], rtol=REASSOCIATION_RTOL, atol=REASSOCIATION_RTOL)


def test_shifted_objective_equals_a_hand_written_shifted_mdm_loss_on_a_padded_batch(folders):
    """Dream: token i is predicted by the output at position i - 1. The objective (standard, a right-padded batch)
    equals sum over masked i of CE(raw[i - 1], x_i) / p, over |E|, averaged over rows, written out here."""
    model, tok = load(folders["dream"])
    mask_id = mask_token_id_of(tok, model.config)
    items, _ = tokenize_examples(tok, make_task("arith", "train", n=4, seed=3), "arith", 128)
    batch = Collator(tok, "arith", 128)(items)
    assert not batch.attention_mask.all()  # really padded
    objective = MDMObjective("standard", mask_token_id=mask_id)
    draws = objective.draw(batch, seed=7, step=0)
    out = objective.loss(model_token_ce(model), batch, draws)
    masked = draws.masked[0]
    p = (1 - 1e-3) * draws.t + 1e-3
    noised = torch.where(masked, torch.full_like(batch.input_ids, mask_id), batch.input_ids)
    raw = raw_logits(model, noised, batch.attention_mask)
    rows = []
    for b in range(batch.size):
        total = 0.0
        for i in masked[b].nonzero()[:, 0].tolist():
            assert i >= 1  # the prompt comes first: position 0 is never a target
            total = total + F.cross_entropy(raw[b, i - 1], batch.input_ids[b, i]) / p[b]
        rows.append(total / draws.eligible[b].sum())
    torch.testing.assert_close(out.loss, torch.stack(rows).mean().float(), rtol=1e-5, atol=1e-6)
    unshifted = objective.loss(lambda n, a, t, m: _unshifted_ce(model, n, a, t, m), batch, draws)
    assert abs(float(unshifted.loss.detach()) - float(out.loss.detach())) > 1e-3  # the shift matters: the test can fail


def _unshifted_ce(model, noised, attention_mask, targets, masked):
    logits = raw_logits(model, noised, attention_mask)
    ce = torch.zeros(masked.shape)
    ce[masked] = F.cross_entropy(logits[masked].float(), targets[masked], reduction="none")
    return ce


def test_shifted_decoding_equals_a_hand_written_shifted_decoding_loop(folders):
    """Greedy, low-confidence remasking, one token per step: each step reads the outputs one position earlier."""
    model, tok = load(folders["dream"])
    mask_id = mask_token_id_of(tok, model.config)
    prompt = chat_prompt_ids(tok, "Ava has 3 apples. How many?")
    n = 6
    got = generate(model, [prompt], DecodeConfig(gen_length=n, steps=n, block_length=n, early_stop=False),
                   mask_token_id=mask_id, eos_token_id=None, vocab_size=len(tok)).tokens[0]
    x = torch.tensor([prompt + [mask_id] * n])
    with torch.no_grad():
        for _ in range(n):
            logits = raw_logits(model, x)[0, :, : len(tok)].double()
            cols = [i for i in range(len(prompt), x.shape[1]) if x[0, i] == mask_id]
            probs = [torch.softmax(logits[i - 1], -1) for i in cols]  # the shift: position i - 1 predicts i
            best = max(range(len(cols)), key=lambda j: float(probs[j].max()))
            x[0, cols[best]] = int(probs[best].argmax())
    assert got == x[0, len(prompt):].tolist()
    denoise = _Denoiser(model, len(tok))
    canvas = torch.tensor([prompt + [mask_id] * n])
    assert torch.equal(denoise(canvas, None, None, len(prompt), canvas.shape[1]),
                       raw_logits(model, canvas)[:, len(prompt) - 1 : -1, : len(tok)])


def test_shifted_model_refuses_a_target_at_position_zero(folders):
    model, tok = load(folders["dream"])
    with pytest.raises(ValueError, match="position 0 is masked, but a shifted model"):
        model_token_ce(model)(torch.tensor([[1, 2, 3]]), torch.ones(1, 3), torch.tensor([[1, 2, 3]]),
                              torch.tensor([[True, False, False]]))


@pytest.mark.parametrize("family", FAMILIES + MORE)
def test_batched_decoding_equals_one_at_a_time(folders, family):
    model, tok = load(folders[family])
    prompts = [chat_prompt_ids(tok, q) for q in ("Ava has 3 apples.", "Ben has 12 cards and 4 more. Total?", "Hi")]
    assert len({len(p) for p in prompts}) == 3  # left padding really happens
    config = DecodeConfig(gen_length=8, steps=8, block_length=4)
    kw = dict(mask_token_id=mask_token_id_of(tok, model.config), eos_token_id=tok.eos_token_id,
              pad_token_id=tok.pad_token_id, vocab_size=len(tok))
    batched = generate(model, prompts, config, batch_size=3, **kw)
    alone = generate(model, prompts, config, batch_size=1, **kw)
    assert batched.tokens == alone.tokens
    assert batched.forward_passes < alone.forward_passes


def test_causal_qwen3_offered_as_an_mdm_is_refused(tmp_path, capsys):
    """A plain Qwen3 ARM (model_type qwen3) with a mask token: the probe finds causal attention; one line, no step."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from tests.family_fixture import family_tokenizer

    tok = family_tokenizer("a2d-qwen3")
    config = Qwen3Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, pad_token_id=tok.pad_token_id)
    Qwen3ForCausalLM(config).save_pretrained(tmp_path / "qwen3")
    tok.save_pretrained(tmp_path / "qwen3")
    capsys.readouterr()
    assert main(["train", run_yaml(tmp_path, tmp_path / "qwen3")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mdm train: error: model: Qwen3ForCausalLM (transformers) does not have bidirectional attention "
                   "under the project's padding (mask: position 0 does not see the last token (causal)); "
                   "refusing to train or decode it"]
    assert not (tmp_path / "run" / "train_log.jsonl").exists()


# ---------------------------------------------------------------- through the CLI


def train(tmp_path, folder, method="standard", **over):
    assert main(["train", run_yaml(tmp_path, folder, method=method, **over)]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "done" and result["steps"] == 2, result
    assert result["metrics"]["heldout_loss"] > 0
    return result


@pytest.mark.parametrize("family", FAMILIES)
def test_mdm_train_eval_generate_on_each_family(folders, tmp_path, capsys, family):
    result = train(tmp_path, folders[family])
    assert result["adapter"] == ADAPTER[family]
    reloaded, _ = load(tmp_path / "run" / "model")  # the saved run keeps its family (never a causal Qwen)
    assert repr(checked(reloaded)) == ADAPTER[family]
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--task", "arith", "--n", "2", "--gen-length", "8", "--steps", "4",
                 "--block-length", "4", "--t-grid", "2", "--json"]) == 0
    task = json.loads(capsys.readouterr().out)["tasks"]["arith"]
    assert task["n"] == 2 and task["model_kind"] == "mdm" and task["likelihood"]["nll_per_token"] > 0
    assert main(["generate", str(tmp_path / "run"), "--prompt", "Ava has 2 apples.", "--gen-length", "8",
                 "--steps", "4", "--block-length", "4", "--json"]) == 0
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("method", ["mirror", "ppots+mirror"])
@pytest.mark.parametrize("family", FAMILIES)
def test_mdm_train_two_view_methods(folders, tmp_path, family, method):
    train(tmp_path, folders[family], method=method)


LORA = {"a2d-qwen2": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
        "modernbert": {"Wqkv", "Wo", "Wi"}}


@pytest.mark.parametrize("family", sorted(LORA))
def test_lora_and_gradient_checkpointing(folders, tmp_path, monkeypatch, family):
    """transformers' own checkpointing (its layers call torch.utils.checkpoint) and the adapter's LoRA targets."""
    import transformers.modeling_utils as mu

    calls = []
    real = mu.checkpoint  # what transformers binds when checkpointing is enabled
    monkeypatch.setattr(mu, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    train(tmp_path, folders[family], training__gradient_checkpointing=True, training__peft={"lora": {"r": 2}})
    assert calls  # the layers were recomputed in the backward
    config = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == LORA[family]


@pytest.mark.parametrize("family", ["a2d-qwen3", "modernbert", "dream"])  # one of each kind: A2D, encoder, shifted
def test_mdm_variance_on_each_kind(folders, tmp_path, family):
    spec = {"name": "v", "seed": 0, "data": {"task": "arith", "n_train": 24, "max_length": 192},
            "model": {"source": str(folders[family])}, "dtype": "float32",
            "pilot": {"a": 2, "b": 6, "c": 2, "bootstrap": 10, "token_budget": 2048}, "fit": {"restarts": 1}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["variance", "--config", str(path), "--methods", "standard,mirror", "--out", str(tmp_path / "v"),
                 "--no-progress"]) == 0
    result = json.loads((tmp_path / "v" / "variance.json").read_text())
    assert result["methods"]["standard"]["A"] > 0 and result["methods"]["mirror"]["total"] > 0


@pytest.mark.skipif(not HAVE_LOCAL_GSM8K, reason="needs ../shared/data/gsm8k (offline)")
def test_bench_small_preset_on_a_local_a2d_folder_to_a_finished_record(folders, tmp_path):
    sets = [f"model.source={folders['a2d-qwen3']}", "tasks.gsm8k.n_train=16", "tasks.gsm8k.max_length=384",
            "training.max_steps=2", "training.global_batch_size=4", "training.micro_batch_size=2",
            "training.bf16=false", "training.gradient_checkpointing=false", "training.progress=false",
            "training.threads=1", "ppots_pilot.a=2", "ppots_pilot.b=10", "ppots_pilot.c=2", "ppots_pilot.restarts=1", "eval.t_grid=2",
            "tasks.gsm8k.eval.accuracy.n=2", "tasks.gsm8k.eval.accuracy.gen_length=8",
            "tasks.gsm8k.eval.accuracy.steps=4", "tasks.gsm8k.eval.accuracy.block_length=4"]
    argv = ["bench", "benchmarks/table1.yaml", "--preset", "small", "--only", "method=ppots+mirror,seed=42",
            "--results", str(tmp_path / "runs")]
    assert main([*argv, *(x for s in sets for x in ("--set", s))]) == 0
    (path,) = (tmp_path / "runs").rglob("record.json")
    record = json.loads(path.read_text())
    assert record["status"] == "done", record
    assert record["config"]["model"]["source"] == str(folders["a2d-qwen3"]) and "ppots+mirror" in str(path)


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_LOCAL_GSM8K, reason="needs ../shared/data/gsm8k (offline)")
def test_lm_eval_plugin_on_a_shifted_family(folders, tmp_path):
    out = tmp_path / "lm_eval_out"
    proc = lm_eval_cli(["--model", "mdm", "--model_args", f"pretrained={folders['dream']},gen_length=8,steps=4,"
                        "block_length=4", "--tasks", "gsm8k_mdm", "--limit", "2", "--num_fewshot", "0",
                        "--device", "cpu", "--output_path", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results_file,) = out.rglob("results_*.json")
    assert json.loads(results_file.read_text())["n-samples"]["gsm8k_mdm"]["effective"] == 2
