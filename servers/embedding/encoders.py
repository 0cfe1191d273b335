"""The two model kinds of ``type: EMBEDDING``, each loaded from its folder and run on the model thread.

``SentenceEncoder``: ``AutoModel`` + the folder's pooling (``model_folder``), one vector per text.
``CrossEncoder``: ``AutoModelForSequenceClassification`` with one label, one relevance score per
(text_1, text_2) pair: the sigmoid of its logit, as sentence-transformers' ``CrossEncoder`` and
vLLM's score API answer for one-label models.

Both turn inputs into ``Features`` (token ids, cut to the model's cap or rejected past it) on the
caller's thread, and ``run`` a batch of features, padded to its longest, on the model thread.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from common.errors import InvalidRequestError
from configs.embedding_models import EmbeddingEngineConfig
from servers.embedding.model_folder import PoolingSpec, read_pooling_spec
from servers.embedding.pooling import normalize, pool

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Features:
    input_ids: list[int]
    token_type_ids: list[int] | None = None  # pairs only: which segment each token belongs to


class LoadedModel:
    """What both kinds share: device, dtype, threads, tokenizer and the per-text token cap."""

    def __init__(self, source: str, cfg: EmbeddingEngineConfig, model_cls: Any, spec_max: int | None = None) -> None:
        torch.set_num_threads(cfg.num_threads or os.cpu_count() or 1)
        self.cfg = cfg
        self.device = "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
        common = {"trust_remote_code": cfg.trust_remote_code, "revision": cfg.revision}
        self.hf_config = AutoConfig.from_pretrained(source, **common)
        self.tokenizer = AutoTokenizer.from_pretrained(source, **common)
        self.model = model_cls.from_pretrained(source, dtype=self._dtype(), **common).to(self.device).eval()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id or 0
        self.vocab_size = int(self.model.get_input_embeddings().weight.shape[0])
        self.max_length = self._max_length(spec_max)

    def _dtype(self) -> torch.dtype:
        if self.cfg.dtype == "auto":
            return torch.float16 if self.device == "cuda" else torch.float32
        return getattr(torch, self.cfg.dtype)

    def _max_length(self, spec_max: int | None) -> int:
        """The smallest of: engine_kwargs, sentence_bert_config.json, the tokenizer's and the model's limits."""
        limits = [self.cfg.max_seq_length, spec_max, getattr(self.hf_config, "max_position_embeddings", None)]
        model_max = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(model_max, int) and model_max < 1_000_000:  # transformers' "no limit" is a huge int
            limits.append(model_max)
        return min(int(v) for v in limits if v) if any(limits) else 512

    def over_limit(self, features: Sequence[Features]) -> int | None:
        """The first input longer than the cap (only possible with ``truncate: false``: the tokenizer then
        cuts at the cap + 1, so anything that long was over it), or None."""
        return next((i for i, f in enumerate(features) if len(f.input_ids) > self.max_length), None)

    def _cap(self) -> int:
        return self.max_length if self.cfg.truncate else self.max_length + 1

    def _batch(self, features: Sequence[Features]) -> dict[str, torch.Tensor]:
        """Right-padded tensors for one forward pass."""
        width = max(len(f.input_ids) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        types = torch.zeros((len(features), width), dtype=torch.long) if features[0].token_type_ids is not None else None
        for row, f in enumerate(features):
            n = len(f.input_ids)
            ids[row, :n] = torch.tensor(f.input_ids)
            mask[row, :n] = 1
            if types is not None and f.token_type_ids is not None:
                types[row, :n] = torch.tensor(f.token_type_ids)
        batch = {"input_ids": ids, "attention_mask": mask}
        if types is not None:
            batch["token_type_ids"] = types
        return {k: v.to(self.device) for k, v in batch.items()}


class SentenceEncoder(LoadedModel):
    def __init__(self, source: str, cfg: EmbeddingEngineConfig) -> None:
        self.spec: PoolingSpec = read_pooling_spec(Path(source), cfg)
        super().__init__(source, cfg, AutoModel, self.spec.max_seq_length)
        self.dimensions = int(self.hf_config.hidden_size)
        logger.info("sentence encoder: %s pooling, normalize=%s, max %d tokens, %d dimensions",
                    self.spec.mode, self.spec.normalize, self.max_length, self.dimensions)

    def encode_texts(self, texts: Sequence[str]) -> list[Features]:
        if self.spec.lowercase:
            texts = [t.lower() for t in texts]
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self._cap(), return_token_type_ids=False,
                                 return_attention_mask=False)["input_ids"]
        return [Features(ids) for ids in encoded]

    def encode_ids(self, sequences: Sequence[Sequence[int]], param: str = "input") -> list[Features]:
        """Token ids go to the model as given (special tokens are the caller's), cut like texts."""
        for i, ids in enumerate(sequences):
            bad = next((t for t in ids if not 0 <= t < self.vocab_size), None)
            if bad is not None:
                raise InvalidRequestError(f"{param}[{i}]: token id {bad} is outside the model's vocabulary of {self.vocab_size}",
                                          param=param)
        return [Features(list(ids[: self._cap()])) for ids in sequences]

    @torch.inference_mode()
    def run(self, features: Sequence[Features]) -> list[list[float]]:
        batch = self._batch(features)
        hidden = self.model(**batch).last_hidden_state
        vectors = pool(hidden, batch["attention_mask"], self.spec.mode).float()
        if self.spec.normalize:
            vectors = normalize(vectors)
        return vectors.cpu().tolist()


class CrossEncoder(LoadedModel):
    def __init__(self, source: str, cfg: EmbeddingEngineConfig) -> None:
        super().__init__(source, cfg, AutoModelForSequenceClassification)
        labels = int(getattr(self.hf_config, "num_labels", 1))
        if labels != 1:
            raise ValueError(f"mode cross_encoder needs a model with one output label (a relevance logit); this one has {labels}")
        logger.info("cross-encoder: max %d tokens per pair", self.max_length)

    def encode_pairs(self, text_1: Sequence[str], text_2: Sequence[str]) -> list[Features]:
        """Each pair as one sequence ([CLS] a [SEP] b [SEP] for BERT), the longer text cut first past the cap."""
        encoded = self.tokenizer(list(text_1), list(text_2), truncation=True, max_length=self._cap(), return_attention_mask=False)
        ids, types = encoded["input_ids"], encoded.get("token_type_ids")
        return [Features(x, types[i] if types is not None else None) for i, x in enumerate(ids)]

    @torch.inference_mode()
    def run(self, features: Sequence[Features]) -> list[float]:
        logits = self.model(**self._batch(features)).logits[:, 0]
        return torch.sigmoid(logits.float()).cpu().tolist()
