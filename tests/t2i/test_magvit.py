"""MMaDA's real MAGVIT-v2 code (`mdm.t2i.magvit`), imported from the fixture copy of MMaDA's `models/` package with the
pinned diffusers: a tiny random MAGVIT-v2 saved hub-shaped and loaded back through `MagvitV2Tokenizer`, sizes read
from its config, the diffusers shim, and the one-line error without MMaDA's code."""

from __future__ import annotations

import ast
import hashlib
import json
import sys

import numpy as np
import pytest
import torch

from mdm.errors import ConfigError
from mdm.remote_code import ENV
from mdm.t2i.image_tokenizer import MagvitV2Tokenizer, load_image_tokenizer
from mdm.t2i.magvit import (
    DIFFUSERS_SHIM,
    import_magvit,
    magvit_sizes,
    shim_diffusers,
    sized_magvit,
    tiny_magvit,
)
from tests.llada_fixture import MMADA_CODE


def fixture_hashes() -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(MMADA_CODE.iterdir()) if p.is_file()}


pytestmark = [pytest.mark.skipif(not MMADA_CODE.is_dir(), reason=f"MMaDA's code fixture not found at {MMADA_CODE} "
                                 "(it ships with the project's shared reference data)"),
              pytest.mark.usefixtures("one_thread")]
HASHES_AT_COLLECTION = fixture_hashes() if MMADA_CODE.is_dir() else {}


