"""The word-level vocabulary: one id per word, trained with `tokenizers` on every text file of the data folder.

Every stage (SFT, reward, PPO, DPO, evaluation) shares this tokenizer and its chat template, so the policy's token
ids mean the same thing to the judge and the value model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from toyllm.data import DATA_FILES, iter_texts


def load_tokenizer_spec(toy_config_dir: str | Path) -> tuple[dict, str]:
    """Read `tokenizer.json` (our spec, not a HF tokenizer file) and the chat template it names."""
    toy_config_dir = Path(toy_config_dir)
    spec = json.loads((toy_config_dir / "tokenizer.json").read_text())
    chat_template = (toy_config_dir / spec["chat_template"]).read_text()
    return spec, chat_template


def iter_data_folder_texts(data_dir: str | Path) -> Iterator[str]:
    """All the words the pipeline will ever see: corpus, questions, answers, preference pairs, prompts, eval."""
    for file_name in DATA_FILES.values():
        yield from iter_texts(Path(data_dir) / file_name)


def train_word_level_tokenizer(data_dir: str | Path, toy_config_dir: str | Path) -> PreTrainedTokenizerFast:
    spec, chat_template = load_tokenizer_spec(toy_config_dir)
    special = spec["special_tokens"]
    # Special tokens come first so [PAD]=0, [UNK]=1, [BOS]=2, [EOS]=3 in every toy vocabulary.
    special_tokens = [special["pad_token"], special["unk_token"], special["bos_token"], special["eos_token"]]
    special_tokens += spec["role_tokens"]

    tokenizer = Tokenizer(models.WordLevel(unk_token=special["unk_token"]))
    if spec.get("lowercase", True):
        tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    # Every word decodes with the space before it, as GPT-2's "Ġwhite" does (punctuation attaches to the word
    # before). `pipeline("text-generation")` decodes only the new tokens and appends them to the prompt, so a
    # continuation must bring its own space: "alice followed the" + " white rabbit", not "...thewhite rabbit".
    # The price is a leading space on a whole decoded text, which our evaluation and chat strip.
    tokenizer.decoder = decoders.Replace(Regex(r"^(?=\w)"), " ")
    # No post-processor: appending EOS on every call would break TRL's prompt/prompt+completion prefix check.
    trainer = trainers.WordLevelTrainer(special_tokens=special_tokens, min_frequency=1, show_progress=False)
    tokenizer.train_from_iterator(iter_data_folder_texts(data_dir), trainer=trainer)

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        chat_template=chat_template,
        additional_special_tokens=spec["role_tokens"],
        model_input_names=["input_ids", "attention_mask"],
        **special,
    )
