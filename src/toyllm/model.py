"""The loading rules every recipe shares, for any causal-LM or scorer checkpoint (the toy's random model is built
in toyllm.toy)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from trl import ModelConfig, get_quantization_config

from toyllm.errors import UserError
from toyllm.quiet import use_causal_lm_loss

logger = logging.getLogger(__name__)


def model_init_kwargs(model_args: ModelConfig) -> dict:
    """`from_pretrained` keyword arguments from the model arguments, quantization included, as TRL's scripts build
    them (`load_in_4bit` / `load_in_8bit` need a CUDA GPU: toyllm.args refuses them elsewhere)."""
    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    return {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": dtype,
        "quantization_config": get_quantization_config(model_args),
        "use_safetensors": True,  # never unpickle weights: a .bin file can run code when loaded
    }


def fit_to_tokenizer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """Embedding rows for every token, and the tokenizer's special-token ids in the model's configs."""
    rows = model.get_input_embeddings().weight.shape[0]
    if rows < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
        logger.warning(f"Resized the token embeddings from {rows} to {len(tokenizer)} rows for the added tokens.")
    ids = {
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
    }
    for key, value in ids.items():
        if value is not None:
            setattr(model.config, key, value)
    generation_config = getattr(model, "generation_config", None) if model.can_generate() else None
    if generation_config is not None:
        generation_config.pad_token_id = tokenizer.pad_token_id
        stop = generation_config.eos_token_id
        if tokenizer.eos_token_id not in (stop if isinstance(stop, list) else [stop]):
            generation_config.eos_token_id = tokenizer.eos_token_id  # a list of stop ids holding it is kept
    return model


def context_length(config: PretrainedConfig, requested: int | None = None) -> int:
    """The longest sequence a stage may use: what the config asks for, capped by the model's positions.

    TRL's default max_length (1024) is longer than the toy's 64 positions and would index past the embeddings.
    """
    positions = getattr(config, "max_position_embeddings", None) or requested or 1024
    return positions if requested is None else min(requested, positions)


def load_weights(auto_class, path: str | Path, **kwargs) -> PreTrainedModel:
    """from_pretrained, safetensors only, with a one-line error for a folder that has no loadable weights."""
    kwargs.setdefault("use_safetensors", True)
    if (Path(path) / "adapter_config.json").is_file():
        raise UserError(
            f"{path}: holds a LoRA adapter, not a full model; merge it into its base first "
            f"(toyllm merge --adapter {path} --output {path}-merged) and start from the merged folder"
        )
    try:
        return auto_class.from_pretrained(path, **kwargs)
    except OSError as error:
        first_line = str(error).strip().splitlines()[0]
        raise UserError(f"{path}: cannot load safetensors weights ({first_line})") from None


def load_causal_lm(
    path: str, model_args: ModelConfig, tokenizer: PreTrainedTokenizerBase | None = None
) -> PreTrainedModel:
    model = use_causal_lm_loss(load_weights(AutoModelForCausalLM, path, **model_init_kwargs(model_args)))
    return model if tokenizer is None else fit_to_tokenizer(model, tokenizer)


def load_scorer(path: str, model_args: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A one-label sequence classifier (the judge, or PPO's value model) on a causal-LM or reward checkpoint.

    Its config gets the tokenizer's pad id: the score is read at the last non-pad token.
    """
    model = load_weights(AutoModelForSequenceClassification, path, num_labels=1, **model_init_kwargs(model_args))
    return fit_to_tokenizer(model, tokenizer)
