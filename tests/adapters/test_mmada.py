"""MMaDA's real code (text side): a tiny hub-shaped MMaDA folder (`tests/llada_fixture.py: mmada_folder`, no code
files, model_type mmada) loaded with `model.code_dir` = the fixture copy of MMaDA's `models/` package, through the
loader, the attention probe, the objective and `mdm train`."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest
import torch

from mdm.adapters import Adapter, checked, load_model, probe
from mdm.adapters.mmada import ENV, MMaDA
from mdm.data import Collator, mask_token_id_of
from mdm.errors import ConfigError
from tests.adapters.test_llada import objective_and_hand_written_sft_loss, padded_batch, run_yaml
from tests.llada_fixture import MMADA_CODE, mmada_folder, requires_mmada_code
from tests.numerics import REASSOCIATION_RTOL
from tests.train.test_train_cli import mdm_here

pytestmark = [requires_mmada_code, pytest.mark.usefixtures("one_thread")]
LLM_CODE = {"modeling_mmada.py", "modeling_llada.py", "configuration_llada.py", "sampling.py"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return mmada_folder(tmp_path_factory.mktemp("mmada") / "MMaDA-tiny")


@pytest.fixture(autouse=True)
def no_env_code_dir(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


def load(folder, code_dir=MMADA_CODE):
    return load_model(folder, causal=False, dtype=torch.float32, code_dir=code_dir)


def test_loads_from_the_code_dir_importing_only_the_llm_modules(folder, monkeypatch, capsys):
    from safetensors.torch import load_file

    def magvit_modules():
        return {m for m in sys.modules if m.endswith(("modeling_magvitv2", "common_modules", "modeling_utils"))
                and "_mdm_mmada_" in m}

    before = magvit_modules()  # tests/t2i/test_magvit.py may have imported MAGVIT-v2 (on purpose) in this process
    model, tok = load(folder)
    assert type(model).__name__ == "MMadaModelLM" and type(model.config).__name__ == "MMadaConfig"
    assert magvit_modules() == before  # loading the text model imports nothing of MAGVIT-v2 ...
    package = sys.modules[type(model).__module__.rpartition(".")[0]]
    assert not hasattr(package, "MAGVITv2")  # ... and the package's __init__ (MAGVIT-v2, diffusers internals) never ran
    saved = load_file(folder / "model.safetensors")
    assert set(saved) == set(model.state_dict()) and all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert model.config.use_cache is False and "Initializing MMadaModelLM" not in capsys.readouterr().out
    assert mask_token_id_of(tok, model.config) == tok.convert_tokens_to_ids("<|mdm_mask|>")
    c = model.config  # text ids < len(tok) <= llm_vocab_size (LLaDA's padding rows) < vocab_size (image codes)
    assert len(tok) < c.llm_vocab_size < c.vocab_size == c.llm_vocab_size + c.codebook_size
    assert model(input_ids=torch.tensor([[5, 6, 7]])).logits.shape == (1, 3, c.vocab_size)
    monkeypatch.setenv(ENV, str(MMADA_CODE))  # the environment variable instead of model.code_dir
    again, _ = load(folder, code_dir=None)
    assert type(again) is type(model)


@pytest.mark.numerics
def test_probe_picks_bidirectional_bias_padding(folder):
    model, _ = load(folder)
    assert checked(model).padding == "bias" and probe(model, MMaDA("bias"), causal=False) is None
    assert probe(model, Adapter("mask"), causal=False) == "position 0 does not see the last token (causal)"


@pytest.mark.numerics
def test_padded_batch_loss_equals_the_unpadded_per_row_loss(folder):
    """The objective on a right-padded batch (pads shown as attention_bias) = LLaDA's SFT loss of each row alone,
    unpadded (CE at masked answer tokens / p, summed / answer length, mean over rows), with the same draws."""
    model, tok = load(folder)
    assert checked(model).can_pad
    mask_id = mask_token_id_of(tok, model.config)
    batch = Collator(tok, "arith", 128)(padded_batch(tok))
    assert not bool(batch.attention_mask.all())  # really padded
    ours, theirs = objective_and_hand_written_sft_loss(model, batch, mask_id)
    assert ours == pytest.approx(theirs, rel=REASSOCIATION_RTOL)


@pytest.mark.numerics
def test_activation_checkpointing_checkpoints_whole_blocks_with_identical_gradients(folder, monkeypatch):
    import torch.utils.checkpoint as ckpt

    calls, real = [], ckpt.checkpoint
    monkeypatch.setattr(ckpt, "checkpoint", lambda fn, *a, **k: calls.append(type(fn).__name__) or real(fn, *a, **k))
    x = torch.tensor([[5, 6, 7, 8, 9]])
    grads = {}
    for on in (False, True):
        model, _ = load(folder)  # LLaDA's code binds torch's checkpoint when the model is built
        if on:
            checked(model).enable_checkpointing(model)
        model.train()
        model(input_ids=x).logits.float().square().mean().backward()
        grads[on] = [p.grad.clone() for p in model.parameters()]
    assert calls and set(calls) == {"LLaDALlamaBlock"}
    assert all(torch.equal(a, b) for a, b in zip(grads[False], grads[True], strict=True))


# ---------------------------------------------------------------- through the CLI


@pytest.mark.parametrize("method", ["standard", "mirror"])
def test_mdm_train_on_mmada(folder, tmp_path, capsys, method):
    from mdm.cli import main

    args = ["--set", f"model.source={folder}", "--set", f"model.code_dir={MMADA_CODE}"]
    assert main(["train", run_yaml(tmp_path, "unset", method=method), *args]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "done" and result["steps"] == 2 and result["adapter"] == "mmada(padding=bias)"
    assert result["metrics"]["heldout_loss"] > 0
    saved = tmp_path / "run" / "model"
    config = json.loads((saved / "config.json").read_text())
    assert config["model_type"] == "mmada" and set(config["auto_map"]) == {"AutoConfig", "AutoModel"}
    assert LLM_CODE <= {f.name for f in saved.glob("*.py")} and not (saved / "modeling_magvitv2.py").exists()
    if method == "standard":  # the saved run loads again with its own code: no code_dir needed
        reloaded, _ = load(saved, code_dir=None)
        assert type(reloaded).__module__.startswith("transformers_modules.") and checked(reloaded).padding == "bias"
        capsys.readouterr()
        assert main(["eval", str(tmp_path / "run"), "--task", "arith", "--n", "2", "--gen-length", "4", "--steps",
                     "4", "--block-length", "4", "--t-grid", "2", "--json"]) == 0
        task = json.loads(capsys.readouterr().out)["tasks"]["arith"]  # stdout is the JSON alone
        assert task["model_kind"] == "mdm" and task["likelihood"]["nll_per_token"] > 0


def one_line_error(tmp_path, folder, **over) -> str:
    r = mdm_here("train", run_yaml(tmp_path, folder, **over))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert not (tmp_path / "run" / "train_log.jsonl").exists()  # refused before any step
    return lines[0]


def test_missing_code_is_one_line(folder, tmp_path):
    assert one_line_error(tmp_path, folder) == (
        f"mdm train: error: model.code_dir: {folder} is an MMaDA checkpoint (model_type 'mmada') and MMaDA's code is "
        "not on the hub: git clone https://github.com/Gen-Verse/MMaDA and set model.code_dir=<clone>/models "
        f"(or ${ENV})")
    wrong = MMADA_CODE.parent  # the folder above the package
    assert one_line_error(tmp_path, folder, model__code_dir=str(wrong)) == (
        f"mdm train: error: {tmp_path / 'run.yaml'}: model.code_dir: {wrong} is not MMaDA's models/ package folder "
        "(no modeling_mmada.py, modeling_llada.py, configuration_llada.py, sampling.py); git clone "
        "https://github.com/Gen-Verse/MMaDA and set model.code_dir=<clone>/models")


def test_a_wrong_code_dir_is_refused_without_importing_torch(folder, tmp_path):
    from tests.cli.test_cli_methods import _imports_of

    heavy, rc, err = _imports_of("train", run_yaml(tmp_path, folder, model__code_dir=str(tmp_path / "nope")))
    assert rc == "2" and heavy == [], (heavy, err)
    assert err.strip().endswith(f"model.code_dir: {tmp_path / 'nope'}: no such folder; git clone "
                                "https://github.com/Gen-Verse/MMaDA and set model.code_dir=<clone>/models"), err


def test_mask_id_mismatch_is_one_line(tmp_path):
    from tests.llada_fixture import llada_tokenizer

    mask = llada_tokenizer().convert_tokens_to_ids("<|mdm_mask|>")
    bad = mmada_folder(tmp_path / "bad", mask_token_id=mask + 1, layers=1)
    assert one_line_error(tmp_path, bad, model__code_dir=str(MMADA_CODE)) == (
        f"mdm train: error: model: config mask_token_id {mask + 1} but the tokenizer's mask token is {mask}; "
        "set mask_token_id in config.json to the tokenizer's <|mdm_mask|>")


def test_text_ids_must_stay_below_the_image_codes_and_config_keys_be_complete(folder, tmp_path):
    from tests.llada_fixture import llada_tokenizer

    tok = llada_tokenizer()
    mask = tok.convert_tokens_to_ids("<|mdm_mask|>")
    config = SimpleNamespace(mask_token_id=mask, llm_vocab_size=len(tok) - 1)
    with pytest.raises(ConfigError, match=f"tokenizer has {len(tok)} tokens but config llm_vocab_size is "
                                          f"{len(tok) - 1}: text ids from {len(tok) - 1} on are MMaDA's image codes"):
        MMaDA().mask_token_id(tok, config)
    partial = tmp_path / "partial"
    partial.mkdir()
    raw = json.loads((folder / "config.json").read_text())
    del raw["precision"]
    (partial / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="config.json lacks keys MMadaModelLM needs: precision$"):
        load(partial)
