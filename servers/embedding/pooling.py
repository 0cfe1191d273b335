"""Token states to one vector per text, as sentence-transformers' ``Pooling`` and ``Normalize`` compute it.

Same formulas as sentence-transformers (``sentence_transformer/modules/pooling.py``), so a folder's
vectors match ``SentenceTransformer(folder).encode()``; padded positions never count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from configs.embedding_models import PoolingMode


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: PoolingMode) -> torch.Tensor:
    """``hidden`` [batch, tokens, dim] and ``mask`` [batch, tokens] (1 = real token) to [batch, dim]."""
    if mode == "cls":
        return hidden[:, 0]
    expanded = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "max":
        return hidden.masked_fill(expanded == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    if mode == "lasttoken":
        # the last real token whether the batch is padded on the right or the left
        seq_len = mask.shape[1]
        values, flipped = mask.flip(1).max(dim=1)
        last = torch.where(values == 0, torch.zeros_like(flipped), seq_len - flipped - 1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    summed = (hidden * expanded).sum(dim=1)
    counts = expanded.sum(dim=1).clamp(min=1e-9)
    if mode == "mean":
        return summed / counts
    if mode == "mean_sqrt_len_tokens":
        return summed / counts.sqrt()
    raise ValueError(f"unknown pooling mode {mode!r}")


def normalize(vectors: torch.Tensor) -> torch.Tensor:
    return F.normalize(vectors, p=2, dim=-1)

