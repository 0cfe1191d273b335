"""A GGUF model loaded by llama.cpp: its weights, one context of ``n_parallel`` sequences, its vocabulary.

With ``embeddings=True`` the context returns pooled hidden states instead of logits (an embedding model,
``type: LLAMA_CPP_EMBEDDING``, ``servers.llama.embeddings``); generation contexts are unchanged.

``GgufTokenizer`` gives the vocabulary the face of a Hugging Face tokenizer (``chat_template``,
``apply_chat_template``, ``__call__``, ``decode``), so ``servers.chat_prompt`` builds LLAMA_CPP
prompts with the same code, and the same Jinja rendering, as TRANSFORMERS does: the same messages
give the same prompt tokens on both engines.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any

from servers.llama.library import llama_library
from servers.llama.resident import anonymous_ranges, release_cache_pages, resident_bytes

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"


class GgufLoadError(RuntimeError):
    """The file cannot be served: not GGUF, truncated, or an architecture llama.cpp does not know."""


def check_gguf_file(path: Path) -> None:
    """Fail with a message naming the file before llama.cpp is asked to read it."""
    if not path.is_file():
        raise GgufLoadError(f"{path}: no such file")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise GgufLoadError(f"{path}: not a GGUF file (it starts with {magic!r}, a GGUF file with {GGUF_MAGIC!r})")


class GgufModel:
    """Weights and context of one GGUF model; every method runs on the engine's model thread.

    ``amx``: whether llama.cpp may put the weights in its AMX buffers, where the library was built with AMX
    kernels (``-march=native`` on a 4th-generation or later Xeon); None: where they compute right. Built by GCC 12,
    those kernels load a tile configuration the compiler left half-written (ggml-org/llama.cpp#26954), and the
    first batch of more than one token kills the process with a general protection fault; the Makefile builds
    them with ``-fno-dse -fno-tree-dse``, which keep its stores. A library that fails the probe
    (``LlamaLibrary.amx_works``) loads the weights without llama.cpp's extra buffer types (AMX, and the weight
    repacking that shares that switch) (docs/engines.md#amx)."""

    def __init__(self, path: Path, *, n_ctx: int, n_parallel: int, n_batch: int, n_threads: int,
                 embeddings: bool = False, pooling_type: int | None = None, cache_on_demand: bool = False,
                 amx: bool | None = None) -> None:
        check_gguf_file(path)
        self.path = path
        self.llama = llama_library()
        lib = self.llama.lib
        self.llama.take_errors()
        model_params = lib.llama_model_default_params()
        model_params.n_gpu_layers = 0
        if self.llama.has_amx and not self._amx_on(amx):
            model_params.use_extra_bufts = False
        self.model = lib.llama_model_load_from_file(str(path).encode(), model_params)
        if not self.model:
            raise GgufLoadError(f"{path}: llama.cpp cannot load it: {self._reason('the file is truncated or damaged')}")
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = lib.llama_model_n_ctx_train(self.model)
        self.n_ctx_seq = min(n_ctx, self.n_ctx_train) if self.n_ctx_train > 0 else n_ctx
        ctx_params = lib.llama_context_default_params()
        ctx_params.n_ctx = self.n_ctx_seq * n_parallel
        ctx_params.n_seq_max = n_parallel
        ctx_params.n_batch = ctx_params.n_ubatch = n_batch
        ctx_params.n_threads = ctx_params.n_threads_batch = n_threads
        ctx_params.kv_unified = False  # one KV stream per sequence: each slot keeps its own prompt cache
        ctx_params.no_perf = True
        if embeddings:  # llama.cpp pools each sequence's last hidden states (llama_get_embeddings_seq)
            ctx_params.embeddings = True
            if pooling_type is not None:  # else the file's own <arch>.pooling_type
                ctx_params.pooling_type = pooling_type
        with self.llama.context_lock, self.llama.capture() as log_lines:
            before = anonymous_ranges() if cache_on_demand else []
            self.ctx = lib.llama_init_from_model(self.model, ctx_params)
            # the zeroed KV cache's pages go back to the kernel and return as slots fill (servers.llama.resident)
            self.released_ranges = release_cache_pages(before, log_lines) if cache_on_demand and self.ctx else []
        if not self.ctx:
            lib.llama_model_free(self.model)
            self.model = None
            raise GgufLoadError(f"{path}: llama.cpp cannot make a context of {ctx_params.n_ctx} tokens: "
                                f"{self._reason('not enough memory?')}")
        self.memory = lib.llama_get_memory(self.ctx)  # None for models without a KV cache (BERT encoders)
        self.n_parallel, self.n_batch = n_parallel, n_batch
        self._pieces: dict[int, bytes] = {}

    @property
    def released_bytes(self) -> int:
        """The bytes of the context's new buffers handed back at start: the KV cache and the other all-zero buffers
        (0 where ``kv_cache_on_demand`` is off or not possible)."""
        return sum(end - start for start, end in self.released_ranges)

    def context_resident_bytes(self) -> int:
        """How much of the released memory (the KV cache; llama.cpp's output and compute buffers, zero at start
        too) is resident now (-1: the kernel will not say; ``servers.llama.resident.resident_bytes``)."""
        return resident_bytes(self.released_ranges)

    def _reason(self, default: str) -> str:
        errors = self.llama.take_errors()
        return "; ".join(errors[-3:]) if errors else default

    # -- sequences ----------------------------------------------------------------------------
    def copy_prefix(self, src: int, dst: int, n_tokens: int) -> bool:
        """Sequence ``dst`` (empty) gets the cache of ``src``'s first ``n_tokens`` positions; False when llama.cpp
        refused, and ``dst`` stays empty.

        Through llama.cpp's sequence state (the cells ``src`` uses, serialized and read back into ``dst``'s
        stream) rather than ``llama_memory_seq_cp``, which between streams copies the whole stream: n_ctx cells,
        mostly empty ones, a multiple of the bytes, and every page of ``dst``'s stream made resident
        (``servers.llama.resident``)."""
        lib = self.llama.lib
        size = lib.llama_state_seq_get_size(self.ctx, src)
        buf = (ctypes.c_uint8 * size)()
        written = lib.llama_state_seq_get_data(self.ctx, buf, size, src) if size else 0
        if not written or not lib.llama_state_seq_set_data(self.ctx, buf, written, dst):
            lib.llama_memory_seq_rm(self.memory, dst, 0, -1)
            return False
        lib.llama_memory_seq_rm(self.memory, dst, n_tokens, -1)
        return True

    def greedy_token(self, index: int) -> int:
        """The most likely token of batch row ``index``'s logits (the first of equal maxima, as llama.cpp's
        greedy sampler picks)."""
        import numpy as np

        logits = self.llama.lib.llama_get_logits_ith(self.ctx, index)
        return int(np.ctypeslib.as_array(logits, shape=(self.n_vocab,)).argmax())

    # -- vocabulary ---------------------------------------------------------------------------
    def tokenize(self, text: str, add_special: bool) -> list[int]:
        lib, data = self.llama.lib, text.encode("utf-8")
        size = len(data) + 8
        while True:
            buf = (lib.llama_token * size)()
            n = lib.llama_tokenize(self.vocab, data, len(data), buf, size, add_special, True)
            if n >= 0:
                return list(buf[:n])
            size = -n

    def piece(self, token: int) -> bytes:
        """The token's bytes as generated text (special tokens render as nothing)."""
        cached = self._pieces.get(token)
        if cached is None:
            buf = ctypes.create_string_buffer(64)
            n = self.llama.lib.llama_token_to_piece(self.vocab, token, buf, 64, 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = self.llama.lib.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
            cached = self._pieces[token] = buf.raw[:n]
        return cached

    def special_text(self, token: int) -> str:
        buf = ctypes.create_string_buffer(256)
        n = self.llama.lib.llama_token_to_piece(self.vocab, token, buf, 256, 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")

    def is_end(self, token: int) -> bool:
        return bool(self.llama.lib.llama_vocab_is_eog(self.vocab, token))

    def metadata(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = self.llama.lib.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):  # a long template: ask again with room for all of it
            buf = ctypes.create_string_buffer(n + 1)
            self.llama.lib.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace")

    def _amx_on(self, amx: bool | None) -> bool:
        """Whether the weights go to the AMX buffers of a library built with AMX: as the entry says, else as the
        probe found (the console says which, and why not)."""
        if amx is False:
            logger.info("%s: llama.cpp's AMX kernels are off (engine_kwargs.amx), and with them its weight repacking",
                        self.path.name)
        if amx is not None:
            return amx
        works, why = self.llama.amx_works
        if works:
            logger.info("%s: llama.cpp's AMX kernels are on (a probe computed right with them)", self.path.name)
        else:
            logger.warning("%s: llama.cpp's AMX kernels are off, and with them its weight repacking: %s "
                           "(docs/engines.md#amx)", self.path.name, why)
        return works

    def close(self) -> None:
        lib = self.llama.lib
        if getattr(self, "ctx", None):
            lib.llama_free(self.ctx)
            self.ctx = None
            self.released_ranges = []  # unmapped with the context
        if getattr(self, "model", None):
            lib.llama_model_free(self.model)
            self.model = None


class GgufTokenizer:
    """The parts of a Hugging Face tokenizer that ``servers.chat_prompt`` uses, on llama.cpp's vocabulary
    and the GGUF's own chat template (rendered by transformers' Jinja environment, as TRANSFORMERS does)."""

    def __init__(self, model: GgufModel) -> None:
        self._model = model
        self.chat_template = model.metadata("tokenizer.chat_template")
        lib = model.llama.lib
        self._special = {"bos_token": model.special_text(lib.llama_vocab_bos(model.vocab)),
                         "eos_token": model.special_text(lib.llama_vocab_eos(model.vocab))}

    def apply_chat_template(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
                            tokenize: bool = False, add_generation_prompt: bool = True) -> str:
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, _ = render_jinja_template(conversations=[messages], tools=tools, chat_template=self.chat_template,
                                            add_generation_prompt=add_generation_prompt, **self._special)
        return rendered[0]

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": self._model.tokenize(text, add_special_tokens)}

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return b"".join(self._model.piece(i) for i in ids).decode("utf-8", errors="replace")
