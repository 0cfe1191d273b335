"""Iteration-level (continuous) batching for Hugging Face causal LMs.

The decoding loop runs on the engine's model thread (``servers.model_thread``), the thread that
loaded the model. Each loop iteration admits waiting requests (one batched prefill, then their KV
cache is left-padded and stacked onto the running batch), runs one decoding step for every
running sequence, streams each new token to its request, and drops finished or cancelled
sequences from the batch. A request arriving mid-generation therefore starts at the next step
instead of waiting for the whole batch to finish.
"""

from __future__ import annotations

import collections
import logging
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch
import torch.nn.functional as F

from servers.generation.decoding_loop import DecodingLoop
from servers.generation.detokenizer import IncrementalDetokenizer
from servers.generation.sampling import SequenceSampler
from servers.generation.token_events import TokenEvent

logger = logging.getLogger(__name__)


class TokenConstraint(Protocol):
    """Restricts one sequence's next token (e.g. a grammar: ``servers.generation.grammar.GrammarMask``)."""

    def apply(self, logits: torch.Tensor) -> None:
        """Set the logits of forbidden tokens to -inf, in place (one row ``[vocab]``)."""

    def accept(self, token: int) -> bool:
        """Advance past the sampled token; False if it was not allowed."""


@dataclass
class GenerationJob:
    request_id: str
    prompt_ids: list[int]
    max_new_tokens: int
    sampler: SequenceSampler
    detokenizer: IncrementalDetokenizer
    emit: Callable[[TokenEvent], None]
    cancelled: bool = False
    generated: int = 0
    constraint: TokenConstraint | None = None  # None: sampled from the model's logits as they are
    adapter: str | None = None  # a LoRA adapter loaded in the model (peft), or the base model


@dataclass
class _Row:
    job: GenerationJob
    next_token: int
    length: int  # real (unpadded) tokens already in the KV cache
    pending_ids: list[int] = field(default_factory=list)


