"""Per-sequence logits processing and sampling for the continuous batcher."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from configs.llm_models import LLMParams


class SequenceSampler:
    """Holds one sequence's sampling state: its RNG and the counts the penalties need."""

    def __init__(self, params: "LLMParams", prompt_ids: list[int], vocab_size: int) -> None:
        self.params = params
        self.generator = torch.Generator()
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        else:
            self.generator.seed()
        self._vocab_size = vocab_size
        self._needs_counts = params.frequency_penalty != 0 or params.presence_penalty != 0
        self._output_counts: torch.Tensor | None = None  # made on the model thread (see servers.model_thread)
        self._seen = set(prompt_ids) if params.repetition_penalty != 1.0 else None

    @property
    def is_plain_greedy(self) -> bool:
        p = self.params
        return p.temperature == 0 and not self._needs_counts and self._seen is None

    def observe(self, token_id: int) -> None:
        if self._needs_counts and self._output_counts is None:
            self._output_counts = torch.zeros(self._vocab_size, dtype=torch.float32)
        if self._output_counts is not None and token_id < self._output_counts.numel():
            self._output_counts[token_id] += 1
        if self._seen is not None:
            self._seen.add(token_id)

    def sample(self, logits: torch.Tensor) -> int:
        """Pick the next token from one row of logits (shape ``[vocab]``)."""
        p = self.params
        logits = logits.float()
        if self._seen is not None and self._seen:
            idx = torch.tensor(sorted(self._seen), dtype=torch.long)
            idx = idx[idx < logits.numel()]
            picked = logits[idx]
            logits[idx] = torch.where(picked > 0, picked / p.repetition_penalty, picked * p.repetition_penalty)
        if self._output_counts is not None:
            counts = self._output_counts[: logits.numel()]
            logits = logits - p.frequency_penalty * counts - p.presence_penalty * (counts > 0).float()
        if p.temperature == 0:
            return int(torch.argmax(logits))
        logits = logits / p.temperature
        if p.top_k > 0 and p.top_k < logits.numel():
            kth = torch.topk(logits, p.top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if p.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True)
            cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
            drop = cumulative - torch.softmax(sorted_logits, dim=-1) >= p.top_p
            logits = logits.index_fill(0, order[drop], float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))
