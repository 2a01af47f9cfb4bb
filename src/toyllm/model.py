"""The baby model (a random-init GPT-2 from `toy_config/`) and the loading rules every recipe shares."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    set_seed,
)
from trl import ModelConfig, get_quantization_config

from toyllm.checkpoint import files_digest, is_finished, write_marker
from toyllm.data import DATA_FILES
from toyllm.errors import UserError
from toyllm.quiet import use_causal_lm_loss
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
    multiple = architecture.pop("pad_vocab_size_to_multiple_of", 1)  # GPU matmuls are fastest on multiples of 64
    config = GPT2Config(
        **architecture,
        vocab_size=-(-len(tokenizer) // multiple) * multiple,
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


def random_fingerprint(data_dir: str | Path, toy_config_dir: str | Path, seed: int) -> str:
    """What the random stage is made of: every data file (the vocabulary), the model's spec and the seed."""
    files = [*(Path(data_dir) / f for f in DATA_FILES.values()), *sorted(Path(toy_config_dir).iterdir())]
    return files_digest(files, hashlib.sha256(f"seed={seed}".encode())).hexdigest()


def build_random_stage(
    data_dir: str | Path, toy_config_dir: str | Path, output_dir: str | Path, seed: int, overwrite: bool = False
) -> bool:
    """The `random` stage, shared by the demo and the pretrain recipe: skipped when `output_dir` already holds it for
    this data, spec and seed, refused when it holds another one (unless `overwrite`); True when it was built."""
    fingerprint = random_fingerprint(data_dir, toy_config_dir, seed)
    if is_finished(output_dir, fingerprint, overwrite):
        return False
    build_random_checkpoint(data_dir, toy_config_dir, output_dir, seed)
    write_marker(output_dir, "random", fingerprint)
    return True


def bf16_supported() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


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
