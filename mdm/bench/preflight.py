"""Before any compute of a GPU preset: is everything its plan needs here? And `mdm prefetch`, which fetches it.

    problems = preflight(spec, "paper", runs, jobs=1, results="results/runs")   # one line per missing item + fix
    prefetch(spec, "paper", runs)                                               # downloads into the HF cache

What a plan needs (`needs`): each hub model of its runs (weights + tokenizer: one repo) in the HF cache or a
reachable hub; the data of each task (GSM8K: ../shared/data/gsm8k or the hub; HiTab: $MDM_HITAB_DIR or the
task's `root`; OpenScience and text-to-image-2M stream from the hub, so they need it reachable); MMaDA's code
($MDM_MMADA_CODE or model.code_dir) and its image tokenizer; the CLIP weights of the scorer. `preflight` adds the
machine: DeepSpeed for a ZeRO-2 launch, as many GPUs as the launch config's processes x `--jobs` (each job gets its
own: `gpu_groups`), each with the memory the plan assumes (`hardware`), and disk for one run's checkpoints plus the
model folder every run keeps (mdm.bench.plan_cost).
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from mdm.bench import memory
from mdm.remote_code import looks_like_path

GSM8K_HUB = "openai/gsm8k"
OPENSCIENCE_HUB = "nvidia/OpenScienceReasoning-2"
T2I_HUB = "jackyhate/text-to-image-2M"
HITAB_FIX = "git clone https://github.com/microsoft/HiTab and export MDM_HITAB_DIR=<that folder>"
MMADA_FIX = "git clone https://github.com/Gen-Verse/MMaDA and export MDM_MMADA_CODE=<that clone>/models"


@dataclass(frozen=True)
class Need:
    kind: str  # model | dataset | stream | code | folder | clip
    name: str  # hub id, folder, or open_clip name
    why: str  # which task / row needs it
    repo_type: str = "model"


def offline() -> bool:
    """The hub is switched off (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) or cannot be reached (one 3-second probe,
    remembered: huggingface_hub would retry every request for a minute)."""
    if any(os.environ.get(k, "0") not in ("0", "", "false", "False") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return True
    return not _hub_answers()


@functools.lru_cache(maxsize=1)
def _hub_answers() -> bool:
    url = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=3).close()
        return True
    except OSError:
        return False


def needs(runs) -> list[Need]:
    """Everything the runs load, each once, in plan order."""
    out: dict[tuple, Need] = {}

    def add(need: Need) -> None:
        out.setdefault((need.kind, need.name), need)

    for r in runs:
        m, d = r.config.model, r.config.data
        if m.source != "tiny" and not looks_like_path(m.source):
            add(Need("model", m.source, f"{r.task}/{r.method_dir}"))
        if "mmada" in m.source.lower():
            add(Need("code", m.code_dir or os.environ.get("MDM_MMADA_CODE", ""), "MMaDA's code (model.code_dir)"))
        opts = d.options or {}
        if d.task == "gsm8k":
            # deferred: the task registry's loader paths, only to look for the local copy
            from mdm.data.tasks import gsm8k_dir

            if not (gsm8k_dir() / "train.jsonl").is_file():
                add(Need("dataset", GSM8K_HUB, "gsm8k", "dataset"))
        elif d.task == "hitab":
            add(Need("folder", opts.get("root") or os.environ.get("MDM_HITAB_DIR", ""), "hitab (MDM_HITAB_DIR)"))
        elif d.task == "openscience":
            add(Need("stream", OPENSCIENCE_HUB, "openscience (streamed)", "dataset"))
        elif d.task == "text-to-image":
            if opts.get("images") == "text-to-image-2m" and not opts.get("root"):
                add(Need("stream", T2I_HUB, "text-to-image (streamed shards)", "dataset"))
            tok = str(opts.get("image_tokenizer", ""))
            if tok.startswith("magvitv2:"):
                add(Need("model", tok.split(":", 1)[1], "text-to-image image tokenizer"))
                add(Need("code", opts.get("code_dir") or os.environ.get("MDM_MMADA_CODE", ""), "MAGVIT-v2's code"))
        clip = (r.config.eval.accuracy or {}).get("clip_model")
        if clip and clip != "tiny":
            add(Need("clip", clip, f"{r.task} CLIP score"))
    return list(out.values())


def _cached(repo: str, repo_type: str = "model") -> bool:
    # deferred: huggingface_hub, only for a GPU preset's checks
    from huggingface_hub import scan_cache_dir, try_to_load_from_cache

    if repo_type == "model":
        for name in ("config.json", "model_index.json", "pytorch_model.safetensors"):
            if isinstance(try_to_load_from_cache(repo, name), str):
                return True
        return False
    try:
        return any(r.repo_id == repo and r.repo_type == repo_type for r in scan_cache_dir().repos)
    except Exception:  # noqa: BLE001  (no cache folder yet)
        return False


def _reachable(repo: str, repo_type: str = "model") -> bool:
    if offline():
        return False
    try:
        # deferred: huggingface_hub, only to ask the hub
        from huggingface_hub import HfApi

        HfApi().repo_info(repo, repo_type=repo_type, timeout=10)
        return True
    except Exception:  # noqa: BLE001  (no network, gated, unknown: the run would fail alike)
        return False


def _clip_repo(spec: str) -> tuple[str, str] | None:
    """(hub repo, file) of an open_clip "<model>/<tag>" pretrained weight."""
    model, _, tag = spec.partition("/")
    try:
        # deferred: open_clip (slow import), only for a CLIP need
        from open_clip.pretrained import get_pretrained_cfg

        cfg = get_pretrained_cfg(model, tag) or {}
    except Exception:  # noqa: BLE001  (open_clip missing: the check says so)
        return None
    hub = cfg.get("hf_hub", "").rstrip("/")
    return (hub, "open_clip_pytorch_model.bin") if hub else None


def check_need(need: Need) -> str | None:
    """None when `need` is here (or reachable); else what is missing."""
    if need.kind in ("model", "dataset"):
        if _cached(need.name, need.repo_type) or _reachable(need.name, need.repo_type):
            return None
        return f"{need.repo_type} {need.name} ({need.why}): not in the HF cache" + _no_hub()
    if need.kind == "stream":
        if _reachable(need.name, need.repo_type):
            return None
        return f"dataset {need.name} ({need.why}): streamed from the hub" + _no_hub()
    if need.kind == "folder":
        if need.name and Path(need.name).is_dir():
            return None
        return f"{need.why}: " + (f"{need.name} is not a folder" if need.name else "not set")
    if need.kind == "code":
        if need.name and (Path(need.name) / "modeling_mmada.py").is_file():
            return None
        return f"{need.why}: " + (f"{need.name} has no modeling_mmada.py" if need.name else
                                  "neither model.code_dir nor MDM_MMADA_CODE is set")
    if need.kind == "clip":
        repo = _clip_repo(need.name)
        if repo is None:
            return f"CLIP {need.name} ({need.why}): open_clip does not know it (pip install open_clip_torch)"
        if isinstance(_try_cache(*repo), str) or _reachable(repo[0]):
            return None
        return f"CLIP {need.name} ({need.why}, hub {repo[0]}): not in the HF cache" + _no_hub()
    return None


def _no_hub() -> str:
    if _hub_answers.cache_info().currsize and not _hub_answers():
        return ", and the hub does not answer"
    return ", and the hub is switched off (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)"


def _try_cache(repo: str, filename: str):
    # deferred: huggingface_hub, only to look in the HF cache
    from huggingface_hub import try_to_load_from_cache

    return try_to_load_from_cache(repo, filename)


def fix_of(need: Need, prefetch_cmd: str) -> str:
    if need.kind == "folder":
        return HITAB_FIX
    if need.kind == "code":
        return MMADA_FIX
    if need.kind == "stream":
        return "run where the hub is reachable, without HF_HUB_OFFLINE / HF_DATASETS_OFFLINE"
    return prefetch_cmd


# ---------------------------------------------------------------- the machine


def gpu_groups(processes: int, jobs: int, gpus: int) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES of each of `jobs` parallel launches of `processes` GPUs each (disjoint), or None
    when the machine has too few."""
    if processes * jobs > gpus:
        return None
    return [",".join(str(g) for g in range(j * processes, (j + 1) * processes)) for j in range(jobs)]


