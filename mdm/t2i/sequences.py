"""Text-to-image sequences for a model: the layout its tokenizer and config imply, the items the Trainer trains on
and the decoding of captions, with the checks that a codec and a model belong together made before any compute.

    fmt = sequence_format(tokenizer, model_config, image_tokenizer, max_text_len=128)   # ConfigError if mismatched
    items = fmt.items(examples)                     # {input_ids, attention_mask, prompt_length, ...}: mdm.data items
    codes = fmt.generate(model, captions, steps=24, temperature=0.0)   # long [B, N], 0 <= code < codebook

- chat (the tiny preset's models): the tokenizer carries one `<|img_c|>` token per code (`mdm.t2i.data.T2ICodec`);
  a row is `chat prompt(caption) | codes <eos>`, right-padded; decoding is `mdm.t2i.generate` over the code ids.
- mmada (MMaDA-8B and a tiny random MMaDA): LLaDA's text tokenizer, image code c is token `llm_vocab_size + c` (the
  image rows of the embedding, where MMaDA's code puts them: len(text tokenizer) + num_new_special_tokens); a row
  is `[iPAD]... <|t2i|> <bos> caption <eos> <|soi|> codes <|eoi|>`, left-padded to `max_text_len` + 1 text
  positions by MMaDA's `UniversalPrompting` rules (`mdm.adapters.mmada_prompting`); the caption part is the prompt
  (never masked), the codes and <|eoi|> the response; the attention is MMaDA's 4-D bias (its adapter makes it from
  the 1-D mask); decoding is MMaDA's MaskGIT loop (`mdm.maskgit`, cosine schedule, classifier-free guidance).
A tokenizer with no image tokens for a model that is not MMaDA is refused: its codes would be split into text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mdm.adapters.mmada_prompting import RESERVED, T2IIds, t2i_sequences
from mdm.errors import ConfigError
from mdm.maskgit import maskgit_generate
from mdm.objective.rng import derive_seed


def sequence_format(tokenizer, model_config, image_tokenizer, max_text_len: int = 128):
    """The format of this (tokenizer, model config, image tokenizer) triple, or one ConfigError saying why not."""
    from mdm.t2i.data import image_token  # deferred: mdm.t2i.data imports transformers (its text tokenizer)

    vocab = tokenizer.get_vocab()
    if image_token(0) in vocab:
        from mdm.t2i.data import T2ICodec  # deferred: mdm.t2i.data imports transformers (its text tokenizer)

        try:
            return ChatFormat(T2ICodec.build(tokenizer, image_tokenizer))
        except ValueError as e:
            raise ConfigError("data.options.image_tokenizer", f"{e} ({image_tokenizer.describe()})") from None
    if getattr(model_config, "model_type", None) == "mmada":
        return MMaDAFormat.build(tokenizer, model_config, image_tokenizer, max_text_len)
    raise ConfigError("model", f"the tokenizer has no image tokens (<|img_0|> ...) and the model "
                      f"({getattr(model_config, 'model_type', '?')}) is not MMaDA: its image codes would be split "
                      "into text tokens; use model.source: tiny (the tiny preset) or an MMaDA checkpoint with "
                      "data.options.image_tokenizer: magvitv2:<MAGVIT-v2 folder or hub id>")


@dataclass
class ChatFormat:
    codec: object  # T2ICodec

    name = "chat"

    @property
    def image_tokenizer(self):
        return self.codec.image_tokenizer

    def items(self, examples: list[dict]) -> list[dict]:
        return [self.codec.item(e["prompt"], e["codes"]) for e in examples]

    def generate(self, model, captions, *, steps: int, schedule: str = "cosine", temperature: float = 0.0,
                 seed: int = 0, batch_size: int = 64, guidance_scale: float = 0.0, first: int = 0) -> torch.Tensor:
        """`first`: the index of captions[0] in the whole list (a launch's share): a row's draws are keyed by it."""
        # deferred: mdm.t2i.generate (with the objective's pydantic schema), only to decode
        from mdm.t2i.generate import ImageDecodeConfig, generate_codes

        if guidance_scale:
            raise ConfigError("eval.accuracy.guidance_scale", "classifier-free guidance needs MMaDA's format (a "
                              "caption-dropped prompt); the tiny preset's models decode without it (0)")
        return generate_codes(model, self.codec, captions, ImageDecodeConfig(steps, schedule, temperature, seed,
                                                                             batch_size),
                              row_keys=range(first, first + len(captions)))


@dataclass
class MMaDAFormat:
    tokenizer: object
    image_tokenizer: object
    ids: object  # mdm.adapters.mmada_prompting.T2IIds
    offset: int  # token id of image code 0
    mask_id: int
    max_text_len: int

    name = "mmada"

    @classmethod
    def build(cls, tokenizer, config, image_tokenizer, max_text_len: int) -> MMaDAFormat:
        from mdm.data import mask_token_id_of  # deferred: mdm.data's tokenizer imports transformers

        where = "data.options.image_tokenizer"
        if image_tokenizer.name != "magvitv2":
            raise ConfigError(where, f"MMaDA's image codes are MAGVIT-v2's; got {image_tokenizer.describe()}: use "
                              "magvitv2:<folder or hub id> (the real one: magvitv2:showlab/magvitv2)")
        if int(config.codebook_size) != image_tokenizer.codebook_size:
            raise ConfigError(where, f"the model has {config.codebook_size} image codes (config codebook_size), the "
                              f"image tokenizer {image_tokenizer.codebook_size}: not this model's MAGVIT-v2")
        if int(config.num_vq_tokens) != image_tokenizer.num_tokens:
            raise ConfigError(where, f"the model was trained on {config.num_vq_tokens} codes per image (config "
                              f"num_vq_tokens), the image tokenizer gives {image_tokenizer.num_tokens} at "
                              f"{image_tokenizer.image_size} px: set its image size to match")
        offset = int(config.llm_vocab_size)
        if offset + image_tokenizer.codebook_size > int(config.vocab_size) or len(tokenizer) > offset:
            raise ConfigError("model", f"config vocab_size {config.vocab_size} does not hold llm_vocab_size {offset} "
                              f"+ {image_tokenizer.codebook_size} codes above a {len(tokenizer)}-token tokenizer")
        vocab = tokenizer.get_vocab()
        named = {k: vocab[k] for k in ("<|t2i|>", "<|soi|>", "<|eoi|>", "[iPAD]") if k in vocab}
        if len(named) == 4:  # a tokenizer that names MMaDA's special tokens (a tiny MMaDA)
            ids = T2IIds(tokenizer.bos_token_id, tokenizer.eos_token_id, named["<|t2i|>"], named["<|soi|>"],
                         named["<|eoi|>"], named["[iPAD]"])
        elif len(tokenizer) > max(RESERVED.values()):  # LLaDA's: MMaDA's reserved ids (use_reserved_token)
            ids = T2IIds.of(tokenizer)
        else:
            raise ConfigError("model", f"the tokenizer ({len(tokenizer)} tokens) has neither MMaDA's reserved ids "
                              "nor tokens <|t2i|>, <|soi|>, <|eoi|>, [iPAD]: not MMaDA's (LLaDA's) tokenizer")
        return cls(tokenizer, image_tokenizer, ids, offset, mask_token_id_of(tokenizer, config), max_text_len)

    def _rows(self, captions, image_ids: torch.Tensor, drop=None):
        texts = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in captions]
        seq, mask, _ = t2i_sequences(texts, image_ids, self.ids, self.max_text_len, drop=drop)
        return seq, mask

    def items(self, examples: list[dict]) -> list[dict]:
        out = []
        for e in examples:
            codes = torch.as_tensor(e["codes"], dtype=torch.long)
            seq, mask = self._rows([e["prompt"]], (codes + self.offset)[None])
            n = seq.shape[1]
            out.append({"input_ids": seq[0].tolist(), "attention_mask": mask[0].tolist(),
                        "prompt_length": n - len(codes) - 1, "delimiter_mask": [False] * n,
                        "syntax_mask": [False] * n})
        return out

    def generate(self, model, captions, *, steps: int, schedule: str = "cosine", temperature: float = 0.0,
                 seed: int = 0, batch_size: int = 64, guidance_scale: float = 0.0, first: int = 0) -> torch.Tensor:
        """MaskGIT over each batch of `batch_size` captions; a batch's draws come from a generator keyed by (seed, its
        first caption's index in the whole list, `first` + offset), so a launch's share decodes as one process."""
        if schedule != "cosine":
            raise ConfigError("eval.accuracy.schedule", "MMaDA decodes with MaskGIT's cosine schedule")
        device = next(model.parameters()).device
        m, out = self.image_tokenizer.num_tokens, []
        for start in range(0, len(captions), batch_size):
            generator = torch.Generator(device=device).manual_seed(derive_seed("t2i-mmada", seed, first + start))
            chunk = list(captions[start : start + batch_size])
            masked = torch.full((len(chunk), m), self.mask_id, dtype=torch.long)
            ids, mask = self._rows(chunk, masked)
            uncond = self._rows(chunk, masked, drop=[True] * len(chunk)) if guidance_scale > 0 else (None, None)
            codes = maskgit_generate(
                lambda x, bias: model(input_ids=x, attention_bias=bias).logits, ids.to(device), mask.to(device),
                image_len=m, text_vocab=self.offset, codebook=self.image_tokenizer.codebook_size, mask_id=self.mask_id,
                steps=steps, temperature=temperature, guidance_scale=guidance_scale,
                uncond_input_ids=None if uncond[0] is None else uncond[0].to(device),
                uncond_attention_mask=None if uncond[1] is None else uncond[1].to(device),
                generator=generator, greedy=temperature == 0)
            out.append(codes.cpu())
        return torch.cat(out) if out else torch.zeros((0, m), dtype=torch.long)
