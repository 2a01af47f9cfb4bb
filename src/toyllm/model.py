"""The loading rules every recipe shares, for any causal-LM or scorer checkpoint (the toy's random model is built
in toyllm.toy)."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import torch
from peft import PeftConfig, PeftModel
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from trl import ModelConfig, get_quantization_config

from toyllm.errors import UserError
from toyllm.model_source import model_folder
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
        # New rows start at the mean of the old ones (transformers' default, said here to keep its notice quiet).
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
        added = ", ".join(tokenizer.convert_ids_to_tokens(list(range(rows, len(tokenizer)))))
        logger.warning(
            f"Resized the token embeddings from {rows} to {len(tokenizer)} rows for tokens the model lacked ({added}):"
            " a LoRA adapter of this model saves the whole embedding matrix with it."
        )
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


def model_config(path: str | Path) -> PretrainedConfig:
    """A checkpoint's config, read through a GGUF file's converted folder and a LoRA adapter's base."""
    path = model_folder(str(path))
    if (Path(path) / "adapter_config.json").is_file():
        return model_config(PeftConfig.from_pretrained(path).base_model_name_or_path)
    return AutoConfig.from_pretrained(path)


def load_weights(auto_class, path: str | Path, **kwargs) -> PreTrainedModel:
    """from_pretrained, safetensors only, with a one-line error for a folder that has no loadable weights. A GGUF
    file is read through its converted folder (toyllm.model_source); a LoRA adapter folder gives the full model it
    stands for (`load_adapter`)."""
    kwargs.setdefault("use_safetensors", True)
    path = model_folder(str(path))
    if (Path(path) / "adapter_config.json").is_file():
        return load_adapter(auto_class, path, **kwargs)
    try:
        return auto_class.from_pretrained(path, **kwargs)
    except OSError as error:
        first_line = str(error).strip().splitlines()[0]
        raise UserError(f"{path}: cannot load safetensors weights ({first_line})") from None


def load_adapter(auto_class, path: str | Path, **kwargs) -> PreTrainedModel:
    """A LoRA adapter folder as the model it stands for: its base, loaded by these same rules (so the base may be
    another adapter or a GGUF file), given the rows of the adapter's tokenizer, with the adapter merged in, as
    `pipeline()` and `AutoPeftModelForCausalLM` load one. The result remembers the adapter folder as its name, so an
    adapter trained on top of it names this one as its base.

    A scorer can start from a causal-LM adapter (the judge from the SFT adapter): peft's causal-LM wrapper needs
    generation methods a sequence classifier lacks, so the adapter is then applied without a task type.
    """
    config = PeftConfig.from_pretrained(path)
    if config.task_type == "SEQ_CLS":  # toyllm's judges score with one label: the saved head has one row
        kwargs.setdefault("num_labels", 1)
    if config.base_model_name_or_path is None:
        raise UserError(f"{path}: adapter_config.json names no base model (base_model_name_or_path)")
    base = load_weights(auto_class, config.base_model_name_or_path, **kwargs)
    base = fit_to_tokenizer(base, AutoTokenizer.from_pretrained(path))
    if (config.task_type == "SEQ_CLS") != (auto_class is AutoModelForSequenceClassification):
        config.task_type = None
    model = PeftModel.from_pretrained(base, path, config=config).merge_and_unload()
    model.name_or_path = model.config._name_or_path = str(Path(path).resolve())  # found again from any folder
    return model


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


TOY_PARAMETERS = 5_000_000  # below this a CPU PPO or RLOO runs on one intra-op thread (benchmarks/threads.py)


def rollout_threads(policy, threads: int) -> int:
    """An RL stage's intra-op thread count (PPO, RLOO): one for a toy-sized policy on a CPU, unless
    `OMP_NUM_THREADS` says otherwise.

    The toy's rollout is thousands of tiny ops (one token at a time, 64-wide); splitting each over threads gains
    little when the machine is quiet and collapses beside other busy processes (benchmarks/threads.py, figures in
    benchmarks/RESULTS.md). A bigger model's matmuls do gain from threads, and a GPU run is not concerned.
    """
    if os.environ.get("OMP_NUM_THREADS") or next(policy.parameters()).device.type != "cpu":
        return threads
    return 1 if sum(p.numel() for p in policy.parameters()) < TOY_PARAMETERS else threads


@contextlib.contextmanager
def rollout_threads_for(policy):
    """Train an RL stage with `rollout_threads`, restoring the process's thread count afterwards (the demo runs every
    stage in one process)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(rollout_threads(policy, threads))
    try:
        yield
    finally:
        torch.set_num_threads(threads)
