"""Compute estimates for `mdm bench --dry-run`, offline: known parameter counts, no model is loaded.

Training FLOPs ~= 6 * params * (forward/backward token passes); a P-POTS 'auto' pilot adds
2 * params * a*b*c * avg_tokens (forward only). Hours = FLOPs / (GPUs * peak * MFU), or token passes (a pilot
token counting 1/3) / measured token passes per second where the preset gives one (the tiny preset's CPU).
Not included: evaluation (decoding), the tiny base models, model loading and checkpoint I/O.
"""

from __future__ import annotations

# Parameter counts of the paper's models (model cards / config arithmetic; never downloaded here).
KNOWN_PARAMS = {
    "GSAI-ML/LLaDA-8B-Instruct": 8.02e9,
    "GSAI-ML/LLaDA-8B-Base": 8.02e9,
    "Gen-Verse/MMaDA-8B-MixCoT": 8.08e9,  # LLaDA-8B with the image-token vocabulary (approximate)
    "Qwen/Qwen2.5-7B-Instruct": 7.62e9,
    "Qwen/Qwen3-8B-Base": 8.19e9,
    "meta-llama/Llama-3.1-8B-Instruct": 8.03e9,
    "dllm-hub/Qwen3-0.6B-diffusion-mdlm-v0.1": 0.596e9,  # Qwen3-0.6B (tied embeddings; 0.44B without them)
    "dllm-hub/Qwen3-0.6B-diffusion-bd3lm-v0.1": 0.596e9,
    "Qwen/Qwen3-0.6B": 0.596e9,
}

# Dense bf16 peak TFLOP/s per device.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "B200": 2250.0}


def tiny_params(size: dict, vocab_size: int) -> int:
    """Parameters of the tiny Gemma3 backbone (tied embeddings) from its size settings."""
    h, n, heads, kv, d, inter = (size[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                    "num_key_value_heads", "head_dim", "intermediate_size"))
    attn = h * heads * d + 2 * h * kv * d + heads * d * h + 2 * d  # q, k, v, o, q/k norms
    mlp = 3 * h * inter
    return vocab_size * h + n * (attn + mlp + 4 * h) + h


def model_params(model_cfg, explicit: float | None = None) -> float | None:
    if explicit:
        return float(explicit)
    if model_cfg.source == "tiny":
        return float(tiny_params(model_cfg.size.model_dump(), model_cfg.vocab_size))
    return KNOWN_PARAMS.get(model_cfg.source)


def hours(token_passes: float, flops: float | None, hardware) -> float | None:
    if hardware is None:
        return None
    if hardware.tokens_per_s:
        return token_passes / hardware.tokens_per_s / 3600
    peak = hardware.peak_tflops or PEAK_TFLOPS.get(hardware.name)
    if flops is None or not peak:
        return None
    return flops / (hardware.count * peak * 1e12 * hardware.mfu) / 3600


def human(x: float | None, unit: str = "") -> str:
    if x is None:
        return "?"
    for scale, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{suffix}{unit}"
    return f"{x:.3g}{unit}"
