"""Tiny random-weight, hub-shaped folders of the real MDM families mdm adapts (`mdm.adapters`), built offline:
config.json with the real `model_type` / `architectures` (/ `auto_map`), a tokenizer shaped like the real one (its
special tokens, its mask token, a chat template of its shape) and `model.safetensors`.

- a2d-qwen3 / a2d-qwen2: dllm's Tiny-A2D (dllm-hub/Qwen3-0.6B-diffusion-mdlm-v0.1, Qwen2.5-Coder-0.5B-...): Qwen
  weights under model_type "a2d-qwen3" / "a2d-qwen2", architectures A2DQwen3LMHeadModel / A2DQwen2LMHeadModel, no
  auto_map (dllm's convert.py strips it); ChatML tokenizer, EOS <|im_end|>, pad <|endoftext|>, mask <|mask|>; the
  embedding padded beyond the tokenizer (Qwen3: 151936 rows, 151670 tokens), tied as in Qwen3-0.6B.
- a2d-llama: dllm's A2DLlamaConfig; Llama-3-shaped tokenizer (<|begin_of_text|>, EOS = pad = <|eot_id|>, <|mask|>).
- modernbert: dllm's BERT-Chat (dllm-hub/ModernBERT-base-chat-v0.1): ModernBertForMaskedLM; [CLS] [SEP] [PAD]
  [MASK] [UNK], EOS = [PAD] (dllm sets eos to pad when the tokenizer has none), a [Question]/[Answer] template.
- dream: Dream-v0-Instruct-7B's shape: model_type "Dream", architectures DreamModel, auto_map to its remote code
  (the code files are NOT in the folder: mdm never runs them), Qwen2 weights with q/k/v biases, mask_token_id =
  the tokenizer's <|mask|>, bos <|beginoftext|>, logits shifted by one (the weights do not say so; the family does).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

FAMILIES = ("a2d-qwen3", "a2d-qwen2", "modernbert", "dream")
MORE = ("a2d-llama",)  # loaded, probed and decoded only (its CLI path is A2D-Qwen's)

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Qwen3's switch: with enable_thinking false the generation prompt closes an empty think block
QWEN3 = CHATML.replace("assistant\n{% endif %}", "assistant\n{% if enable_thinking is defined and enable_thinking "
                                                  "is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}")
LLAMA3 = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
          "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant"
          "<|end_header_id|>\n\n{% endif %}")
BERT_CHAT = ("{% for m in messages %}{% if m['role'] == 'user' %}[Question]\n{{ m['content'] }}\n[/Question]\n\n"
             "{% elif m['role'] == 'assistant' %}[Answer]\n{{ m['content'] }}\n[/Answer]\n\n{% endif %}{% endfor %}"
             "{% if add_generation_prompt %}[Answer]\n{% endif %}")
SIZE = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}


def family_tokenizer(family: str):
    """The tests' tiny BPE with the special tokens, mask token and chat template of `family`'s real tokenizer."""
    from transformers import PreTrainedTokenizerFast

    from tests.eval.test_eval_fixtures import tiny_tokenizer

    base = tiny_tokenizer().backend_tokenizer
    if family == "modernbert":
        special = dict(cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", mask_token="[MASK]", unk_token="[UNK]",
                       eos_token="[PAD]")
        template = BERT_CHAT
    elif family == "a2d-llama":
        special = dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<|eot_id|>",
                       mask_token="<|mask|>", additional_special_tokens=["<|start_header_id|>", "<|end_header_id|>"])
        template = LLAMA3
    else:
        special = dict(eos_token="<|im_end|>", pad_token="<|endoftext|>", mask_token="<|mask|>",
                       additional_special_tokens=["<|im_start|>"])
        if family == "dream":
            special["bos_token"] = "<|beginoftext|>"
        else:
            special["additional_special_tokens"] += ["<think>", "</think>"]
        template = QWEN3 if family == "a2d-qwen3" else CHATML
    tok = PreTrainedTokenizerFast(tokenizer_object=base, model_max_length=1 << 20)
    tok.add_special_tokens(special)
    tok.chat_template = template
    return tok


def family_folder(folder: Path, family: str, seed: int = 0, padded_vocab: int = 8) -> Path:
    """A hub-shaped folder of `family` (module docstring); returns it."""
    import transformers

    tok = family_tokenizer(family)
    vocab = len(tok) + padded_vocab
    ids = {"pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id}
    if family == "modernbert":
        config = transformers.ModernBertConfig(vocab_size=vocab, **SIZE, global_attn_every_n_layers=2,
                                               local_attention=16, max_position_embeddings=512, cls_token_id=tok.cls_token_id,
                                               sep_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id, **ids)
        model_cls, arch, model_type = transformers.ModernBertForMaskedLM, "ModernBertForMaskedLM", "modernbert"
    elif family == "a2d-llama":
        config = transformers.LlamaConfig(vocab_size=vocab, **SIZE, num_key_value_heads=1, head_dim=16,
                                          max_position_embeddings=512, use_cache=False, bos_token_id=tok.bos_token_id,
                                          **ids)
        model_cls, arch, model_type = transformers.LlamaForCausalLM, "A2DLlamaLMHeadModel", family
    else:
        qwen3 = family == "a2d-qwen3"
        config = (transformers.Qwen3Config if qwen3 else transformers.Qwen2Config)(
            vocab_size=vocab, **SIZE, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
            tie_word_embeddings=family != "dream", use_cache=False, **ids)
        model_cls = transformers.Qwen3ForCausalLM if qwen3 else transformers.Qwen2ForCausalLM
        arch = {"a2d-qwen3": "A2DQwen3LMHeadModel", "a2d-qwen2": "A2DQwen2LMHeadModel", "dream": "DreamModel"}[family]
        model_type = "Dream" if family == "dream" else family
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
        with torch.no_grad():  # sharper than the default init, so greedy decoding has clear winners
            for name, p in model.named_parameters():
                if p.dim() == 2:
                    p.normal_(0, p.shape[1] ** -0.5 * (2.0 if "embed" in name or "head" in name else 1.0))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    cfg.update(model_type=model_type, architectures=[arch])
    if family == "dream":
        cfg.update(auto_map={"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
                   mask_token_id=tok.mask_token_id, bos_token_id=tok.bos_token_id)
    path.write_text(json.dumps(cfg, indent=2))
    return folder