@pytest.fixture(scope="module", autouse=True)
def forget_magvit_modules():
    """tests/adapters/test_mmada.py checks that loading MMaDA's LLM imports none of MAGVIT-v2's modules: leave none behind."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("_mdm_mmada_") and "." in name:
            del sys.modules[name]


@pytest.fixture(autouse=True)
def no_env_code_dir(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_magvit(tmp_path_factory.mktemp("magvit") / "magvit-tiny", seed=0, code_dir=MMADA_CODE)


def images(n=2, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_tiny_magvit_saves_and_loads_back_through_the_tokenizer(tiny):
    assert sorted(p.name for p in tiny.iterdir()) == ["config.json", "pytorch_model.safetensors"]
    tok = MagvitV2Tokenizer(tiny, code_dir=MMADA_CODE)
    mm = import_magvit(MMADA_CODE)
    assert isinstance(tok.model, mm.MAGVITv2) and type(tok.model).get_code is mm.MAGVITv2.get_code
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the builder's seed: the same random weights
        again = sized_magvit(MMADA_CODE).from_config(sized_magvit(MMADA_CODE).load_config(str(tiny)))
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), tok.model.state_dict().values()))
    assert tok.describe() == {"name": "magvitv2", "codebook_size": 64, "image_size": 32, "grid": [8, 8],
                              "source": str(tiny)}
    assert tok.num_tokens == 64

    codes = tok.encode(images())
    assert codes.dtype == torch.long and codes.shape == (2, 64)
    assert 0 <= int(codes.min()) and int(codes.max()) < tok.codebook_size
    decoded = tok.decode(codes)
    assert decoded.dtype == np.uint8 and decoded.shape == (2, 32, 32, 3)
    recoded = tok.encode(decoded)
    assert torch.equal(tok.encode(images()), codes)  # encode -> decode -> encode, twice: the same codes
    assert np.array_equal(tok.decode(codes), decoded) and torch.equal(tok.encode(decoded), recoded)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 64\)"):
        tok.decode(torch.full((1, 64), 64))


def test_codebook_size_and_grid_come_from_the_config(tmp_path, tiny):
    other = tiny_magvit(tmp_path / "other", seed=1, image_size=32, codebook_bits=8, downsamplings=3,
                        code_dir=MMADA_CODE)
    config = json.loads((other / "config.json").read_text())
    assert config["_class_name"] == "MAGVITv2" and config["quantizer_config"] == {"codebook_dim": 8}
    assert config["encoder_config"]["ch_mult"] == [1, 1, 1, 2]
    tok = load_image_tokenizer(f"magvitv2:{other}", code_dir=MMADA_CODE)
    assert (tok.codebook_size, tok.grid, tok.image_size) == (256, (4, 4), 32)
    assert tok.encode(images(1)).shape == (1, 16)
    small = MagvitV2Tokenizer(tiny, code_dir=MMADA_CODE)
    assert (small.codebook_size, small.grid) == (64, (8, 8))
    larger = MagvitV2Tokenizer(tiny, image_size=64, code_dir=MMADA_CODE)  # image_size: the argument wins
    assert larger.grid == (16, 16) and larger.encode(images(1)).shape == (1, 256)  # 32 px input: resized to 64


def test_an_empty_config_is_mmadas_magvit_v2_exactly():
    """showlab/magvitv2's config names no sizes: the sized class then builds MMaDA's MAGVITv2 (8,192 codes, 16x)."""
    mm = import_magvit(MMADA_CODE)
    with torch.device("meta"):  # full size, no memory
        real = mm.MAGVITv2()
        ours = sized_magvit(MMADA_CODE).from_config({"_class_name": "MAGVITv2", "_diffusers_version": "0.25.0"})
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in real.state_dict().items()}
    assert magvit_sizes(real) == magvit_sizes(ours) == (8192, 16)
    tok = MagvitV2Tokenizer(ours, device="meta")
    assert (tok.image_size, tok.grid, tok.num_tokens) == (512, (32, 32), 1024)


def test_the_import_works_with_the_installed_diffusers_and_leaves_the_fixture_alone(monkeypatch):
    import diffusers.utils

    before = fixture_hashes()
    mm = import_magvit(MMADA_CODE)
    assert mm.MAGVITv2.__name__ == "MAGVITv2" and mm.__name__.endswith(".modeling_magvitv2")
    # every name MMaDA's modeling_utils.py imports from diffusers exists (after the shim)
    tree = ast.parse((MMADA_CODE / "modeling_utils.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("diffusers"):
            module = __import__(node.module, fromlist=["_"])
            assert all(hasattr(module, a.name) for a in node.names), node.module
    assert {m: list(names) for m, names in DIFFUSERS_SHIM.items()} == {"diffusers.utils": ["FLAX_WEIGHTS_NAME"]}
    monkeypatch.setattr(diffusers.utils, "FLAX_WEIGHTS_NAME", "kept")
    assert shim_diffusers() == [] and diffusers.utils.FLAX_WEIGHTS_NAME == "kept"  # an existing name is never replaced
    monkeypatch.delattr(diffusers.utils, "FLAX_WEIGHTS_NAME")
    assert shim_diffusers() == ["diffusers.utils.FLAX_WEIGHTS_NAME"]
    assert fixture_hashes() == before == HASHES_AT_COLLECTION


def test_missing_code_dir_is_one_config_error_line(tiny, tmp_path, monkeypatch):
    for make in (lambda: MagvitV2Tokenizer(tiny), lambda: load_image_tokenizer(f"magvitv2:{tiny}")):
        with pytest.raises(ConfigError) as e:
            make()
        assert str(e.value) == (
            "model.code_dir: the MAGVIT-v2 image tokenizer runs MMaDA's code, which is not on the hub: git clone "
            f"https://github.com/Gen-Verse/MMaDA and set model.code_dir=<clone>/models (or ${ENV})")
    monkeypatch.setenv(ENV, str(tmp_path))
    with pytest.raises(ConfigError) as e:
        MagvitV2Tokenizer(tiny)
    assert str(e.value).startswith(f"model.code_dir: {tmp_path} is not MMaDA's models/ package folder (no "
                                   "modeling_magvitv2.py, common_modules.py, misc.py, modeling_utils.py)")
    assert "\n" not in str(e.value)
    monkeypatch.setenv(ENV, str(MMADA_CODE))  # the env var alone is enough
    assert MagvitV2Tokenizer(tiny).codebook_size == 64
