"""MMaDA's image tokenizer, MAGVIT-v2 (`showlab/magvitv2`), run by MMaDA's own code; and a tiny random one for tests.

- Code: `modeling_magvitv2.py` of MMaDA's `models/` package (`code_dir`, else $MDM_MMADA_CODE), imported with what it
  imports relatively (`common_modules`, `misc`, `modeling_utils`) as submodules of the package's private name
  (`mdm.adapters.mmada.mmada_package`): the package's `__init__.py`, which also imports the LLM, is never run.
  It needs einops, jaxtyping, typeguard and omegaconf (project dependencies).
- Diffusers shim: MMaDA's `modeling_utils.py` (a copy of diffusers' ModelMixin of 2024) imports `FLAX_WEIGHTS_NAME`
  from `diffusers.utils`; the pinned diffusers 0.42 dropped Flax and that constant, so the import fails.
  `shim_diffusers()` sets it, only where it is missing, to its old value "diffusion_flax_model.msgpack" (MMaDA uses
  it only for `from_pretrained(from_flax=True)`). It is the one name missing at import: every other name
  `modeling_utils.py` imports still exists and is left alone, and no file of MMaDA's is touched.
- Loading: MMaDA's `ModelMixin.from_pretrained` calls diffusers internals whose signatures 0.42 changed
  (`load_state_dict(file, variant=)`, `load_model_dict_into_meta(..., device=)`: a TypeError on any checkpoint), so
  `load_magvit` uses the parts that still work: ConfigMixin's `load_config` / `from_config` (a local folder or a hub
  id), the weights file MMaDA's `from_pretrained` looks for (`pytorch_model.safetensors`, else `pytorch_model.bin`),
  then a strict `load_state_dict`. Saving is MMaDA's own `save_pretrained`.
- Sizes: MMaDA's `MAGVITv2.__init__` takes no arguments; its encoder, decoder and LFQ quantizer take their defaults
  (encoder ch_mult [1, 2, 2, 4, 4]: 16x downsampling; codebook_dim 13: 2**13 = 8,192 codes; 32 x 32 = 1,024 codes at
  512 px). `sized_magvit` subclasses it (same class name, so config.json reads like showlab/magvitv2's) with those
  parts' keyword arguments in its config (`encoder_config`, `decoder_config`, `quantizer_config`, not `encoder` etc.:
  ModelMixin reads config keys as attributes; absent: MMaDA's defaults, i.e. exactly showlab/magvitv2) and the
  `image_size` it tokenizes (default 512, MMaDA's resolution). Everything else, get_code and decode_code included,
  is MMaDA's. `magvit_sizes(model)` reads the codebook size (the quantizer's 2**codebook_dim) and the downsampling
  (2**(len(encoder ch_mult) - 1)) off the built model.
- `tiny_magvit(folder, seed)`: that architecture at tiny size with random weights keyed by the seed, saved
  hub-shaped (config.json + pytorch_model.safetensors) for `mdm.t2i.image_tokenizer.MagvitV2Tokenizer`.
"""

from __future__ import annotations

import functools
import importlib
import os
from pathlib import Path

from mdm.errors import ConfigError
from mdm.remote_code import CLONE, ENV

FILES = ("modeling_magvitv2.py", "common_modules.py", "misc.py", "modeling_utils.py")
DEFAULT_IMAGE_SIZE = 512  # MMaDA's resolution (configs/mmada_demo.yaml)
# names MMaDA's modeling_utils.py imports that the pinned diffusers lacks: module -> {name: value it had}
DIFFUSERS_SHIM = {"diffusers.utils": {"FLAX_WEIGHTS_NAME": "diffusion_flax_model.msgpack"}}


def code_folder(code_dir=None) -> Path:
    """MMaDA's `models/` folder holding MAGVIT-v2's modules: `code_dir`, else $MDM_MMADA_CODE."""
    code_dir = code_dir or os.environ.get(ENV) or None
    fix = f"{CLONE} and set model.code_dir=<clone>/models"
    if code_dir is None:
        raise ConfigError("model.code_dir", f"the MAGVIT-v2 image tokenizer runs MMaDA's code, which is not on the "
                          f"hub: {fix} (or ${ENV})")
    folder = Path(code_dir).expanduser()
    if not folder.is_dir():
        raise ConfigError("model.code_dir", f"{code_dir}: no such folder; {fix}")
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        hint = f"; it is {folder / 'models'}" if (folder / "models" / FILES[0]).is_file() else ""
        raise ConfigError("model.code_dir", f"{code_dir} is not MMaDA's models/ package folder (no "
                          f"{', '.join(missing)}){hint}; {fix}")
    return folder.resolve()


def shim_diffusers() -> list[str]:
    """Set the DIFFUSERS_SHIM names that the installed diffusers lacks; returns those set ("module.NAME")."""
    added = []
    for module_name, names in DIFFUSERS_SHIM.items():
        module = importlib.import_module(module_name)
        for name, value in names.items():
            if not hasattr(module, name):
                setattr(module, name, value)
                added.append(f"{module_name}.{name}")
    return added


