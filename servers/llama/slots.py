"""Continuous batching on llama.cpp's batch API: ``n_parallel`` slots, one ``llama_decode`` per step.

Each slot is one llama.cpp sequence (its own KV stream). A step puts into one batch the next token
of every generating slot and, in the room left (``n_batch``), prompt tokens of slots still reading
their prompt, so a request that arrives mid-generation joins at the next step, and a finished or
cancelled one leaves at once.

Prompt prefixes are read once. A slot keeps its tokens in the KV cache after its request ends: the
next request whose prompt starts the same way (a chat's earlier turns) goes to the slot with the
longest common prefix and reads only the rest. And a request whose prompt shares at least
``MIN_SHARED_PREFIX`` tokens with another slot's (a system prompt common to many users, the same
question asked by several clients at once) copies that slot's cache (the cells it uses, through
llama.cpp's sequence state: ``GgufModel.copy_prefix``) instead of computing it again, waiting a step or
two if the other slot is still reading those tokens.

LoRA adapters (``servers.llama.lora``) apply to the whole context, so a step whose slots name different
adapters (or some the base model) makes one ``llama_decode`` per adapter, each with its adapter set,
the context's current adapter first (what llama-server does). A step whose slots all use one adapter,
or none (every engine without adapters), is one decode with no adapter call, as before. A slot's
cache is computed with its adapter: its prefix is reused, or copied to another slot, only for a
request on the same adapter.

Sampling is llama.cpp's own sampler chain per request (a grammar for constrained output, penalties,
top-k, top-p, temperature, a seeded distribution), applied to the request's row of the step's logits. A
plain greedy request (no grammar, no penalties) takes the row's argmax directly: the token llama.cpp's
greedy sampler picks (the first of equal maxima), without the chain copying the whole vocabulary's logits
into a candidate list for each token (53 µs against 7 µs per token for SmolLM2's 49,152 tokens: about 1%
of a step, on the thread the decode waits for).

Everything here runs on the engine's model thread; ``submit``/``cancel``/``stop`` are safe from others.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from configs.llm_models import LLMParams
from servers.generation.decoding_loop import DecodingLoop
from servers.generation.detokenizer import IncrementalDetokenizer
from servers.generation.token_events import TokenEvent
from servers.llama.gguf_model import GgufModel
from servers.llama.lora import LoraSwitch

logger = logging.getLogger(__name__)

RANDOM_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: llama.cpp draws a random seed
# Shorter shared prefixes are read again: the opening tokens of a chat template, which most prompts share,
# are not worth a copy (and a wait while the other slot still reads them).
MIN_SHARED_PREFIX = 32


@dataclass
class LlamaJob:
    request_id: str
    prompt_ids: list[int]
    max_new_tokens: int
    params: LLMParams
    detokenizer: IncrementalDetokenizer
    emit: Callable[[TokenEvent], None]
    grammar: str | None = None  # GBNF the output must match (servers.llama.grammar), None for free text
    adapter: str | None = None  # the LoRA adapter it runs through (an id of the engine's LoraSwitch), None: the base
    cancelled: bool = False
    generated: int = 0


@dataclass
class _Slot:
    seq_id: int
    cached: list[int] = field(default_factory=list)  # tokens in this sequence's KV cache, in order
    job: LlamaJob | None = None
    to_read: list[int] = field(default_factory=list)  # prompt tokens not yet decoded
    next_token: int | None = None  # sampled, not yet in the cache
    sampler: Any = None  # the request's llama.cpp sampler chain; None for a plain greedy request (argmax)
    donor: "_Slot | None" = None  # the slot whose cache this one copies its prompt's first ``shared`` tokens from
    shared: int = 0
    adapter: str | None = None  # the LoRA adapter its cache was computed with

    def prefix_for(self, job: LlamaJob) -> int:
        """Tokens of the job's prompt this slot's cache holds (none when computed with another adapter)."""
        return common_prefix(self.cached, job.prompt_ids) if self.adapter == job.adapter else 0


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class SlotScheduler(DecodingLoop):
    def __init__(self, model: GgufModel, loras: LoraSwitch | None = None) -> None:
        super().__init__()
        self._model = model
        self._loras = loras
        self._lib = model.llama.lib
        self._slots = [_Slot(seq_id=i) for i in range(model.n_parallel)]
        self._capacity = max(model.n_batch, model.n_parallel)
        self.generated_tokens = 0
        self.finished_requests = 0
        self.reused_prompt_tokens = 0  # prompt tokens found in the slot's own cache
        self.shared_prompt_tokens = 0  # prompt tokens copied from another slot's cache

    # -- from any thread ---------------------------------------------------------------------
    def cancel(self, job: LlamaJob) -> None:
        job.cancelled = True  # its slot is freed at the next step
        with self._cond:
            self._cond.notify()

    def stats(self) -> dict[str, int]:
        return {"running": sum(s.job is not None for s in self._slots), "waiting": len(self._pending),
                "slots": len(self._slots), "generated_tokens": self.generated_tokens,
                "finished_requests": self.finished_requests, "reused_prompt_tokens": self.reused_prompt_tokens,
                "shared_prompt_tokens": self.shared_prompt_tokens,
                **({"adapter_switches": self._loras.switches} if self._loras is not None else {})}

    # -- model thread ------------------------------------------------------------------------
    def _run(self) -> None:
        batch = self._lib.llama_batch_init(self._capacity, 0, 1)
        try:
            while self._wait_for_work():
                self._drop_cancelled()
                self._admit()
                self._copy_shared_prefixes()
                if any(s.job is not None for s in self._slots):
                    self._step(batch)
        except BaseException as exc:  # noqa: BLE001 - every waiting request hears of it, then the loop is dead
            logger.exception("llama.cpp decoding loop of %s failed", self._model.path.name)
            self._fail_all(exc)
            raise
        finally:
            self._lib.llama_batch_free(batch)
            for slot in self._slots:
                self._free_sampler(slot)
            if self._stopping:
                self._fail_all(RuntimeError("engine stopped"))

    def _wait_for_work(self) -> bool:
        """Block until a slot is busy or a request waits for a free one; False once stopping."""
        with self._cond:
            while not self._stopping:
                busy = any(s.job is not None for s in self._slots)
                if busy or self._pending:
                    return True
                self._cond.wait()
            return False

    def _drop_cancelled(self) -> None:
        for slot in self._slots:
            if slot.job is not None and slot.job.cancelled:
                self._release(slot)

    def _admit(self) -> None:
        free = [s for s in self._slots if s.job is None]
        while free:
            with self._cond:
                job = self._pending.popleft() if self._pending else None
            if job is None:
                return
            if job.cancelled:
                continue
            slot = max(free, key=lambda s: s.prefix_for(job))
            free.remove(slot)
            self._assign(slot, job)

    def _assign(self, slot: _Slot, job: LlamaJob) -> None:
        # at least the prompt's last token is decoded again: its logits give the first new token
        limit = len(job.prompt_ids) - 1
        keep = min(slot.prefix_for(job), limit)
        slot.adapter = job.adapter
        donor, shared = self._donor(slot, job.prompt_ids, limit)
        if shared >= keep + MIN_SHARED_PREFIX:
            keep, slot.donor, slot.shared = 0, donor, shared  # reads nothing until the copy (next steps)
        self._lib.llama_memory_seq_rm(self._model.memory, slot.seq_id, keep, -1)
        self.reused_prompt_tokens += keep
        slot.cached = job.prompt_ids[:keep]
        slot.to_read = job.prompt_ids[keep:]
        slot.job, slot.next_token = job, None
        slot.sampler = self._sampler(job.params, job.grammar)

    def _donor(self, slot: _Slot, prompt: list[int], limit: int) -> tuple[_Slot | None, int]:
        """The other slot whose cache holds, or will hold once it read its prompt, the longest prefix of ``prompt``
        (computed with the same adapter)."""
        best, shared = None, 0
        for other in self._slots:
            if other is not slot and other.donor is None and other.adapter == slot.adapter:
                n = min(common_prefix(other.cached + other.to_read, prompt), limit)
                if n > shared:
                    best, shared = other, n
        return best, shared

    def _copy_shared_prefixes(self) -> None:
        """Slots waiting for a donor copy its cache once it holds their prefix; if the donor went another way
        (cancelled, reassigned), they read their whole prompt themselves."""
        for slot in self._slots:
            donor = slot.donor
            if donor is None or slot.job is None:
                continue
            prompt = slot.job.prompt_ids
            if donor.adapter != slot.adapter:  # the donor took a request on another adapter
                slot.cached, slot.to_read = [], list(prompt)
            elif common_prefix(donor.cached, prompt) >= slot.shared:
                if self._model.copy_prefix(donor.seq_id, slot.seq_id, slot.shared):
                    slot.cached, slot.to_read = prompt[:slot.shared], prompt[slot.shared:]
                    self.shared_prompt_tokens += slot.shared
                else:  # llama.cpp found no room for the cells: the slot reads its prompt itself
                    slot.cached, slot.to_read = [], list(prompt)
            elif common_prefix(donor.cached + donor.to_read, prompt) < slot.shared:
                slot.cached, slot.to_read = [], list(prompt)
            else:
                continue  # the donor reads those tokens in this step
            slot.donor, slot.shared = None, 0

    def _sampler(self, p: LLMParams, grammar: str | None) -> Any:
        """The request's sampler chain; None when it is plain greedy (``_sample`` takes the argmax)."""
        penalties = p.frequency_penalty or p.presence_penalty or p.repetition_penalty != 1.0
        if p.temperature == 0 and grammar is None and not penalties:
            return None
        lib = self._lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        add = lambda s: lib.llama_sampler_chain_add(chain, s)  # noqa: E731
        if grammar is not None:  # first: what it forbids never reaches the other samplers
            add(lib.llama_sampler_init_grammar(self._model.vocab, grammar.encode(), b"root"))
        if penalties:
            # over the generated tokens, as OpenAI defines frequency and presence penalties
            add(lib.llama_sampler_init_penalties(self._model.n_vocab, p.max_tokens, p.repetition_penalty,
                                                 p.frequency_penalty, p.presence_penalty))
        if p.temperature == 0:
            add(lib.llama_sampler_init_greedy())
            return chain
        if p.top_k > 0:
            add(lib.llama_sampler_init_top_k(p.top_k))
        if p.top_p < 1.0:
            add(lib.llama_sampler_init_top_p(p.top_p, 1))
        add(lib.llama_sampler_init_temp(p.temperature))
        add(lib.llama_sampler_init_dist(RANDOM_SEED if p.seed is None else p.seed & 0xFFFFFFFF))
        return chain

    def _step(self, batch: Any) -> None:
        """One llama_decode over the busy slots per adapter among them (one in all without adapters)."""
        if self._loras is None:
            self._decode(batch, self._slots)
            return
        for adapter, slots in self._adapter_groups():
            self._loras.use(adapter)
            self._decode(batch, slots)

    def _adapter_groups(self) -> list[tuple[str | None, list[_Slot]]]:
        """The busy slots by adapter, the context's current adapter first: it needs no switch, and the last group's
        adapter stays set for the next step's first decode."""
        groups: dict[str | None, list[_Slot]] = {}
        for slot in self._slots:
            if slot.job is not None:
                groups.setdefault(slot.adapter, []).append(slot)
        current = self._loras.current if self._loras is not None else None
        return sorted(groups.items(), key=lambda group: group[0] != current)

    def _decode(self, batch: Any, slots: list[_Slot]) -> None:
        """One llama_decode over ``slots``; then each slot whose logits came out samples a token."""
        n, outputs, reads = 0, [], []
        for slot in slots:  # generating slots first: one token each, never starved by prompts
            if slot.job is not None and slot.next_token is not None:
                self._put(batch, n, slot.next_token, len(slot.cached), slot.seq_id, True)
                outputs.append((slot, n))
                slot.cached.append(slot.next_token)
                slot.next_token = None
                n += 1
        for slot in slots:
            if slot.job is None or slot.donor is not None or not slot.to_read or n >= self._capacity:
                continue
            take = slot.to_read[: self._capacity - n]
            for i, token in enumerate(take):
                last = len(take) == len(slot.to_read) and i == len(take) - 1
                self._put(batch, n, token, len(slot.cached) + i, slot.seq_id, last)
                if last:
                    outputs.append((slot, n))
                n += 1
            reads.append((slot, take))
        for slot, take in reads:
            slot.cached.extend(take)
            del slot.to_read[: len(take)]
        if n == 0:  # every slot of the group waits for a donor's prefix
            return
        batch.n_tokens = n
        status = self._lib.llama_decode(self._model.ctx, batch)
        if status != 0:
            self._fail_step(outputs, reads, RuntimeError(f"llama_decode returned {status}"))
            return
        for slot, index in outputs:
            self._on_token(slot, self._sample(slot, index))

    def _sample(self, slot: _Slot, index: int) -> int:
        if slot.sampler is None:
            return self._model.greedy_token(index)
        return int(self._lib.llama_sampler_sample(slot.sampler, self._model.ctx, index))

    @staticmethod
    def _put(batch: Any, i: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq_id
        batch.logits[i] = logits

    def _on_token(self, slot: _Slot, token: int) -> None:
        job = slot.job
        assert job is not None
        if job.cancelled:
            self._release(slot)
            return
        job.generated += 1
        self.generated_tokens += 1
        if self._model.is_end(token):
            return self._finish(slot, job.detokenizer.flush(), "stop")
        text = job.detokenizer.push(token)
        if job.detokenizer.stopped:
            return self._finish(slot, text, "stop")
        if job.generated >= job.max_new_tokens or len(slot.cached) + 1 >= self._model.n_ctx_seq:
            return self._finish(slot, text + job.detokenizer.flush(), "length")
        slot.next_token = token
        if text:
            job.emit(TokenEvent(text, job.generated))

    def _finish(self, slot: _Slot, text: str, reason: str) -> None:
        job = slot.job
        assert job is not None
        self.finished_requests += 1
        self._release(slot)  # first: a client that got its last chunk sees its slot free
        job.emit(TokenEvent(text, job.generated, reason))

    def _release(self, slot: _Slot) -> None:
        """The slot takes the next request; its cache stays for a later prompt with the same start."""
        slot.job, slot.next_token, slot.to_read, slot.donor, slot.shared = None, None, [], None, 0
        self._free_sampler(slot)  # its cache and adapter stay: a later request on that adapter reuses them

    def _free_sampler(self, slot: _Slot) -> None:
        if slot.sampler is not None:
            self._lib.llama_sampler_free(slot.sampler)
            slot.sampler = None

    def _fail_step(self, outputs: list[tuple[_Slot, int]], reads: list[tuple[_Slot, list[int]]], exc: Exception) -> None:
        """A failed decode leaves the step's sequences in an unknown state: they end with the error and
        their caches are cleared."""
        for slot in {id(s): s for s, _ in [*outputs, *((s, 0) for s, _ in reads)]}.values():
            job = slot.job
            self._lib.llama_memory_seq_rm(self._model.memory, slot.seq_id, 0, -1)
            slot.cached = []
            self._release(slot)
            if job is not None:
                job.emit(TokenEvent("", job.generated, "error", exc))

    def _fail_all(self, exc: BaseException) -> None:
        with self._cond:
            waiting, self._pending = list(self._pending), collections.deque()
        for job in [*waiting, *(s.job for s in self._slots if s.job is not None)]:
            job.emit(TokenEvent("", job.generated, "error", exc))
        for slot in self._slots:
            slot.job = None
