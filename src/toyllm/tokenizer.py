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
from toyllm.model_source import model_folder

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
    name = model_folder(model_args.model_name_or_path)  # a GGUF file: its converted folder
    with from_hub("model_name_or_path", name):
        tokenizer = AutoTokenizer.from_pretrained(name, revision=model_args.model_revision)
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    if eos_token is not None:
        tokenizer.eos_token = eos_token
    complete_tokenizer(tokenizer, model_args.model_name_or_path)
    return tokenizer


def complete_tokenizer(tokenizer: PreTrainedTokenizerBase, name: str) -> PreTrainedTokenizerBase:
    """Give a base model's tokenizer what chat training needs: a chat template, and a pad token that is not EOS.

    No template: ChatML, added as `trl.clone_chat_template` clones one (template, its tokens, its EOS). No pad token,
    or pad == EOS (TRL masks on pad ids, so it would hide the real end of every answer): a special token the model
    already has and chat never uses (`spare_special_token`, e.g. SmolLM2's `<|endoftext|>`), so no embedding row is
    added and a LoRA adapter stays the size of its LoRA weights; only where there is none, a new `<|pad|>`, whose
    row is added when the model is loaded with this tokenizer (`fit_to_tokenizer`). The toy's tokenizer has both and
    is left as it is.
    """
    if tokenizer.chat_template is None:
        tokenizer.add_tokens([t for t in CHATML_TOKENS if t not in tokenizer.get_vocab()], special_tokens=True)
        tokenizer.chat_template = CHATML_TEMPLATE
        tokenizer.eos_token = "<|im_end|>"
        logger.warning(f"{name}: the tokenizer has no chat template; gave it ChatML (<|im_end|> is now EOS).")
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        spare = spare_special_token(tokenizer)
        if spare is not None:
            tokenizer.pad_token = spare
            logger.info(f"{name}: padding with {spare}, a special token chat does not use (pad was EOS or unset).")
        else:
            if PAD_TOKEN not in tokenizer.get_vocab():
                tokenizer.add_tokens([PAD_TOKEN], special_tokens=True)
            tokenizer.pad_token = PAD_TOKEN
            logger.warning(f"{name}: the tokenizer has no pad token distinct from EOS and no spare special token; "
                           f"added {PAD_TOKEN} (the model gains an embedding row for it).")  # fmt: skip
    return tokenizer


def spare_special_token(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """A special token that can pad: not EOS or BOS, not in the chat template (so no chat ever holds it). One named
    as a pad first, then the unknown token, then reserved ones, then the lowest id."""
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else str(tokenizer.chat_template)
    taken = {tokenizer.eos_token, tokenizer.bos_token}
    candidates = [
        (token_id, added.content)
        for token_id, added in tokenizer.added_tokens_decoder.items()
        if added.special and added.content not in taken and added.content not in template
    ]

    def preference(candidate):
        token_id, content = candidate
        return ("pad" not in content.lower(), content != tokenizer.unk_token, "reserved" not in content, token_id)

    return min(candidates, key=preference)[1] if candidates else None


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