def import_magvit(code_dir=None):
    """MMaDA's `modeling_magvitv2` module from `code_dir` (else $MDM_MMADA_CODE), diffusers shimmed first."""
    from mdm.adapters.mmada import import_code  # deferred: mdm.adapters imports torch

    folder = code_folder(code_dir)
    shim_diffusers()
    return import_code(folder, "modeling_magvitv2", "MAGVIT-v2", "diffusers")


def sized_magvit(code_dir=None):
    """MMaDA's MAGVITv2 with its parts' sizes in its config (see the module docstring)."""
    return _sized(import_magvit(code_dir))


@functools.cache
def _sized(mm):
    class MAGVITv2(mm.MAGVITv2):
        """MMaDA's MAGVITv2; `encoder_config` / `decoder_config` / `quantizer_config`: keyword arguments of MMaDA's
        VQGANEncoder / VQGANDecoder / LFQuantizer (None: their defaults, as MMaDA's MAGVITv2 builds them)."""

        @mm.register_to_config
        def __init__(self, encoder_config: dict | None = None, decoder_config: dict | None = None,
                     quantizer_config: dict | None = None, image_size: int = DEFAULT_IMAGE_SIZE):
            mm.ModelMixin.__init__(self)  # not MAGVITv2.__init__: it builds the full-size parts
            self.encoder = mm.VQGANEncoder(**(encoder_config or {}))
            self.decoder = mm.VQGANDecoder(**(decoder_config or {}))
            self.quantize = mm.LFQuantizer(**(quantizer_config or {}))

    MAGVITv2.__qualname__ = "MAGVITv2"
    return MAGVITv2


def load_magvit(source, code_dir=None):
    """A MAGVIT-v2 from a hub id or a folder written by `save_pretrained` (MMaDA's or `tiny_magvit`'s), eval mode."""
    from diffusers.models.model_loading_utils import load_state_dict  # deferred: diffusers imports torch

    from mdm.adapters.mmada import quiet_stdout  # deferred: mdm.adapters imports torch

    mm = import_magvit(code_dir)
    cls = _sized(mm)
    try:
        config = cls.load_config(str(source))
        weights = _weights_file(source, importlib.import_module(mm.__name__.rpartition(".")[0] + ".modeling_utils"))
    except OSError as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError("image_tokenizer", f"{source}: not a MAGVIT-v2 folder or a reachable hub id "
                          f"({first})") from None
    with quiet_stdout():  # the decoder and the quantizer print their shapes when built
        model = cls.from_config(config)
    model.load_state_dict(load_state_dict(weights), strict=True)
    return model.eval()


def _weights_file(source, utils) -> str:
    """The weights file MMaDA's from_pretrained loads (`utils`: its modeling_utils): safetensors, else pickle."""
    from diffusers.utils import _get_model_file  # deferred: diffusers imports torch

    names = (utils.SAFETENSORS_WEIGHTS_NAME, utils.WEIGHTS_NAME)
    for name in names:
        try:
            return _get_model_file(str(source), weights_name=name)
        except OSError:
            continue
    raise OSError(f"no {' or '.join(names)}")


def magvit_sizes(model) -> tuple[int, int]:
    """(codebook size, downsampling factor) of a built MAGVIT-v2 (MMaDA's own class or `sized_magvit`'s)."""
    down = 2 ** (model.encoder.num_resolutions - 1)
    if 2 ** (model.decoder.num_resolutions - 1) != down or model.decoder.z_channels != model.quantize.e_dim:
        raise ConfigError("image_tokenizer", "the MAGVIT-v2's decoder does not match its encoder and quantizer "
                          "(upsampling levels / z_channels)")
    return int(model.quantize.codebook_size), down


def tiny_magvit(folder, seed: int = 0, image_size: int = 32, codebook_bits: int = 6, downsamplings: int = 2,
                code_dir=None) -> Path:
    """A random-weight MAGVIT-v2 (MMaDA's architecture, 32 channels, one res block per level, no attention but the
    middle block's) with 2**codebook_bits codes and (image_size / 2**downsamplings)**2 codes per image, saved to
    `folder` with MMaDA's save_pretrained. The same arguments give the same weights."""
    import torch  # deferred: heavy

    from mdm.adapters.mmada import quiet_stdout  # deferred: mdm.adapters imports torch

    levels = downsamplings + 1
    part = {"ch": 32, "ch_mult": [1] * downsamplings + [2], "num_res_blocks": [1] * levels, "attn_resolutions": [],
            "resolution": image_size, "z_channels": codebook_bits}
    cls = sized_magvit(code_dir)
    with torch.random.fork_rng(devices=[]), quiet_stdout():
        torch.manual_seed(seed)
        model = cls(encoder_config=part, decoder_config=part, quantizer_config={"codebook_dim": codebook_bits},
                    image_size=image_size)
    folder = Path(folder)
    model.save_pretrained(str(folder))
    return folder