def gpu_slots(processes: int, jobs: int) -> list[tuple[str, int]]:
    """Disjoint GPUs (CUDA_VISIBLE_DEVICES) and a rendezvous port for each of `jobs` parallel launches of
    `processes` processes; a ConfigError when the machine has too few GPUs (`preflight` says so first)."""
    # deferred: mdm.errors, only to refuse --jobs
    from mdm.errors import ConfigError

    visible = len(_visible_gpus())
    groups = gpu_groups(processes, jobs, visible)
    if groups is None:
        raise ConfigError("--jobs", f"{jobs} parallel launches of {processes} processes need {jobs * processes} GPUs, "
                          f"one set each; this machine has {visible}: use --jobs {max(1, visible // processes)}")
    return [(g, 29600 + i) for i, g in enumerate(groups)]


def _visible_gpus() -> list[float]:
    """GiB of each visible CUDA device (none without CUDA)."""
    try:
        import torch  # deferred: torch, only to count the GPUs
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_properties(i).total_memory / 2**30 for i in range(torch.cuda.device_count())]


def _free_bytes(path: Path) -> float:
    p = path.resolve()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def machine_problems(preset, runs, jobs: int, results: str | Path, disk_bytes: float | None) -> list[str]:
    # deferred: plan_cost imports the method registry (torch)
    from mdm.bench.plan_cost import launch_of

    out = []
    launch = launch_of(preset)
    if launch is None:
        return out
    if launch.backend == "zero2":
        try:
            # deferred: deepspeed is optional, only a ZeRO-2 launch needs it
            import deepspeed  # noqa: F401
        except ImportError:
            out.append("DeepSpeed (launch config " + launch.path + "): not installed -> pip install 'mdm[deepspeed]' "
                       "(make setup GPU=1), or --set launch.config_file=benchmarks/accelerate/fsdp.yaml")
    gpus = _visible_gpus()
    need = launch.processes * jobs
    if len(gpus) < launch.processes:
        out.append(f"GPUs: the launch config {launch.path} runs {launch.processes} processes, one GPU each; this "
                   f"machine has {len(gpus)} visible CUDA device(s) -> run on a GPU node (or --set "
                   f"launch.num_processes=N for N GPUs)")
    elif len(gpus) < need:
        out.append(f"--jobs {jobs}: {jobs} launches x {launch.processes} processes need {need} GPUs (each job its own); "
                   f"this machine has {len(gpus)} -> --jobs {max(1, len(gpus) // launch.processes)}")
    capacity = memory.device_gib(preset.hardware)
    if gpus and capacity and min(gpus[:need]) < capacity * 0.98:
        out.append(f"GPU memory: the plan assumes {capacity:.1f} GiB per GPU ({preset.hardware.name}); device(s) have "
                   f"{min(gpus):.1f} GiB -> set hardware.name / hardware.memory_gib (--set hardware.memory_gib=...) "
                   "and check the plan with --dry-run")
    if disk_bytes:
        free = _free_bytes(Path(results))
        if free < disk_bytes:
            out.append(f"disk: {results} has {free / 1e9:.0f} GB free; the plan needs {disk_bytes / 1e9:.0f} GB (one "
                       "run's checkpoints + each run's model/) -> free space or pass --results on a larger disk")
    return out


