"""SmolLM2 through plain transformers, without any platform code: the LitServe baseline's model and the
``generate`` reference row.

Loading is the engine's (``AutoTokenizer``/``AutoModelForCausalLM`` on the same GGUF, dtype and
threads from the same entry) and prompts go through the same chat template, so only the decoding
loop and the serving path differ.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Iterator

from servers.chat_prompt import encode_prompt


@dataclass
class CausalLM:
    model_id: str
    tokenizer: Any
    model: Any
    eos_ids: set[int]
    pad_id: int

    def prompt_ids(self, text: str) -> list[int]:
        return encode_prompt(self.tokenizer, text, model_id=self.model_id, use_chat_template=True, raw_prompt=False)


def load_causal_lm(entry: dict[str, Any]) -> CausalLM:
    """The entry's model on CPU, as ``TransformersEngine._load`` loads it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = entry.get("engine_kwargs", {})
    torch.set_num_threads(kwargs.get("num_threads") or os.cpu_count() or 1)
    source, gguf = entry["model_loading_config"]["model_source"], kwargs.get("gguf_file")
    dtype = kwargs.get("dtype", "float32")
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf)
    if dtype == "auto":  # as in the engine
        from common.accelerator import cpu_has_bf16

        dtype = "bfloat16" if cpu_has_bf16() else "float32"
    torch_dtype = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf, dtype=torch_dtype).eval()
    eos = {t for t in _as_list(model.generation_config.eos_token_id) + _as_list(tokenizer.eos_token_id) if t is not None}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
    return CausalLM(entry["model_loading_config"]["model_id"], tokenizer, model, eos, pad)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def greedy_batch(lm: CausalLM, prompts: list[list[int]], max_new: list[int]) -> Iterator[list[tuple[int, bool] | None]]:
    """Static-batch greedy decoding with a KV cache: per step, ``(token, finished)`` per sequence
    (``None`` once it has finished). Left padding; the batch runs until its longest sequence ends."""
    import torch

    width = max(len(p) for p in prompts)
    input_ids = torch.tensor([[lm.pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    done, produced, past = [False] * len(prompts), [0] * len(prompts), None
    with torch.inference_mode():
        while not all(done):
            out = lm.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=past, use_cache=True)
            past, tokens = out.past_key_values, out.logits[:, -1].argmax(-1)
            step: list[tuple[int, bool] | None] = []
            for i, token in enumerate(tokens.tolist()):
                if done[i]:
                    step.append(None)
                    continue
                produced[i] += 1
                done[i] = token in lm.eos_ids or produced[i] >= max_new[i]
                step.append((token, done[i]))
            yield step
            input_ids = tokens[:, None]
            mask = torch.cat([mask, torch.ones((len(prompts), 1), dtype=mask.dtype)], dim=1)
            positions = positions[:, -1:] + 1


def generate_tok_s(lm: CausalLM, prompt: str, batch: int, max_new_tokens: int) -> dict[str, Any]:
    """HF ``generate`` (greedy) on ``batch`` copies of the prompt: total generated tokens/s."""
    import torch

    ids = torch.tensor([lm.prompt_ids(prompt)] * batch)
    began = time.perf_counter()
    with torch.inference_mode():
        out = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                do_sample=False, pad_token_id=lm.pad_id)
    seconds = time.perf_counter() - began
    new = out[:, ids.shape[1]:]
    tokens = int((new != lm.pad_id).sum())
    return {"batch": batch, "tokens": tokens, "tok_s": round(tokens / seconds, 2), "seconds": round(seconds, 3)}
