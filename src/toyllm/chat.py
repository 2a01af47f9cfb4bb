"""Talk to a checkpoint: `toyllm generate` (one question) and `toyllm chat` (a conversation in the terminal)."""

from __future__ import annotations

import string
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch
from transformers import AutoModelForCausalLM, set_seed

from toyllm.data_checks import unknown_words
from toyllm.defaults import CHAT_MAX_NEW_TOKENS
from toyllm.errors import UserError
from toyllm.generation import chat_prompts, text_prompts
from toyllm.model import load_weights
from toyllm.model_source import checkpoint_tokenizer, is_local_model

EXIT_COMMANDS = {"/exit", "/quit"}


@dataclass(frozen=True)
class Sampling:
    """How an answer is drawn: at most `max_new_tokens`, greedy or sampled (at `temperature`, from the `top_p`
    nucleus), with `seed` set first (None: not set), as `toyllm generate` and `chat` take them."""

    max_new_tokens: int = CHAT_MAX_NEW_TOKENS
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None


GREEDY = Sampling()


@dataclass(frozen=True)
class Terminal:
    """Where `toyllm chat` reads and writes, and whether a person types there (prompts and labels) or lines are
    piped (answers alone; None: whether stdin is a terminal)."""

    stdin: TextIO | None = None
    stdout: TextIO | None = None
    interactive: bool | None = None


def load_chat_model(path: str | Path, as_text: bool = False):
    """A causal-LM checkpoint (a folder, a LoRA adapter folder or a GGUF file) and its tokenizer, which must carry a
    chat template unless the model is asked in plain text."""
    if not is_local_model(path):
        raise UserError(f"{path}: no such checkpoint folder or GGUF file")
    tokenizer = checkpoint_tokenizer(path)
    if not tokenizer.chat_template and not as_text:
        raise UserError(f"{path}: the tokenizer has no chat template; train it with a recipe (SFT) first, or ask it "
                        "in plain text (--as-text)")  # fmt: skip
    model = load_weights(AutoModelForCausalLM, path).eval()
    return model, tokenizer


def context_limit(model, tokenizer) -> int | None:
    """How many positions the model can see, when it says so."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is None and 0 < getattr(tokenizer, "model_max_length", 0) < 1_000_000:
        limit = tokenizer.model_max_length
    return limit


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The chat template applied to the conversation, ending where the assistant's answer begins."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return chat_prompts(tokenizer, [messages[0]["content"]])[0]  # one question: exactly what evaluation asks
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]


def _stop_ids(model, tokenizer) -> list[int]:
    """The tokenizer's EOS plus whatever the generation config stops on (e.g. `<|im_end|>` of a chat model)."""
    ids = []
    for value in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        for token in value if isinstance(value, list) else [value]:
            if token is not None and token not in ids:
                ids.append(token)
    return ids


@torch.no_grad()
def answer(model, tokenizer, messages: list[dict], sampling: Sampling = GREEDY, as_text: bool = False) -> str:
    """The model's answer to the conversation so far (its last message is the user's), special tokens stripped.
    `as_text`: the last message as plain text, continued for at least one token, as a base model is tried."""
    ids = text_prompts(tokenizer, [messages[-1]["content"]])[0] if as_text else prompt_ids(tokenizer, messages)
    limit = context_limit(model, tokenizer)
    max_new_tokens = sampling.max_new_tokens
    room = max_new_tokens if limit is None else min(max_new_tokens, limit - len(ids))
    if room < 1:
        raise UserError(f"the conversation ({len(ids)} tokens) fills the model's context of {limit} positions")
    stop = _stop_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stop[0] if stop else None)
    drawn = {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p}
    input_ids = torch.tensor([ids], device=model.device)
    output = model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=room,
        eos_token_id=stop or None,
        pad_token_id=pad,
        min_new_tokens=1 if as_text else None,  # a completer may end at once the "sentence" a question looks like
        **(drawn if sampling.do_sample else {"do_sample": False}),
    )
    return tokenizer.decode(output[0, len(ids) :], skip_special_tokens=True).strip()


