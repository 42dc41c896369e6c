"""Tiny random Hugging Face checkpoints saved to a directory, built offline for the tests.

Each writes what a real Hub checkpoint holds: config.json, model.safetensors, a fast
tokenizer (a WordLevel one trained here) and preprocessor_config.json.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers as t

from polymodal.data.text import TextTokenizer, train_tokenizer

WORDS = [
    "a",
    "photo",
    "of",
    "the",
    "red",
    "blue",
    "green",
    "small",
    "big",
    "circle",
    "square",
    "triangle",
    "cat",
    "dog",
    "on",
    "left",
    "right",
]
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
IMAGE_SIZE = 32
# train_tokenizer's fixed specials: [PAD]=0 [UNK]=1 [BOS]=2 [EOS]=3 [MASK]=4.
PAD_ID, BOS_ID, EOS_ID = 0, 2, 3


def save_tokenizer(directory: Path) -> TextTokenizer:
    """A WordLevel tokenizer saved the way transformers saves one (tokenizer.json + config)."""
    tok = train_tokenizer([" ".join(WORDS)] * 2, vocab_size=64)
    hf = t.PreTrainedTokenizerFast(
        tokenizer_object=tok.backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        mask_token="[MASK]",
    )
    hf.save_pretrained(directory)
    return tok


def _ids(vocab_size: int) -> dict[str, int]:
    return {"vocab_size": vocab_size, "pad_token_id": PAD_ID, "bos_token_id": BOS_ID, "eos_token_id": EOS_ID}


def save_tiny_clip(directory: Path, image_size: int = IMAGE_SIZE, text_length: int = 16) -> t.CLIPModel:
    directory.mkdir(parents=True, exist_ok=True)
    tok = save_tokenizer(directory)
    config = t.CLIPConfig(
        text_config={**TINY, **_ids(tok.vocab_size), "max_position_embeddings": text_length},
        vision_config={**TINY, "image_size": image_size, "patch_size": 8},
        projection_dim=24,
    )
    torch.manual_seed(0)
    clip = t.CLIPModel(config).eval()
    clip.save_pretrained(directory)
    t.CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    ).save_pretrained(directory)
    return clip


def save_tiny_blip(directory: Path) -> t.BlipForConditionalGeneration:
    directory.mkdir(parents=True, exist_ok=True)
    tok = save_tokenizer(directory)
    config = t.BlipConfig(
        text_config={**TINY, **_ids(tok.vocab_size), "sep_token_id": EOS_ID, "max_position_embeddings": 32},
        vision_config={**TINY, "image_size": IMAGE_SIZE, "patch_size": 8},
        projection_dim=32,
    )
    torch.manual_seed(0)
    model = t.BlipForConditionalGeneration(config).eval()
    model.save_pretrained(directory)
    t.BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(directory)
    return model


def save_tiny_vision_encoder_decoder(directory: Path) -> t.VisionEncoderDecoderModel:
    """ViT encoder + GPT-2 decoder with cross-attention (the nlpconnect/vit-gpt2 layout)."""
    directory.mkdir(parents=True, exist_ok=True)
    tok = save_tokenizer(directory)
    torch.manual_seed(0)
    encoder = t.ViTModel(t.ViTConfig(**TINY, image_size=IMAGE_SIZE, patch_size=8))
    decoder = t.GPT2LMHeadModel(
        t.GPT2Config(
            n_embd=32,
            n_layer=2,
            n_head=2,
            n_positions=32,
            add_cross_attention=True,
            is_decoder=True,
            tie_word_embeddings=False,  # tied, a random GPT-2 just repeats its input token
            **_ids(tok.vocab_size),
        )
    )
    model = t.VisionEncoderDecoderModel(encoder=encoder, decoder=decoder).eval()
    model.config.decoder_start_token_id = BOS_ID
    model.config.pad_token_id = PAD_ID
    model.config.eos_token_id = EOS_ID
    model.generation_config.decoder_start_token_id = BOS_ID
    model.generation_config.pad_token_id = PAD_ID
    model.generation_config.eos_token_id = EOS_ID
    model.save_pretrained(directory)
    t.ViTImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(directory)
    return model
