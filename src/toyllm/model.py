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
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    set_seed,
)
from trl import ModelConfig

from toyllm.tokenizer import train_word_level_tokenizer
from toyllm.validate import UserError

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
        "use_safetensors": True,  # never unpickle weights: a .bin file can run code when loaded
    }


# What a base model's tokenizer may lack for chat training, added the way `trl.clone_chat_template` adds a template:
# ChatML (Qwen's format) with `{% generation %}` around the answer so SFT trains on answers only. Every part ends with
# a newline, which byte-level BPE never merges with the next word, so a prompt stays a token prefix of prompt + answer.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- message['content'] + '<|im_end|>' -}}{%- endgeneration -%}{{- '\\n' -}}"
    "{%- else -%}{{- message['content'] + '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
CHATML_TOKENS = ["<|im_start|>", "<|im_end|>"]  # <|im_end|> ends every turn: it becomes EOS
PAD_TOKEN = "<|pad|>"


def load_tokenizer(
    model_args: ModelConfig, padding_side: str | None = None, eos_token: str | None = None
) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer with its chat template; `eos_token` (SFTConfig's) names the end-of-turn token of a
    base model whose EOS ends documents, e.g. `<|im_end|>` for Qwen2.5."""
    tokenizer = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
    )
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    if eos_token is not None:
        tokenizer.eos_token = eos_token
    complete_tokenizer(tokenizer, model_args.model_name_or_path)
    return tokenizer


def complete_tokenizer(tokenizer: PreTrainedTokenizerBase, name: str) -> PreTrainedTokenizerBase:
    """Give a base model's tokenizer what chat training needs: a chat template, and a pad token that is not EOS.

    No template: ChatML, added as `trl.clone_chat_template` clones one (template, its tokens, its EOS). No pad token,
    or pad == EOS (TRL masks on pad ids, so it would hide the real end of every answer): a dedicated `<|pad|>`. New
    tokens get embedding rows when the model is loaded with this tokenizer (`fit_to_tokenizer`). The toy's
    tokenizer has both and is left as it is.
    """
    if tokenizer.chat_template is None:
        tokenizer.add_tokens([t for t in CHATML_TOKENS if t not in tokenizer.get_vocab()], special_tokens=True)
        tokenizer.chat_template = CHATML_TEMPLATE
        tokenizer.eos_token = "<|im_end|>"
        logger.warning(f"{name}: the tokenizer has no chat template; gave it ChatML (<|im_end|> is now EOS).")
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        if PAD_TOKEN not in tokenizer.get_vocab():
            tokenizer.add_tokens([PAD_TOKEN], special_tokens=True)
        tokenizer.pad_token = PAD_TOKEN
        logger.warning(f"{name}: the tokenizer has no pad token distinct from EOS; added {PAD_TOKEN}.")
    return tokenizer


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
    model = load_weights(AutoModelForCausalLM, path, **model_init_kwargs(model_args))
    return model if tokenizer is None else fit_to_tokenizer(model, tokenizer)


def load_scorer(path: str, model_args: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A one-label sequence classifier (the judge, or PPO's value model) on a causal-LM or reward checkpoint.

    Its config gets the tokenizer's pad id: the score is read at the last non-pad token.
    """
    model = load_weights(AutoModelForSequenceClassification, path, num_labels=1, **model_init_kwargs(model_args))
    return fit_to_tokenizer(model, tokenizer)


def check_same_vocabulary(tokenizer: PreTrainedTokenizerBase, *models: PreTrainedModel) -> None:
    """PPO feeds the policy's token ids straight into the judge and the value model: one vocabulary for all."""
    for model in models:
        rows = model.get_input_embeddings().weight.shape[0]
        if rows < len(tokenizer):
            raise ValueError(
                f"{model.config._name_or_path}: {rows} embedding rows for a {len(tokenizer)}-token vocabulary; "
                "the policy, reward and value models must share the policy's tokenizer."
            )
