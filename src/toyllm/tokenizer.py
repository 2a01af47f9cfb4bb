"""The loading rules that give any checkpoint's tokenizer what chat training needs (the toy's own vocabulary is
built in toyllm.toy).

Every stage (SFT, reward, PPO, DPO, evaluation) shares the tokenizer it starts from and its chat template, so the
policy's token ids mean the same thing to the judge and the value model.
"""

from __future__ import annotations

import logging

from transformers import AutoTokenizer, PreTrainedTokenizerBase
from trl import ModelConfig
from trl.chat_template_utils import get_training_chat_template
from trl.data_utils import is_conversational

from toyllm.errors import UserError, from_hub

logger = logging.getLogger(__name__)


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
    with from_hub("model_name_or_path", model_args.model_name_or_path):
        tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
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


def fit_loss_to_template(tokenizer: PreTrainedTokenizerBase, training_args, name: str, *datasets):
    """SFT's loss mask for this chat template: the assistant's answers where the template marks them with
    `{% generation %}` or TRL can patch it to; otherwise the last assistant message, as conversational
    prompt/completion rows (TRL's completion-only loss), which needs only a prefix-preserving template.

    TRL 1.12's SFTTrainer raises "The chat template is not training-compatible" inside the trainer for templates it
    has no patch for (plain ChatML, Llama 3.1's, `[INST]`): this decides before the trainer is built.
    """
    first = datasets[0][0]
    if not training_args.assistant_only_loss or not is_conversational(first):
        return datasets
    conversation = first["messages"] if "messages" in first else first["prompt"] + first["completion"]
    try:  # None where the markers are there, TRL's patch where it knows the family, ValueError otherwise
        template = get_training_chat_template(tokenizer)
        rendered = tokenizer.apply_chat_template(
            conversation, chat_template=template, return_dict=True, return_assistant_tokens_mask=True
        )
        if any(rendered["assistant_masks"]):  # markers can also wrap nothing (TRL would drop every row)
            return datasets
    except ValueError:
        pass
    if "messages" in datasets[0].column_names:
        datasets = [None if d is None else d.map(_to_prompt_completion, remove_columns=["messages"]) for d in datasets]
    for row in datasets[0]:
        prompt_ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True)["input_ids"]
        full_ids = tokenizer.apply_chat_template(row["prompt"] + row["completion"])["input_ids"]
        if full_ids[: len(prompt_ids)] != prompt_ids:
            raise UserError(
                f"{name}: its chat template has no {{% generation %}} markers (TRL cannot patch it) and renders a "
                "prompt differently once an answer follows, so neither assistant-only nor completion-only loss can "
                "be masked; add {% generation %}...{% endgeneration %} around the assistant's content in the template"
            )
    training_args.assistant_only_loss = False
    training_args.completion_only_loss = True
    logger.warning(
        f"{name}: the chat template marks no assistant tokens ({{% generation %}}) and TRL has no patch for it; "
        "SFT trains on each row's last assistant message (conversational prompt/completion) instead"
    )
    return datasets


def _to_prompt_completion(row: dict) -> dict:
    return {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]}
