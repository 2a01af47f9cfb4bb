"""Asking a causal LM: chat and plain-text prompts, greedy and sampled answers, and the one normalisation every
comparison of answers uses. Training (PPO's gold check) and evaluation (the tables, the labeller, chat) share it."""

from __future__ import annotations

import re

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from toyllm.defaults import MAX_NEW_TOKENS

# Punctuation, read as a space: every mark but an apostrophe inside a word ("bear's" is one word, as people read it).
PUNCTUATION = re.compile(r"[^\w\s']|(?<!\w)'|'(?!\w)")
TYPOGRAPHIC_APOSTROPHES = {"\u2019": "'", "\u2018": "'"}  # as word processors write "bear's"
# Sampling as PPO samples: the model's own distribution, untruncated (temperature 1, no top-k, no top-p).
FULL_DISTRIBUTION = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0}


def one_line(text: str) -> str:
    """Generated text as it is shown: runs of whitespace made one space, ends stripped."""
    return " ".join(text.split())


def normalise(text: str) -> str:
    """A question or answer as it is compared with another, the way the toy's vocabulary reads it: lowercase, with
    punctuation read as a space but an apostrophe inside a word kept. "Who was Alice?" and "who was alice" are one
    question; "The bear's porridge." and "the bear's porridge" one answer."""
    text = text.translate(str.maketrans(TYPOGRAPHIC_APOSTROPHES)).lower()
    return one_line(PUNCTUATION.sub(" ", text))


def chat_prompts(tokenizer, questions: list[str]) -> list[list[int]]:
    """Each question as one user turn in the chat template, ending where the assistant's answer begins."""
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)["input_ids"]
        for q in questions
    ]


def text_prompts(tokenizer, texts: list[str]) -> list[list[int]]:
    """Plain text as a base model reads it (after BOS, as in pre-training), with no chat template."""
    return [tokenizer((tokenizer.bos_token or "") + text, add_special_tokens=False)["input_ids"] for text in texts]


def pad(tokenizer, rows: list[list[int]], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    batch = tokenizer.pad({"input_ids": rows}, padding_side=side, return_attention_mask=True, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]


@torch.no_grad()
def generate_answers(
    model, tokenizer, prompts: list[list[int]], max_new_tokens: int = MAX_NEW_TOKENS, samples: int = 1, **sampling
) -> list[str]:
    """What the model writes after each prompt (greedy unless `do_sample=True`), special tokens stripped; with
    `samples` > 1, that many answers per prompt, prompt after prompt."""
    answers = generate_ids(model, tokenizer, prompts, max_new_tokens, samples, **sampling)
    return [one_line(text) for text in tokenizer.batch_decode(answers, skip_special_tokens=True)]


@torch.no_grad()
def finished_answers(model, tokenizer, prompts: list[list[int]], max_new_tokens: int) -> list[str | None]:
    """The model's greedy answer to each prompt, ended within `max_new_tokens`: an answer that runs past them is cut
    after its last whole sentence, and is None when it has none."""
    answers = generate_ids(model, tokenizer, prompts, max_new_tokens)
    ended = (answers == tokenizer.eos_token_id).any(dim=1).tolist()
    texts = tokenizer.batch_decode(answers, skip_special_tokens=True)
    return [text.strip() if done else whole_sentences(text) for text, done in zip(texts, ended)]


def whole_sentences(text: str) -> str | None:
    """`text` up to the end of its last whole sentence (`.`, `!` or `?` before a space), or None when it has none."""
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s)", text)]
    return text[: ends[-1]].strip() if ends else None


def generate_ids(
    model, tokenizer, prompts: list[list[int]], max_new_tokens: int, samples: int = 1, **sampling
) -> torch.Tensor:
    """The new token ids `generate` writes after each prompt (padded after an answer's end); with `samples` > 1, that
    many rows per prompt, prompt after prompt, as if each prompt were repeated."""
    # Left padding, so every answer starts at the same index; generate() derives position ids from the mask.
    input_ids, attention_mask = pad(tokenizer, prompts, "left")
    input_ids, attention_mask = input_ids.to(model.device), attention_mask.to(model.device)
    room = model.config.max_position_embeddings - input_ids.shape[1]
    cache = prompt_cache(model, tokenizer, input_ids, attention_mask, samples) if samples > 1 else None
    output = model.generate(
        input_ids=input_ids.repeat_interleave(samples, dim=0),
        attention_mask=attention_mask.repeat_interleave(samples, dim=0),
        cache=cache,
        max_new_tokens=max(1, min(max_new_tokens, room)),
        do_sample=sampling.pop("do_sample", False),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **sampling,
    )
    return output[:, input_ids.shape[1] :]


def prompt_cache(model, tokenizer, input_ids: torch.Tensor, attention_mask: torch.Tensor, samples: int):
    """The prompts' key/value cache, each prompt read once and its rows repeated for its `samples` answers; None
    where the model's cache is not one that can be cut and repeated (see below).

    A chat prompt is mostly its template (a default system prompt, the turn markers), and on a CPU reading it is
    much of a short answer's cost: the samples of a question read it once, not once each (benchmarks/RESULTS.md,
    section 7). `generate` itself reads the prompts (one greedy step, no random draw), so the cache holds exactly
    what it would compute; its last prompt token is dropped, as `generate` reads at least one token of its input.
    Only full-attention dynamic layers are both: a sliding window's layer cannot drop a token once the window is
    full, and static or linear-attention layers cannot be repeated (transformers 5.24), so such a model reads each
    sample's prompt, as `generate` does on repeated prompts.
    """
    output = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=1, do_sample=False,
                            return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    cache = output.cache
    if not isinstance(cache, DynamicCache) or any(type(layer) is not DynamicLayer for layer in cache.layers):
        return None
    cache.crop(-1)
    cache.batch_repeat_interleave(samples)
    return cache


def greedy_answers(model, tokenizer, questions: list[str], max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
    """The model's greedy chat answer to each question, special tokens stripped."""
    return generate_answers(model, tokenizer, chat_prompts(tokenizer, questions), max_new_tokens)


def sampled_answers(
    model, tokenizer, questions: list[str], samples: int, max_new_tokens: int = MAX_NEW_TOKENS
) -> list[str]:
    """`samples` chat answers per question drawn from the model's full distribution (what PPO can reach), question
    after question; seed first for repeatable draws."""
    if not questions or samples < 1:
        return []
    prompts = chat_prompts(tokenizer, questions)
    return generate_answers(model, tokenizer, prompts, max_new_tokens, samples=samples, **FULL_DISTRIBUTION)
