"""The baby model (a random-init GPT-2 from `toy_config/`) and the loading rules every recipe shares."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    set_seed,
)
from trl import ModelConfig

from toyllm.tokenizer import train_word_level_tokenizer

logger = logging.getLogger(__name__)

# Greedy answers of the toy are a handful of words; a cap keeps a babbling model from running to n_positions.
MAX_NEW_TOKENS = 16


def build_random_checkpoint(
    data_dir: str | Path, toy_config_dir: str | Path, output_dir: str | Path, seed: int
) -> Path:
    """Train the vocabulary on `data_dir`, build GPT-2 from `toy_config_dir` with random weights: stage `random`."""
    tokenizer = train_word_level_tokenizer(data_dir, toy_config_dir)
    architecture = json.loads((Path(toy_config_dir) / "config.json").read_text())
    config = GPT2Config(
        **architecture,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    tokenizer.model_max_length = config.n_positions
    set_seed(seed)
    model = GPT2LMHeadModel(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=MAX_NEW_TOKENS,
        do_sample=False,
    )
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def bf16_supported() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def model_init_kwargs(model_args: ModelConfig) -> dict:
    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    return {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": dtype,
    }


def load_tokenizer(model_args: ModelConfig, padding_side: str | None = None) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
    )
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise ValueError(
            f"{model_args.model_name_or_path}: the tokenizer needs a pad token distinct from EOS "
            "(TRL masks on pad ids, so pad == eos hides the real end of every answer)."
        )
    return tokenizer


def load_causal_lm(path: str, model_args: ModelConfig) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(path, **model_init_kwargs(model_args))


def load_scorer(path: str, model_args: ModelConfig, pad_token_id: int) -> PreTrainedModel:
    """A one-label sequence classifier (the judge, or PPO's value model) on a causal-LM or reward checkpoint."""
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **model_init_kwargs(model_args))
    model.config.pad_token_id = pad_token_id  # the score is read at the last non-pad token
    return model


def check_same_vocabulary(tokenizer: PreTrainedTokenizerBase, *models: PreTrainedModel) -> None:
    """PPO feeds the policy's token ids straight into the judge and the value model: one vocabulary for all."""
    for model in models:
        rows = model.get_input_embeddings().weight.shape[0]
        if rows < len(tokenizer):
            raise ValueError(
                f"{model.config._name_or_path}: {rows} embedding rows for a {len(tokenizer)}-token vocabulary; "
                "the policy, reward and value models must share the policy's tokenizer."
            )
