"""The toy itself: a word-level vocabulary trained with `tokenizers` on the story, and a GPT-2 from `toy_config/`
with random weights (stage `random`). Everything after it loads checkpoints by the rules of toyllm.model and
toyllm.tokenizer, which serve any model."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, set_seed

from toyllm.checkpoint import files_digest, is_finished, write_marker
from toyllm.data import DataFolder, as_data_folder, iter_texts
from toyllm.defaults import MAX_NEW_TOKENS
from toyllm.generation import PUNCTUATION, TYPOGRAPHIC_APOSTROPHES


def iter_data_folder_texts(data: DataFolder | str | Path) -> Iterator[str]:
    """Every word the stages train on: corpus, questions, answers, preference pairs and prompts. Not the eval file:
    evaluation must not change what is trained (an eval word the vocabulary lacks is read as the unknown token)."""
    for path in as_data_folder(data).training_files:
        yield from iter_texts(path)


def train_word_level_tokenizer(data: DataFolder | str | Path, toy_config_dir: str | Path) -> PreTrainedTokenizerFast:
    spec = json.loads((Path(toy_config_dir) / "tokenizer.json").read_text())  # our spec, not a HF tokenizer file
    chat_template = (Path(toy_config_dir) / spec["chat_template"]).read_text()
    special = spec["special_tokens"]
    # Special tokens come first so [PAD]=0, [UNK]=1, [BOS]=2, [EOS]=3 in every toy vocabulary.
    special_tokens = [special["pad_token"], special["unk_token"], special["bos_token"], special["eos_token"]]
    special_tokens += spec["role_tokens"]

    tokenizer = Tokenizer(models.WordLevel(unk_token=special["unk_token"]))
    steps = [normalizers.Lowercase()] if spec.get("lowercase", True) else []
    drop_punctuation = spec.get("drop_punctuation", False)
    if (
        drop_punctuation
    ):  # "Who was Alice?" reads as "who was alice", "bear's" as one word: toyllm.generation.normalise
        steps += [normalizers.Replace(typographic, plain) for typographic, plain in TYPOGRAPHIC_APOSTROPHES.items()]
        steps.append(normalizers.Replace(Regex(PUNCTUATION.pattern), " "))
    if steps:
        tokenizer.normalizer = normalizers.Sequence(steps)
    # What is left after dropping punctuation is words and spaces: split on the spaces, so "bear's" stays one word.
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit() if drop_punctuation else pre_tokenizers.Whitespace()
    # Every word decodes with the space before it, as GPT-2's "Ġwhite" does (punctuation attaches to the word
    # before). `pipeline("text-generation")` decodes only the new tokens and appends them to the prompt, so a
    # continuation must bring its own space: "alice followed the" + " white rabbit", not "...thewhite rabbit".
    # The price is a leading space on a whole decoded text, which our evaluation and chat strip.
    tokenizer.decoder = decoders.Replace(Regex(r"^(?=\w)"), " ")
    # No post-processor: appending EOS on every call would break TRL's prompt/prompt+completion prefix check.
    trainer = trainers.WordLevelTrainer(special_tokens=special_tokens, min_frequency=1, show_progress=False)
    tokenizer.train_from_iterator(iter_data_folder_texts(data), trainer=trainer)

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        chat_template=chat_template,
        additional_special_tokens=spec["role_tokens"],
        model_input_names=["input_ids", "attention_mask"],
        **special,
    )


def build_random_checkpoint(
    data: DataFolder | str | Path, toy_config_dir: str | Path, output_dir: str | Path, seed: int
) -> Path:
    """Train the vocabulary on `data_dir`, build GPT-2 from `toy_config_dir` with random weights: stage `random`."""
    tokenizer = train_word_level_tokenizer(data, toy_config_dir)
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


def random_fingerprint(data: DataFolder | str | Path, toy_config_dir: str | Path, seed: int) -> str:
    """What the random stage is made of: the training files (the vocabulary), the model's spec and the seed."""
    files = [*as_data_folder(data).training_files, *sorted(Path(toy_config_dir).iterdir())]
    return files_digest(files, hashlib.sha256(f"seed={seed}".encode())).hexdigest()


def build_random_stage(
    data: DataFolder | str | Path,
    toy_config_dir: str | Path,
    output_dir: str | Path,
    seed: int,
    overwrite: bool = False,
) -> bool:
    """The `random` stage, shared by the demo and the pretrain recipe: skipped when `output_dir` already holds it for
    this data, spec and seed, refused when it holds another one (unless `overwrite`); True when it was built."""
    fingerprint = random_fingerprint(data, toy_config_dir, seed)
    if is_finished(output_dir, fingerprint, overwrite):
        return False
    build_random_checkpoint(data, toy_config_dir, output_dir, seed)
    write_marker(output_dir, "random", fingerprint)
    return True
