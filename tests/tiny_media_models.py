"""Tiny random-weight vision/video/speech models, built locally, for the transformers media backends.

Outputs are junk: tests assert the response contract (keys, shapes, label sets), never the content.
"""

from __future__ import annotations

import json
from pathlib import Path

LABELS = {0: "cat", 1: "dog", 2: "car"}
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}


def build_tiny_vit(target: Path) -> Path:
    """ViT image classifier, 32x32 input, three labels."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, id2label=LABELS, label2id={v: k for k, v in LABELS.items()}, **SMALL)
    ViTForImageClassification(config).save_pretrained(target)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(target)
    return target


def build_tiny_clip(target: Path) -> Path:
    """CLIP with a character-level BPE vocabulary (vocab.json + merges.txt)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    target.mkdir(parents=True, exist_ok=True)
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list(".,' 0123456789")
    vocab = ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]
    (target / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (target / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer.from_pretrained(target)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(target)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={**SMALL, "vocab_size": len(vocab), "max_position_embeddings": 64,
                     "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
        vision_config={**SMALL, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(target)
    return target


def build_tiny_videomae(target: Path) -> Path:
    """VideoMAE video classifier: 4 frames of 32x32."""
    import torch
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification, VideoMAEImageProcessor

    torch.manual_seed(0)
    config = VideoMAEConfig(
        image_size=32, patch_size=8, num_frames=4, tubelet_size=2, id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()}, **SMALL,
    )
    VideoMAEForVideoClassification(config).save_pretrained(target)
    VideoMAEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(target)
    return target


def build_tiny_whisper(target: Path, tokenizer_json: Path) -> Path:
    """Whisper (d_model 64) using Whisper tiny.en's real tokenizer file."""
    import torch
    from transformers import (
        GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor, WhisperTokenizerFast,
    )

    tokenizer = WhisperTokenizerFast(tokenizer_file=str(tokenizer_json), bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(), tokenizer=tokenizer).save_pretrained(target)
    torch.manual_seed(0)
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    start = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    config = WhisperConfig(
        vocab_size=len(tokenizer), d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_target_positions=64,
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, decoder_start_token_id=start,
    )
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(  # explicit, else it is rebuilt from config.json on load
        max_length=16, is_multilingual=False, decoder_start_token_id=start, bos_token_id=eot, eos_token_id=eot,
        pad_token_id=eot, no_timestamps_token_id=tokenizer.convert_tokens_to_ids("<|notimestamps|>"),
    )
    model.save_pretrained(target)
    return target


def build_tiny_captioner(target: Path) -> Path:
    """ViT encoder + GPT-2 decoder (VisionEncoderDecoder), with a tiny byte-level BPE tokenizer."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, PreTrainedTokenizerFast, VisionEncoderDecoderConfig, VisionEncoderDecoderModel, ViTConfig, ViTImageProcessor

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["a photo of a cat", "a dog on a car", "hello world"] * 10, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="</s>", eos_token="</s>", pad_token="</s>")
    tokenizer.save_pretrained(target)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(target)
    torch.manual_seed(0)
    eos = tokenizer.eos_token_id
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(
        ViTConfig(image_size=32, patch_size=8, **SMALL),
        GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=eos, eos_token_id=eos),
    )
    config.decoder_start_token_id = config.pad_token_id = config.eos_token_id = eos
    model = VisionEncoderDecoderModel(config=config)
    model.generation_config.max_new_tokens = 8
    model.generation_config.decoder_start_token_id = model.generation_config.pad_token_id = eos
    model.save_pretrained(target)
    return target


def build_tiny_detr(target: Path) -> Path:
    """DETR with a tiny ResNet backbone (no timm), three labels."""
    import torch
    from transformers import DetrConfig, DetrForObjectDetection, DetrImageProcessor, ResNetConfig

    torch.manual_seed(0)
    backbone = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], out_features=["stage2"])
    config = DetrConfig(
        use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=backbone, d_model=32,
        encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=5, id2label=LABELS, label2id={v: k for k, v in LABELS.items()},
    )
    DetrForObjectDetection(config).save_pretrained(target)
    DetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 128}).save_pretrained(target)
    return target
