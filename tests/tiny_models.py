"""Tiny random-weight models built locally, to exercise real loading and generation code fast.

Their outputs are junk: tests assert contracts (shapes, determinism, batching equivalence), not text.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "what is the capital of france paris is the capital",
    "count from one to ten one two three four five six seven eight nine ten",
    "hello world this is a tiny language model for tests",
] * 20


def build_tiny_llama(target: Path, dtype: str = "float32", seed: int = 0, hidden_size: int = 64,
                     intermediate_size: int = 128, num_hidden_layers: int = 2) -> Path:
    """A small Llama (2 layers of width 64 unless told) with a byte-level BPE tokenizer trained on a few sentences."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    target.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["</s>", "<|user|>", "<|assistant|>", "<|system|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="</s>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(target)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=None, pad_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.save_pretrained(target)
    return target


# The layer shapes of the demo SmolLM2-135M (a LoRA for it needs only these).
SMOLLM2_SHAPES = SimpleNamespace(hidden_size=576, num_attention_heads=9, num_key_value_heads=3, num_hidden_layers=30,
                                 head_dim=64, intermediate_size=1536)


def lora_module_shapes(base_config: Any) -> dict[str, tuple[int, int]]:
    """(in features, out features) of each linear layer of a llama decoder layer, by peft module name."""
    hidden = base_config.hidden_size
    head_dim = getattr(base_config, "head_dim", None) or hidden // base_config.num_attention_heads
    q, kv = base_config.num_attention_heads * head_dim, base_config.num_key_value_heads * head_dim
    ffn = getattr(base_config, "intermediate_size", None) or 4 * hidden
    return {"q_proj": (hidden, q), "k_proj": (hidden, kv), "v_proj": (hidden, kv), "o_proj": (q, hidden),
            "gate_proj": (hidden, ffn), "up_proj": (hidden, ffn), "down_proj": (ffn, hidden)}


def build_lora(target: Path, base_config: Any, seed: int, rank: int = 4, scale: float = 0.2,
               modules: tuple[str, ...] = ("q_proj", "v_proj"), use_rslora: bool = False) -> Path:
    """A PEFT LoRA folder on ``modules`` with random non-zero A and B (trained LoRAs have
    non-zero B), written without loading the base model: only its config's shapes are needed."""
    import json

    import torch
    from safetensors.torch import save_file

    target.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    shapes = lora_module_shapes(base_config)
    tensors = {}
    for layer in range(base_config.num_hidden_layers):
        for module in modules:
            parent = "mlp" if module in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            key = f"base_model.model.model.layers.{layer}.{parent}.{module}"
            fan_in, fan_out = shapes[module]
            tensors[f"{key}.lora_A.weight"] = torch.randn(rank, fan_in, generator=generator) * scale
            tensors[f"{key}.lora_B.weight"] = torch.randn(fan_out, rank, generator=generator) * scale
    save_file(tensors, str(target / "adapter_model.safetensors"))
    (target / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": rank * 4, "lora_dropout": 0.0,
        "target_modules": list(modules), "bias": "none", "base_model_name_or_path": None, "inference_mode": True,
        "use_rslora": use_rslora,
    }))
    return target


CROSS_ENCODER_WORDS = sorted({w for line in CORPUS for w in line.split()} | {"what", "where", "who", "a", "of"})


def build_tiny_cross_encoder(target: Path) -> Path:
    """A 2-layer BERT with one output label (a relevance logit) and a WordPiece vocabulary of the
    corpus' words: the shape of a real reranker (e.g. ms-marco MiniLM cross-encoders), random weights."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    target.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = specials + letters + [f"##{c}" for c in letters] + CROSS_ENCODER_WORDS
    (target / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast.from_pretrained(target, model_max_length=64)
    tokenizer.save_pretrained(target)

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=64, num_labels=1, pad_token_id=0,
    )
    BertForSequenceClassification(config).save_pretrained(target)
    return target