def preflight(spec, preset_name: str, runs, jobs: int, results: str | Path, disk_bytes: float | None = None,
              prefetch_cmd: str | None = None) -> list[str]:
    """One line per missing item, each with its fix (module docstring); [] when the plan can start."""
    preset = spec.bench.presets[preset_name]
    cmd = prefetch_cmd or f"mdm prefetch {spec.path} --preset {preset_name}"
    lines = [f"{problem} -> {fix_of(n, cmd)}" for n in needs(runs) if (problem := check_need(n))]
    return lines + machine_problems(preset, runs, jobs, results, disk_bytes)


# ---------------------------------------------------------------- prefetch


class _Missing(Exception):
    """A need prefetch cannot download (a local folder, a stream, code): its check's own line."""


def prefetch(runs, echo=print) -> list[str]:
    """Download every hub model, tokenizer and dataset snapshot the runs load into the HF cache (huggingface_hub's
    progress bars), and the CLIP weights through open_clip. Returns the items it could not fetch (with why);
    streamed datasets and local folders are checked, not downloaded."""
    # deferred: huggingface_hub, only when prefetching
    from huggingface_hub import snapshot_download

    failed = []
    items = needs(runs)
    for i, n in enumerate(items, 1):
        echo(f"[{i}/{len(items)}] {n.kind} {n.name or '(unset)'} ({n.why})")
        try:
            if n.kind in ("model", "dataset"):
                snapshot_download(n.name, repo_type=n.repo_type)
            elif n.kind == "clip":
                import open_clip  # deferred: open_clip, only to fetch a CLIP

                model, _, tag = n.name.partition("/")
                open_clip.create_model_and_transforms(model, pretrained=tag)
            else:
                problem = check_need(n)
                if problem:
                    raise _Missing(problem)
        except Exception as e:  # noqa: BLE001  (one line per item; the others still fetched)
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            what = "" if isinstance(e, _Missing) else f"{n.kind} {n.name or '(unset)'} ({n.why}): "
            failed.append(f"{what}{msg} -> {fix_of(n, 'rerun mdm prefetch')}")
            echo(f"    FAILED: {msg}")
    return failed