def fit_history(model, tokenizer, messages: list[dict], max_new_tokens: int) -> list[dict]:
    """Drop the oldest exchanges (a leading system message stays) until the prompt leaves room for an answer."""
    limit = context_limit(model, tokenizer)
    if limit is None:
        return messages
    head = messages[:1] if messages and messages[0]["role"] == "system" else []
    body = messages[len(head) :]
    while len(body) > 1 and len(prompt_ids(tokenizer, head + body)) + min(max_new_tokens, 8) > limit:
        body = body[2:] if len(body) > 2 and body[1]["role"] == "assistant" else body[1:]
    return head + body


def warn_unknown_words(tokenizer, text: str, stream: TextIO | None = None) -> None:
    """Words the vocabulary lacks become the unknown token: name them, in one line, before the answer."""
    unknown = [word.strip(string.punctuation) for word in unknown_words(tokenizer, text)]
    if unknown:
        print(f"note: not in the model's vocabulary, read as {tokenizer.unk_token}: {', '.join(unknown)}",
              file=stream or sys.stderr)  # fmt: skip


def generate(model_dir: str | Path, question: str, sampling: Sampling = GREEDY, as_text: bool = False) -> str:
    model, tokenizer = load_chat_model(model_dir, as_text)
    warn_unknown_words(tokenizer, question)
    if sampling.seed is not None:  # after loading: the seed decides the sampling alone
        set_seed(sampling.seed)
    return answer(model, tokenizer, [{"role": "user", "content": question}], sampling, as_text)


def chat_loop(
    model_dir: str | Path,
    sampling: Sampling = GREEDY,
    system: str | None = None,
    history: bool = False,
    terminal: Terminal = Terminal(),
) -> int:
    """Read a line and answer it; /exit or Ctrl-D ends. Each line is a question on its own, as the toy's flashcards
    are single-turn (kept history confuses a model trained that way); with `history` the whole conversation is the
    context, and /reset forgets it. At a terminal each line gets a `you>` prompt and each answer a `bot>` label;
    piped, the answers alone come out, one a line, and the greeting goes to stderr."""
    stdin, stdout = terminal.stdin or sys.stdin, terminal.stdout or sys.stdout
    interactive = stdin.isatty() if terminal.interactive is None else terminal.interactive
    if sampling.seed is not None:
        set_seed(sampling.seed)
    model, tokenizer = load_chat_model(model_dir)
    chat = Conversation(model, tokenizer, system, history, sampling)
    mode = "/reset forgets the conversation" if history else "each line is a new question; --history keeps them"
    print(f"chatting with {model_dir} ({mode}, /exit or Ctrl-D ends)", file=stdout if interactive else sys.stderr)
    try:
        while True:
            if interactive:
                stdout.write("you> ")
                stdout.flush()
            line = stdin.readline()
            if not line:  # EOF
                stdout.write("\n" if interactive else "")
                break
            text = line.strip()
            if text in EXIT_COMMANDS:
                break
            if text:
                reply, is_answer = chat.reply(text, stdout if interactive else sys.stderr)
                if interactive:
                    print(f"bot> {reply or '(nothing)'}" if is_answer else reply, file=stdout, flush=True)
                else:  # a note goes to stderr; an answer is one line, empty or not
                    print(reply, file=stdout if is_answer else sys.stderr, flush=True)
    except KeyboardInterrupt:
        stdout.write("\n")
    stdout.flush()
    return 0


class Conversation:
    """The messages so far (a system message, then the exchanges kept), and the answer to each new line."""

    def __init__(self, model, tokenizer, system: str | None, history: bool, sampling: Sampling):
        self.model, self.tokenizer, self.history, self.sampling = model, tokenizer, history, sampling
        self.start = [{"role": "system", "content": system}] if system else []
        self.messages = list(self.start)

    def reply(self, text: str, stdout: TextIO) -> tuple[str, bool]:
        """What to print for a line, and whether it is the bot's answer (else a note in parentheses)."""
        if text == "/reset":
            self.messages = list(self.start)
            return "(conversation forgotten)", False
        warn_unknown_words(self.tokenizer, text, stdout)
        messages = self.messages if self.history else list(self.start)
        messages = fit_history(self.model, self.tokenizer, messages + [{"role": "user", "content": text}],
                               self.sampling.max_new_tokens)  # fmt: skip
        try:
            reply = answer(self.model, self.tokenizer, messages, self.sampling)
        except UserError as error:
            return f"({error.problems[0]}; try a shorter line or /reset)", False
        self.messages = messages + [{"role": "assistant", "content": reply}]
        return reply, True
