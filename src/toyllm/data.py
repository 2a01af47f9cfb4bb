"""The five JSONL files of a data folder, in TRL's standard dataset formats, loaded with `datasets`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from datasets import Dataset, load_dataset

Stage = Literal["pretrain", "sft", "preference", "prompts", "eval"]

# Which file of a data folder each part of the pipeline reads.
DATA_FILES: dict[Stage, str] = {
    "pretrain": "pretrain.jsonl",  # {"text": ...}                      language modeling
    "sft": "sft.jsonl",  # {"messages": [...]} or {"prompt", "completion"}  conversational SFT
    "preference": "preference.jsonl",  # {"prompt", "chosen", "rejected"}   reward model and DPO
    "prompts": "prompts.jsonl",  # {"prompt": [user message]}               PPO rollouts
    "eval": "eval.jsonl",  # {"prompt": str, "reference": str, "split": str}
}


def load_data(name_or_path: str | Path, split: str = "train") -> Dataset:
    """A local JSON/JSONL file, or a dataset id on the Hub."""
    path = Path(name_or_path)
    if path.suffix in {".json", ".jsonl"}:
        return load_dataset("json", data_files=str(path), split=split)
    return load_dataset(str(name_or_path), split=split)


def _message_texts(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for message in value:
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                yield message["content"]


def iter_texts(path: str | Path) -> Iterator[str]:
    """Every piece of natural text in a JSONL file of any of our formats (used to train the vocabulary)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            for key in ("text", "prompt", "completion", "chosen", "rejected", "messages", "reference"):
                if key in row:
                    yield from _message_texts(row[key])
