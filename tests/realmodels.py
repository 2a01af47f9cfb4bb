"""Tiny local checkpoints of real architectures (Llama, Qwen2, GPT-2) with random weights, for tests: no Hub.

Each is saved with a byte-level BPE tokenizer trained on the data folder, as real checkpoints ship them. By default
the tokenizer has a ChatML chat template with `{% generation %}` markers and a pad token distinct from EOS, like an
instruct model; `bare=True` leaves both out, like a base model (GPT-2 has neither).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    GPT2Config,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    set_seed,
)

from toyllm.tokenizer import CHATML_TEMPLATE  # ChatML with {% generation %} markers
from toyllm.toy import iter_data_folder_texts

ARCHITECTURES = ("llama", "qwen2", "gpt2")

SIZES = dict(hidden=32, layers=2, heads=4, intermediate=64, positions=128)


def train_bpe_tokenizer(data_dir: str | Path, bare: bool = False, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    chat_tokens = [] if bare else ["<|pad|>", "<|im_start|>", "<|im_end|>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", *chat_tokens],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(iter_data_folder_texts(data_dir), trainer=trainer)
    if bare:  # GPT-2's own setup: one <|endoftext|> for BOS and EOS, no pad token, no chat template
        return PreTrainedTokenizerFast(
            tokenizer_object=tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>"],
        chat_template=CHATML_TEMPLATE,
        model_input_names=["input_ids", "attention_mask"],
    )


def build_tiny_checkpoint(
    architecture: str, output_dir: str | Path, data_dir: str | Path, bare: bool = False, seed: int = 0
) -> Path:
    """Save a random-weight causal LM of `architecture` with its tokenizer to `output_dir`."""
    tokenizer = train_bpe_tokenizer(data_dir, bare=bare)
    ids = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    s = SIZES
    if architecture == "llama":
        config = LlamaConfig(
            hidden_size=s["hidden"], num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
            num_key_value_heads=2, intermediate_size=s["intermediate"], max_position_embeddings=s["positions"], **ids,
        )  # fmt: skip
    elif architecture == "qwen2":
        config = Qwen2Config(
            hidden_size=s["hidden"], num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
            num_key_value_heads=2, intermediate_size=s["intermediate"], max_position_embeddings=s["positions"],
            tie_word_embeddings=True, **ids,
        )  # fmt: skip
    elif architecture == "gpt2":
        config = GPT2Config(
            n_embd=s["hidden"], n_layer=s["layers"], n_head=s["heads"], n_inner=s["intermediate"],
            n_positions=s["positions"], **ids,
        )  # fmt: skip
    else:
        raise ValueError(f"unknown architecture {architecture!r} (expected one of {', '.join(ARCHITECTURES)})")
    tokenizer.model_max_length = s["positions"]
    set_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(**{k: v for k, v in ids.items() if k != "vocab_size"})
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def digest(folder: Path) -> str:
    """The checkpoint's weights, hashed: to prove a run left them untouched."""
    return hashlib.sha256((Path(folder) / "model.safetensors").read_bytes()).hexdigest()
