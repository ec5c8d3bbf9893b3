"""Where model code that is not on the hub is found: MMaDA's `models/` package (`model.code_dir`, else
$MDM_MMADA_CODE). Torch-free, so that the run-config checks (`mdm.train.config.check_run`) can use it."""

from __future__ import annotations

from pathlib import Path

from mdm.errors import ConfigError

ENV = "MDM_MMADA_CODE"
CLONE = "git clone https://github.com/Gen-Verse/MMaDA"
LLM_FILES = ("modeling_mmada.py", "modeling_llada.py", "configuration_llada.py", "sampling.py")


def looks_like_path(source: str) -> bool:
    """A local folder rather than a hub id ("org/name"): absolute, ./ ../ ~, or more than one slash (torch-free:
    `mdm train`'s config check uses it before anything heavy is imported)."""
    return source.startswith(("/", "./", "../", "~")) or source.count("/") > 1 or Path(source).exists()


def check_code_dir(code_dir, where: str = "model.code_dir") -> Path:
    """`code_dir` as a folder holding MMaDA's LLM modules (the `models/` package of MMaDA's repository)."""
    folder = Path(code_dir).expanduser()
    if not folder.is_dir():
        raise ConfigError(where, f"{code_dir}: no such folder; {CLONE} and set model.code_dir=<clone>/models")
    missing = [f for f in LLM_FILES if not (folder / f).is_file()]
    if missing:
        hint = f"; it is {folder / 'models'}" if (folder / "models" / LLM_FILES[0]).is_file() else ""
        raise ConfigError(where, f"{code_dir} is not MMaDA's models/ package folder (no {', '.join(missing)}){hint}; "
                          f"{CLONE} and set model.code_dir=<clone>/models")
    return folder.resolve()