class ContinuousBatcher(DecodingLoop):
    def __init__(self, model: Any, device: str, eos_token_ids: set[int], max_batch_size: int) -> None:
        super().__init__()
        self._model = model
        self._device = device
        self._eos = eos_token_ids
        self._max_batch = max_batch_size
        self._rows: list[_Row] = []
        self._cache: Any = None
        self._mask: torch.Tensor | None = None
        self._between_steps: collections.deque[tuple[Callable[[], Any], Future[Any]]] = collections.deque()
        self.uses_adapters = False  # the model is a peft model: every forward names each row's adapter
        self.generated_tokens = 0
        self.finished_requests = 0

    # -- public, called from the event loop -------------------------------------------------
    def between_steps(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run ``fn`` on the decoding thread between two steps (to change the model, e.g. load an
        adapter, while no forward pass runs); its result or error arrives in the future."""
        future: Future[Any] = Future()
        with self._cond:
            self._between_steps.append((fn, future))
            self._cond.notify()
        return future

    @property
    def model(self) -> Any:
        return self._model

    @model.setter
    def model(self, model: Any) -> None:  # only from a between_steps function
        self._model = model

    def cancel(self, job: GenerationJob) -> None:
        job.cancelled = True  # read by the worker at the next step

    def stats(self) -> dict[str, int]:
        return {
            "running": len(self._rows),
            "waiting": len(self._pending),
            "generated_tokens": self.generated_tokens,
            "finished_requests": self.finished_requests,
        }

    # -- worker thread -----------------------------------------------------------------------
    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                admitted = self._wait_for_work()
                if admitted is None:
                    return
                self._run_between_steps()
                if admitted:
                    self._guarded(self._prefill, admitted)
                if self._rows:
                    self._guarded(self._decode_step, None)

    def _run_between_steps(self) -> None:
        while self._between_steps:
            fn, future = self._between_steps.popleft()
            try:
                future.set_result(fn())
            except Exception as exc:  # noqa: BLE001 - the caller gets it
                future.set_exception(exc)

    def _wait_for_work(self) -> list[GenerationJob] | None:
        with self._cond:
            while not self._stopping and not self._pending and not self._rows and not self._between_steps:
                self._cond.wait()
            if self._stopping:
                for job in [*self._pending, *(r.job for r in self._rows)]:
                    job.emit(TokenEvent("", job.generated, "abort", RuntimeError("engine stopped")))
                return None
            admitted = []
            while self._pending and len(self._rows) + len(admitted) < self._max_batch:
                job = self._pending.popleft()
                if not job.cancelled:
                    admitted.append(job)
            return admitted

    def _guarded(self, step: Callable[[Any], None], jobs: list[GenerationJob] | None) -> None:
        """A failing forward pass fails the requests it touched, never the worker thread."""
        try:
            step(jobs)
        except Exception as exc:  # noqa: BLE001 - reported to every affected request
            logger.exception("generation step failed")
            victims = jobs if jobs is not None else [r.job for r in self._rows]
            for victim in victims:
                victim.emit(TokenEvent("", victim.generated, "error", exc))
            if jobs is None:
                self._rows, self._cache, self._mask = [], None, None

    def _prefill(self, jobs: list[GenerationJob]) -> None:
        """One forward pass for every admitted prompt, left-padded to the longest."""
        longest = max(len(job.prompt_ids) for job in jobs)
        ids = torch.zeros(len(jobs), longest, dtype=torch.long, device=self._device)
        mask = torch.zeros(len(jobs), longest, dtype=torch.long, device=self._device)
        for i, job in enumerate(jobs):
            n = len(job.prompt_ids)
            ids[i, longest - n:] = torch.tensor(job.prompt_ids, dtype=torch.long)
            mask[i, longest - n:] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        out = self._model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                          **self._adapter_kwargs(jobs))
        rows = [_Row(job=job, next_token=-1, length=len(job.prompt_ids)) for job in jobs]
        logits = out.logits[:, -1]
        _constrain(jobs, logits)
        keep = [i for i, row in enumerate(rows) if self._advance(row, logits[i])]
        if keep:
            self._merge(out.past_key_values, mask, keep)
            self._rows.extend(rows[i] for i in keep)

    def _decode_step(self, _: None) -> None:
        self._drop([i for i, r in enumerate(self._rows) if r.job.cancelled])
        if not self._rows:
            return
        batch = len(self._rows)
        input_ids = torch.tensor([[r.next_token] for r in self._rows], dtype=torch.long, device=self._device)
        positions = torch.tensor([[r.length] for r in self._rows], dtype=torch.long, device=self._device)
        self._mask = torch.cat([self._mask, self._mask.new_ones(batch, 1)], dim=1)
        out = self._model(
            input_ids=input_ids,
            attention_mask=self._mask,
            position_ids=positions,
            past_key_values=self._cache,
            use_cache=True,
            logits_to_keep=1,
            **self._adapter_kwargs([r.job for r in self._rows]),
        )
        self._cache = out.past_key_values
        logits = out.logits[:, -1, :]
        _constrain([r.job for r in self._rows], logits)
        greedy = [int(t) for t in logits.argmax(dim=-1).tolist()] if all(
            r.job.sampler.is_plain_greedy for r in self._rows
        ) else None
        finished = []
        for i, row in enumerate(self._rows):
            row.length += 1
            if not self._advance(row, logits[i], greedy[i] if greedy else None):
                finished.append(i)
        self._drop(finished)

    def _adapter_kwargs(self, jobs: list[GenerationJob]) -> dict[str, Any]:
        """peft's mixed-adapter batches: each row runs through its own LoRA (or none) in one forward."""
        if not self.uses_adapters:
            return {}
        return {"adapter_names": [job.adapter or "__base__" for job in jobs]}

    def _advance(self, row: _Row, logits: torch.Tensor, token: int | None = None) -> bool:
        """Sample the row's next token and stream it; return False when the row is done."""
        job = row.job
        if token is None:
            token = job.sampler.sample(logits.cpu() if logits.device.type != "cpu" else logits)
        if job.constraint is not None and not job.constraint.accept(token):
            job.emit(TokenEvent("", job.generated, "error", RuntimeError(f"sampled token {token} breaks the grammar")))
            return False
        job.sampler.observe(token)
        job.generated += 1
        self.generated_tokens += 1
        row.next_token = token
        if token in self._eos:
            return self._finish(job, job.detokenizer.flush(), "stop")
        text = job.detokenizer.push(token)
        if job.detokenizer.stopped:
            return self._finish(job, text, "stop")
        if job.generated >= job.max_new_tokens:
            return self._finish(job, text + job.detokenizer.flush(), "length")
        if job.cancelled:
            return False
        if text:
            job.emit(TokenEvent(text, job.generated))
        return True

    def _finish(self, job: GenerationJob, text: str, reason: str) -> bool:
        self.finished_requests += 1
        job.emit(TokenEvent(text, job.generated, reason))
        return False

    # -- KV cache bookkeeping ----------------------------------------------------------------
    def _merge(self, new_cache: Any, new_mask: torch.Tensor, keep: list[int]) -> None:
        """Stack freshly prefilled sequences (rows ``keep`` of the new cache) onto the running batch,
        left-padding the shorter side."""
        if len(keep) < new_mask.shape[0]:
            index = torch.tensor(keep, dtype=torch.long, device=self._device)
            new_mask = new_mask.index_select(0, index)
            for layer in new_cache.layers:
                layer.keys, layer.values = layer.keys.index_select(0, index), layer.values.index_select(0, index)
        if not self._rows:
            self._cache, self._mask = new_cache, new_mask
            return
        cur_len, new_len = self._mask.shape[1], new_mask.shape[1]
        target = max(cur_len, new_len)
        for old, new in zip(self._cache.layers, new_cache.layers):
            old.keys = torch.cat([_left_pad(old.keys, target - cur_len), _left_pad(new.keys, target - new_len)])
            old.values = torch.cat([_left_pad(old.values, target - cur_len), _left_pad(new.values, target - new_len)])
        self._mask = torch.cat(
            [F.pad(self._mask, (target - cur_len, 0)), F.pad(new_mask, (target - new_len, 0))]
        )

    def _drop(self, indices: list[int]) -> None:
        if not indices:
            return
        gone = set(indices)
        keep = [i for i in range(len(self._rows)) if i not in gone]
        self._rows = [self._rows[i] for i in keep]
        if not keep:
            self._cache, self._mask = None, None
            return
        index = torch.tensor(keep, dtype=torch.long, device=self._device)
        mask = self._mask.index_select(0, index)
        start = int((mask.sum(dim=0) > 0).nonzero()[0])  # columns that are padding for every row
        self._mask = mask[:, start:]
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, index)[..., start:, :]
            layer.values = layer.values.index_select(0, index)[..., start:, :]


def _constrain(jobs: list[GenerationJob], logits: torch.Tensor) -> None:
    """Mask the logits rows of constrained sequences; the other rows are left exactly as they are."""
    for i, job in enumerate(jobs):
        if job.constraint is not None:
            job.constraint.apply(logits[i])


def _left_pad(kv: torch.Tensor, amount: int) -> torch.Tensor:
    """Pad a ``[batch, heads, seq, dim]`` tensor with ``amount`` zero positions on the left."""
    return F.pad(kv, (0, 0, amount, 0)) if amount else kv


def check_cache_supported(cache: Any) -> None:
    """The batcher edits per-layer key/value tensors; only plain dynamic layers allow that."""
    from transformers.cache_utils import DynamicLayer

    kinds = {type(layer).__name__ for layer in getattr(cache, "layers", [])}
    if not kinds or any(type(layer) is not DynamicLayer for layer in cache.layers):
        raise ValueError(f"unsupported KV cache layers {sorted(kinds)}: the TRANSFORMERS engine needs a plain dynamic cache")
