"""Check a data file before any training: each problem is one line naming the file, the line and the field.

Formats (TRL's standard ones): language modeling `{"text"}`, conversational `{"messages"}`, prompt/completion
`{"prompt", "completion"}`, preference `{"prompt", "chosen", "rejected"}`, prompt-only `{"prompt"}`, and our eval
rows `{"prompt", "reference", "split"}` (a retention row may add `"alternatives"`, other words a right answer uses).
"""

from __future__ import annotations

import difflib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2.exceptions import TemplateError

from toyllm.errors import UserError
from toyllm.stages import DataKind

logger = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
MAX_PROBLEMS = 20  # past this many, a file is wrong in one systematic way and more lines do not help


def _a(word: str) -> str:
    return f"an {word}" if word.startswith("assistant") else f"a {word}"


class _Row:
    def __init__(self, path: Path, line: int, row: dict, problems: list[str]):
        self.path, self.line, self.row, self.problems = path, line, row, problems

    def problem(self, field: str, message: str) -> None:
        self.problems.append(f"{self.path}:{self.line}: {field}: {message}")

    def require(self, key: str) -> bool:
        if key in self.row:
            return True
        close = difflib.get_close_matches(key, [k for k in self.row if isinstance(k, str)], n=1, cutoff=0.6)
        hint = f" (found '{close[0]}': misspelt?)" if close else f" (keys present: {', '.join(map(str, self.row))})"
        self.problem(key, f"missing key{hint}")
        return False

    def text(self, field: str, value) -> bool:
        if not isinstance(value, str):
            self.problem(field, f"expected a string, got {type(value).__name__}")
            return False
        if not value.strip():
            self.problem(field, "empty string")
            return False
        return True

    def messages(self, field: str, value, first: tuple[str, ...], last: tuple[str, ...]) -> bool:
        """A list of {"role", "content"} turns: system first if any, then user and assistant taking turns."""
        if not isinstance(value, list):
            self.problem(field, f"expected a list of messages, got {type(value).__name__}")
            return False
        if not value:
            self.problem(field, "empty list of messages")
            return False
        ok, previous = True, None
        for i, message in enumerate(value):
            ok = self.message(f"{field}[{i}]", message, i, previous) and ok
            role = message.get("role") if isinstance(message, dict) else None
            previous = role if role in ROLES else previous
        if ok:
            roles = [m["role"] for m in value if m["role"] != "system"] or ["system"]
            if roles[0] not in first:
                self.problem(field, f"must start with {_a(' or '.join(first))} message, not {roles[0]}")
                ok = False
            elif roles[-1] not in last:
                self.problem(field, f"must end with {_a(' or '.join(last))} message, not {roles[-1]}")
                ok = False
        return ok

    def message(self, where: str, message, index: int, previous: str | None) -> bool:
        """One turn: a {"role", "content"} object of a known role, where that role may come."""
        if not isinstance(message, dict):
            self.problem(where, f"expected a message object, got {type(message).__name__}")
            return False
        ok = True
        for key in ("role", "content"):
            if key not in message:
                close = difflib.get_close_matches(key, list(message), n=1, cutoff=0.6)
                self.problem(where, f"missing key '{key}'" + (f" (found '{close[0]}': misspelt?)" if close else ""))
                ok = False
        role = message.get("role")
        if role is not None and role not in ROLES:
            self.problem(f"{where}.role", f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
            return False
        if "content" in message and not self.text(f"{where}.content", message["content"]):
            ok = False
        if role == "system" and index > 0:
            self.problem(f"{where}.role", "a system message may only come first")
            ok = False
        elif role in ("user", "assistant") and role == previous:
            self.problem(f"{where}.role", f"two {role} messages in a row: user and assistant take turns")
            ok = False
        return ok

    def text_or_messages(self, field: str, first: tuple[str, ...], last: tuple[str, ...]) -> bool:
        value = self.row[field]
        if isinstance(value, list):
            return self.messages(field, value, first, last)
        return self.text(field, value)


def _check_row(kind: DataKind, r: _Row) -> None:
    row = r.row
    if kind == "pretrain":
        if r.require("text"):
            r.text("text", row["text"])
    elif kind == "flashcards":
        if "messages" in row:
            r.messages("messages", row["messages"], first=("user",), last=("assistant",))
        elif "prompt" in row or "completion" in row:
            if r.require("prompt") and r.require("completion"):
                if isinstance(row["prompt"], list) != isinstance(row["completion"], list):
                    r.problem("completion", "prompt and completion must both be strings or both message lists")
                else:
                    r.text_or_messages("prompt", ("user",), ("user",))
                    r.text_or_messages("completion", ("assistant",), ("assistant",))
        else:
            r.require("messages")
    elif kind == "preference":
        if all([r.require("prompt"), r.require("chosen"), r.require("rejected")]):
            r.text_or_messages("prompt", ("user",), ("user",))
            for key in ("chosen", "rejected"):
                r.text_or_messages(key, ("assistant",), ("assistant",))
    elif kind == "prompts":
        if r.require("prompt"):
            r.text_or_messages("prompt", ("user",), ("user",))
    elif kind == "eval":
        for key in ("prompt", "reference", "split"):
            if r.require(key):
                r.text(key, row[key])
        alternatives = row.get("alternatives")
        if alternatives is not None:
            if not isinstance(alternatives, list):
                r.problem("alternatives", f"expected a list of strings, got {type(alternatives).__name__}")
            else:
                for i, text in enumerate(alternatives):
                    r.text(f"alternatives[{i}]", text)


def _prompt_key(value) -> str:
    return json.dumps(value, sort_keys=True)


def _warn_duplicates(kind: DataKind, path: Path, rows: list[tuple[int, dict]]) -> list[str]:
    """Duplicate rows, and rows that contradict each other, are worth a look but are not errors."""
    warnings: list[str] = []
    seen: dict[str, int] = {}
    answers: dict[str, tuple[int, str]] = {}
    pairs: dict[tuple[str, str, str], int] = {}
    for line, row in rows:
        key = _prompt_key(row)
        if key in seen:
            warnings.append(f"{path}:{line}: duplicate of line {seen[key]}")
            continue
        seen[key] = line
        if kind == "flashcards" and "messages" in row:
            question, answer = _prompt_key(row["messages"][:-1]), _prompt_key(row["messages"][-1])
        elif kind in ("flashcards", "eval") and "prompt" in row:
            question, answer = _prompt_key(row["prompt"]), _prompt_key(row.get("completion", row.get("reference")))
        elif kind == "preference":
            prompt, chosen, rejected = (_prompt_key(row[k]) for k in ("prompt", "chosen", "rejected"))
            if chosen == rejected:
                warnings.append(f"{path}:{line}: chosen and rejected are the same answer")
            swapped = pairs.get((prompt, rejected, chosen))
            if swapped:
                warnings.append(f"{path}:{line}: contradicts line {swapped} (chosen and rejected swapped)")
            pairs[(prompt, chosen, rejected)] = line
            continue
        else:
            continue
        if question in answers and answers[question][1] != answer:
            warnings.append(f"{path}:{line}: same question as line {answers[question][0]} with a different answer")
        answers.setdefault(question, (line, answer))
    return warnings


def read_rows(path: str | Path, kind: DataKind) -> list[tuple[int, dict]]:
    """Parse and check a JSONL file; raise UserError listing every problem, log duplicates as warnings."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    problems: list[str] = []
    rows: list[tuple[int, dict]] = []
    with open(path, encoding="utf-8-sig") as f:  # a byte-order mark, as some editors save, is read past
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.rstrip("\n"))
            except json.JSONDecodeError as error:
                problems.append(f"{path}:{number}: invalid JSON: {error.msg} (column {error.colno})")
                continue
            if not isinstance(row, dict):
                problems.append(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
                continue
            _check_row(kind, _Row(path, number, row, problems))
            rows.append((number, row))
    if not rows and not problems:
        problems.append(f"{path}: empty file: no rows")
    if problems:
        raise UserError(
            problems[:MAX_PROBLEMS]
            + ([f"... and {len(problems) - MAX_PROBLEMS} more"] if len(problems) > MAX_PROBLEMS else [])
        )
    for warning in _warn_duplicates(kind, path, rows):
        logger.warning(warning)
    return rows


def _texts(value) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [("", value)]
    return [(f"[{i}].content", m["content"]) for i, m in enumerate(value)]


def last_content(value) -> str:
    """The text of a prompt or answer in any of TRL's formats: the string itself, or its last message's content."""
    return value if isinstance(value, str) else value[-1]["content"]


def as_messages(value, role: str) -> list[dict]:
    """A prompt or answer in either format as a list of messages (a string becomes one message of `role`)."""
    return value if isinstance(value, list) else [{"role": role, "content": value}]


def rendered_lengths(kind: DataKind, row: dict, tokenizer) -> list[int]:
    """Token lengths of what a trainer will actually see for this row."""
    if kind == "pretrain":
        return [len(tokenizer(row["text"])["input_ids"]) + 2]  # + BOS and EOS
    if kind == "flashcards" and "messages" in row:
        conversations = [row["messages"]]
    elif kind == "flashcards":
        conversations = [as_messages(row["prompt"], "user") + as_messages(row["completion"], "assistant")]
    elif kind == "preference":
        prompt = as_messages(row["prompt"], "user")
        conversations = [prompt + as_messages(row[k], "assistant") for k in ("chosen", "rejected")]
    else:  # prompts, eval: the prompt with the generation prompt appended
        prompt = as_messages(row["prompt"], "user")
        return [len(tokenizer.apply_chat_template(prompt, add_generation_prompt=True)["input_ids"])]
    return [len(tokenizer.apply_chat_template(c)["input_ids"]) for c in conversations]


def unknown_words(tokenizer, text: str) -> list[str]:
    """The words of `text` that the tokenizer reads as its unknown token (none when it has no such token)."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return []
    return [word for word in text.split() if unk in tokenizer(word, add_special_tokens=False)["input_ids"]]


@dataclass(frozen=True)
class Fit:
    """What the rows of a file must fit: the tokenizer that reads them, at most `max_length` tokens with `reserve` of
    them left for generation (`truncate`: a longer row is cut while training, not refused), and, unless
    `unknown_words_ok`, no word the vocabulary lacks."""

    tokenizer: Any
    max_length: int
    truncate: bool = False
    reserve: int = 0
    unknown_words_ok: bool = False


def check_against_tokenizer(path: str | Path, kind: DataKind, rows: list[tuple[int, dict]], fit: Fit) -> None:
    """Rows that do not fit the context (with `reserve` tokens left for generation) and, unless `unknown_words_ok`,
    words the vocabulary lacks."""
    tokenizer, max_length, reserve = fit.tokenizer, fit.max_length, fit.reserve
    problems: list[str] = []
    unk = tokenizer.unk_token_id
    for line, row in rows:
        try:
            longest = max(rendered_lengths(kind, row, tokenizer))
        except TemplateError as error:  # the template refuses the row, e.g. Gemma's "System role not supported"
            problems.append(f"{path}:{line}: the model's chat template refuses this row: {error}")
            continue
        if not fit.truncate and longest + reserve > max_length:
            room = f"{max_length} - {reserve} for the answer" if reserve else str(max_length)
            problems.append(
                f"{path}:{line}: row is {longest} tokens, longer than the model's context ({room}); "
                "shorten it or set truncate_long_rows: true"
            )
        if unk is None or kind == "pretrain" or fit.unknown_words_ok:
            continue
        for key in ("messages", "prompt", "completion", "chosen", "rejected", "reference"):
            if key not in row:
                continue
            for suffix, text in _texts(row[key]):
                unknown = unknown_words(tokenizer, text)
                if unknown:
                    problems.append(
                        f"{path}:{line}: {key}{suffix}: words not in the vocabulary: {', '.join(unknown)} "
                        f"(they would become {tokenizer.unk_token}; rebuild the vocabulary with this file)"
                    )
    if problems:
        raise UserError(problems[:MAX_PROBLEMS])
