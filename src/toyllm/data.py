"""The five JSONL files of a data folder, in TRL's standard dataset formats, loaded with `datasets`."""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Iterator
from pathlib import Path

from datasets import Dataset, concatenate_datasets, interleave_datasets, load_dataset
from trl.data_utils import pack_dataset

from toyllm.data_checks import Fit, as_messages, check_against_tokenizer, last_content, read_rows
from toyllm.errors import UserError, from_hub
from toyllm.generation import normalise
from toyllm.stages import DataKind

logger = logging.getLogger(__name__)

# Which file of a data folder each part of the pipeline reads.
DATA_FILES: dict[DataKind, str] = {
    "pretrain": "pretrain.jsonl",  # {"text": ...}                      language modeling
    "flashcards": "sft.jsonl",  # {"messages": [...]} or {"prompt", "completion"}  conversational SFT
    "preference": "preference.jsonl",  # {"prompt", "chosen", "rejected"}   reward model and DPO
    "prompts": "prompts.jsonl",  # {"prompt": [user message]}               PPO rollouts
    "eval": "eval.jsonl",  # {"prompt": str, "reference": str, "split": str}
}


class DataFolder:
    """A data folder's five files, resolved once and passed down: the demo, the labeller and the evaluation read
    the story through it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"DataFolder({str(self.path)!r})"

    def file(self, kind: DataKind) -> Path:
        return self.path / DATA_FILES[kind]

    @property
    def files(self) -> list[Path]:
        return [self.file(kind) for kind in DATA_FILES]

    @property
    def training_files(self) -> list[Path]:
        """Every file but the eval file: what the vocabulary and the stages are made of."""
        return [self.file(kind) for kind in DATA_FILES if kind != "eval"]

    def is_complete(self) -> bool:
        return all(path.is_file() for path in self.files)

    def check(self) -> dict[DataKind, list[tuple[int, dict]]]:
        """Every file checked up front, the whole list of problems at once; the checked rows by kind."""
        if not self.path.is_dir():
            raise UserError(f"{self.path}: data folder not found")
        missing = [path.name for path in self.files if not path.is_file()]
        if missing:
            raise UserError(
                f"{self.path}: missing {', '.join(missing)} (a data folder holds {', '.join(DATA_FILES.values())})"
            )
        rows, problems = {}, []
        for kind in DATA_FILES:
            try:
                rows[kind] = read_rows(self.file(kind), kind)
            except UserError as error:
                problems += error.problems
        if problems:
            raise UserError(problems)
        problems = _eval_split_problems(self.file("eval"), rows["eval"], rows["flashcards"])  # rows now well formed
        problems += self._answer_problems(rows)
        if problems:
            raise UserError(problems)
        return rows

    def _answer_problems(self, rows: dict) -> list[str]:
        """Every PPO prompt and held-out question matched, after `normalise`, to its preferred answer, and every eval
        reference to the answer training prefers: else the labeller, PPO's gold check and the scores would judge
        against another answer than the one evaluated, or none."""
        chosen: dict[str, set[str]] = {}
        for _, row in rows["preference"]:
            chosen.setdefault(normalise(last_content(row["prompt"])), set()).add(
                normalise(last_content(row["chosen"]))
            )
        taught = {}
        for _, row in rows["flashcards"]:
            question, answer = flashcard_turns(row)
            taught.setdefault(normalise(last_content(question)), normalise(last_content(answer)))
        problems = []
        for line, row in rows["prompts"]:
            question = last_content(row["prompt"])
            if normalise(question) not in chosen and normalise(question) not in taught:
                where = f"{self.file('prompts')}:{line}: prompt"
                problems.append(f"{where}: no preferred answer for {question!r}: add pairs for it to preference.jsonl "
                                "(the labeller prefers their chosen answer)")  # fmt: skip
        for line, row in rows["eval"]:
            question, reference = normalise(row["prompt"]), normalise(row["reference"])
            preferred = chosen.get(question) or ({taught[question]} if question in taught else set())
            if row["split"] == "held_out" and question not in chosen:
                problems.append(f"{self.file('eval')}:{line}: split: 'held_out', but preference.jsonl has no pair "
                                f"for {row['prompt']!r}; add pairs whose chosen answer is the reference")  # fmt: skip
            elif preferred and reference not in preferred:
                problems.append(f"{self.file('eval')}:{line}: reference: {row['reference']!r}, but training prefers "
                                f"{sorted(preferred)[0]!r} for {row['prompt']!r}; make them one answer")  # fmt: skip
        return problems

    def known_answers(self) -> dict[str, str]:
        """The preferred answer of every question the folder knows one for (chosen answers first, then flashcards),
        by the question's normalised form."""
        answers: dict[str, str] = {}
        for _, row in read_rows(self.file("preference"), "preference"):
            answers.setdefault(normalise(last_content(row["prompt"])), last_content(row["chosen"]))
        for _, row in read_rows(self.file("flashcards"), "flashcards"):
            question, answer = flashcard_turns(row)
            answers.setdefault(normalise(last_content(question)), last_content(answer))
        return answers

    def sentences(self) -> set[str]:
        """Every sentence the folder holds as text or as an answer (pre-training text, flashcard answers, preference
        answers), normalised: a greedy answer outside this set is a mixture of words the model made up."""
        found = set()
        for kind in ("pretrain", "flashcards", "preference"):
            for _, row in read_rows(self.file(kind), kind):
                values = [row.get(key) for key in ("text", "completion", "chosen", "rejected")]
                values += [m for m in row.get("messages") or [] if m["role"] == "assistant"]
                for value in values:
                    for text in value if isinstance(value, list) else [value]:
                        text = text["content"] if isinstance(text, dict) else text
                        if isinstance(text, str):
                            found.add(normalise(text))
        return found


def flashcard_turns(row: dict) -> tuple:
    """A flashcard's question and answer, in either of SFT's formats: `messages` (the last message is the answer) or
    prompt/completion."""
    messages = row.get("messages")
    return (messages[:-1], messages[-1:]) if messages else (row["prompt"], row["completion"])


def as_data_folder(value: DataFolder | str | Path) -> DataFolder:
    return value if isinstance(value, DataFolder) else DataFolder(value)


def answerable(prompt_rows: list[dict], answers: dict[str, str]) -> list[tuple[str, str]]:
    """The distinct questions of these prompt rows that have a known preferred answer, in order, with that answer."""
    questions = dict.fromkeys(last_content(row["prompt"]) for row in prompt_rows)
    return [(q, answers[normalise(q)]) for q in questions if normalise(q) in answers]


def load_data(
    name_or_path: str | Path,
    kind: DataKind,
    fit: Fit | None = None,
    split: str = "train",
    config_name: str | None = None,
) -> Dataset:
    """A local JSONL file (checked row by row first, see toyllm.data_checks), or a dataset id on the Hub.

    With a `fit`, rows longer than its `max_length` (minus `reserve` tokens kept for generation) are errors unless
    `truncate` is set, and so are words the vocabulary does not know. A JSONL file is one split, `train`.
    """
    path = Path(name_or_path)
    if path.suffix not in {".json", ".jsonl"}:
        with from_hub("dataset_name", str(name_or_path)):
            return as_chat_rows(load_dataset(str(name_or_path), config_name, split=split), kind, name_or_path)
    if split != "train":
        raise UserError(f"{path}: a JSONL file has one split, 'train', not '{split}'; give a Hub dataset or a file")
    rows = read_rows(path, kind)
    if fit is not None:
        check_against_tokenizer(path, kind, rows, fit)
    return as_chat_rows(load_dataset("json", data_files=str(path), split=split), kind, path)


CHAT_FIELDS = {
    "flashcards": ("prompt", "completion"),
    "preference": ("prompt", "chosen", "rejected"),
    "prompts": ("prompt",),
}


def as_chat_rows(dataset, kind: DataKind, name) -> Dataset:
    """TRL's plain-string prompt/completion (and preference, prompt-only) rows as one chat turn: a user message and
    an assistant message. Every toyllm stage trains and asks in the chat template, so as plain text such rows would
    train a model that then never sees its format again."""
    fields = [f for f in CHAT_FIELDS.get(kind, ()) if f in dataset.column_names]
    if not fields or not isinstance(dataset[0][fields[0]], str):
        return dataset
    logger.warning(f"{name}: plain-string {'/'.join(fields)} rows are read as one chat turn (user, then assistant)")

    def to_messages(row: dict) -> dict:
        return {f: as_messages(row[f], "user" if f == "prompt" else "assistant") for f in fields}

    return dataset.map(to_messages)


def load_splits(script_args, kind: DataKind, tokenizer, max_length: int, evaluate: bool, reserve: int = 0):
    """A recipe's (train, eval) datasets, as TRL's scripts pick them: `dataset_name` and `dataset_config`, the
    `dataset_train_split`, and the `dataset_test_split` only when the trainer evaluates (else None)."""
    fit = Fit(tokenizer, max_length, truncate=script_args.truncate_long_rows, reserve=reserve)
    name, config_name = script_args.dataset_name, script_args.dataset_config
    train = load_data(name, kind, fit, script_args.dataset_train_split, config_name)
    held_out = script_args.test_split_size
    if held_out is not None:
        if not evaluate:
            raise UserError(f"test_split_size: {held_out} holds rows out of training for an eval split, but "
                            "eval_strategy is 'no'; set eval_strategy: steps (every eval_steps)")  # fmt: skip
        rows = int(held_out) if held_out >= 1 else math.ceil(held_out * len(train))  # datasets rounds a share up too
        if rows >= len(train):
            raise UserError(f"test_split_size: {held_out} leaves no rows to train on: {name} has {len(train)}")
        # a fixed shuffle: the same rows are held out whatever the training seed, so runs compare on one eval split
        split = train.train_test_split(test_size=rows, seed=0)
        return split["train"], split["test"]
    if not evaluate:
        return train, None
    if Path(name).suffix in {".json", ".jsonl"}:
        raise UserError(
            f"eval_strategy: {name} is a JSONL file with no '{script_args.dataset_test_split}' split to evaluate on; "
            "set test_split_size: 0.1 to hold a tenth of its rows out, or eval_strategy: no"
        )
    return train, load_data(name, kind, fit, script_args.dataset_test_split, config_name)


def pack_text(dataset: Dataset, block_size: int, copies: int, seed: int) -> Dataset:
    """Pre-training's packing (run_clm's `group_texts`, TRL's "wrapped" strategy) over `copies` seeded shuffles of the
    tokenized sentences ([BOS] words [EOS] each): one stream cut into rows of `block_size` tokens, so each sentence is
    read at `copies` different positions. One sentence per row teaches the completer positions 1 to ~10 only, and a
    chat answer starts later: SFT then learns answering from scratch instead of reusing the completer. Packing the
    dataset (not each batch) keeps the rows the same however many processes share them."""
    shuffled = concatenate_datasets([dataset.shuffle(seed=seed + n) for n in range(copies)])
    return pack_dataset(shuffled.select_columns(["input_ids"]), block_size, strategy="wrapped")


def mix_pretraining_text(chats: Dataset, texts: Dataset, fraction: float, seed: int, cues: int = 4) -> Dataset:
    """InstructGPT's "ptx": the pretraining sentences mixed into SFT, `fraction` of the rows, the smaller side repeated
    until both are used up. The flashcards teach the chat format and their answers; the sentences keep the answer slot
    reading like the story, so an answer the flashcards never taught stays within the policy's sampling reach for PPO.

    Each sentence gives `cues` rows, each the answer to a cue of one word drawn (seeded) from the sentence itself:
    "rabbit" → "alice followed the white rabbit". The model learns to answer with a story sentence that holds a
    word of the user's turn, so a new question's own words lead toward its sentences, which PPO can then reach
    (measured against an empty user turn in benchmarks/RESULTS.md). No question is paired with a sentence. With
    `cues=0` the user turn is empty (plain ptx; real chat templates refuse a conversation that opens with the
    assistant)."""
    conversational = "messages" in chats.column_names
    draw = random.Random(seed)
    rows = []
    for text in texts["text"]:
        words = text.split()
        for cue in [draw.choice(words) for _ in range(cues)] if cues else [""]:
            question, answer = [{"role": "user", "content": cue}], [{"role": "assistant", "content": text}]
            rows.append(
                {"messages": question + answer} if conversational else {"prompt": question, "completion": answer}
            )
    answers = Dataset.from_list(rows)
    for column in set(chats.column_names) - set(answers.column_names):  # e.g. a `tools` column: empty for these
        answers = answers.add_column(column, [None] * len(answers))
    answers = answers.cast(chats.features)
    return interleave_datasets(
        [chats, answers], probabilities=[1 - fraction, fraction], seed=seed, stopping_strategy="all_exhausted"
    )


def add_flashcard_pairs(pairs: Dataset, flashcards: Dataset, per_prompt: int, seed: int) -> Dataset:
    """Pairs for the flashcard questions the preference file does not ask: the taught answer over up to `per_prompt`
    other questions' answers (drawn, seeded). A file of pairs for the held-out questions only (what a user writes:
    pairs for what they want changed) otherwise never shows DPO or the judge a trained question, and DPO drifts away
    from the answers SFT taught while the judge rates any story sentence as an answer to them."""
    if per_prompt <= 0 or "prompt" not in pairs.column_names:
        return pairs
    asked = {normalise(last_content(row["prompt"])) for row in pairs}
    taught = {}
    for row in flashcards:
        question, answer = flashcard_turns(row)
        taught.setdefault(normalise(last_content(question)), (as_messages(question, "user")[-1:], answer))
    answers = list(dict.fromkeys([last_content(a) for _, a in taught.values()]
                                 + [last_content(row["chosen"]) for row in pairs]))  # fmt: skip
    draw = random.Random(seed)
    added = []
    for question, (prompt, answer) in taught.items():
        if question in asked:
            continue
        others = [a for a in answers if normalise(a) != normalise(last_content(answer))]
        for other in draw.sample(others, per_prompt) if len(others) > per_prompt else others:
            added.append({"prompt": prompt, "chosen": as_messages(answer, "assistant"),
                          "rejected": [{"role": "assistant", "content": other}]})  # fmt: skip
    logger.info(f"{len(added)} pairs added: flashcard questions without pairs, their answer over other answers")
    if not added:
        return pairs
    added = [{column: row.get(column) for column in pairs.column_names} for row in added]  # e.g. a score column
    return concatenate_datasets([pairs, Dataset.from_list(added).cast(pairs.features)])


def add_flashcard_prompts(prompts: Dataset, flashcards: Dataset) -> Dataset:
    """PPO's prompts plus every flashcard question they do not ask: rewarded for the answers SFT taught, PPO keeps
    them; trained on the held-out questions alone, its updates carry the trained answers away."""
    asked = {normalise(last_content(row["prompt"])) for row in prompts}
    added = []
    for row in flashcards:
        question = flashcard_turns(row)[0]
        if normalise(last_content(question)) not in asked:
            asked.add(normalise(last_content(question)))
            added.append({"prompt": as_messages(question, "user")[-1:]})
    logger.info(f"{len(added)} flashcard questions added to the prompts")
    if not added:
        return prompts
    added = [{column: row.get(column) for column in prompts.column_names} for row in added]
    return concatenate_datasets([prompts, Dataset.from_list(added).cast(prompts.features)])


def rl_prompts(script_args, tokenizer, max_length: int, evaluate: bool, answer_length: int):
    """An RL stage's (train, eval) prompts, each with room for an answer of `answer_length` tokens, the flashcard
    questions they lack added to the training prompts (`flashcards_dataset_name`)."""
    train, held_out = load_splits(script_args, "prompts", tokenizer, max_length, evaluate, answer_length)
    if script_args.flashcards_dataset_name:
        train = add_flashcard_prompts(train, load_data(script_args.flashcards_dataset_name, "flashcards"))
    return train, held_out


def preference_pairs(script_args, pairs: Dataset, seed: int) -> Dataset:
    """The preference file plus what the reward and DPO recipes add to a sparse one (toyllm.args.PreferenceArguments):
    pairs for the flashcard questions it lacks, then other questions' answers as rejected."""
    if script_args.flashcards_dataset_name:
        flashcards = load_data(script_args.flashcards_dataset_name, "flashcards")
        pairs = add_flashcard_pairs(pairs, flashcards, script_args.other_answers_rejected, seed)
    return add_other_answers_as_rejected(pairs, script_args.other_answers_rejected, seed)


def add_other_answers_as_rejected(pairs: Dataset, per_prompt: int, seed: int) -> Dataset:
    """Each prompt's chosen answer also beats the chosen answers of up to `per_prompt` other prompts (drawn, seeded,
    where there are more): "who was geppetto" prefers "geppetto was a poor woodcarver" to "pinocchio became a real
    boy". A sparse preference file (2-4 rejected answers per question) never shows the judge another question's good
    answer as a wrong one, and the judge then learns which answers are good rather than which answer fits which
    question: it scored a trained answer to another question as high as the reference, and PPO took it
    (benchmarks/RESULTS.md, section 5). A pair the file already holds is not added again, and nor is an answer the
    prompt itself has as chosen. Rows without a separate `prompt` (TRL's implicit-prompt format) are left as they
    are."""
    if per_prompt <= 0 or "prompt" not in pairs.column_names:
        return pairs

    def key(value) -> str:
        return normalise(last_content(value))

    rows = pairs.to_list()
    first_row: dict[str, dict] = {}
    chosen: dict[str, set[str]] = {}
    rejected: set[tuple[str, str]] = set()
    for row in rows:
        question = key(row["prompt"])
        first_row.setdefault(question, row)
        chosen.setdefault(question, set()).add(key(row["chosen"]))
        rejected.add((question, key(row["rejected"])))
    draw = random.Random(seed)
    added = []
    for question, row in first_row.items():
        others = [other for other in first_row if other != question]
        for other in draw.sample(others, per_prompt) if len(others) > per_prompt else others:
            answer = first_row[other]["chosen"]
            if key(answer) not in chosen[question] and (question, key(answer)) not in rejected:
                added.append({**row, "rejected": answer})
    logger.info(f"{len(added)} pairs added: each prompt's chosen answer over other prompts' chosen answers")
    return concatenate_datasets([pairs, Dataset.from_list(added).cast(pairs.features)]) if added else pairs


def _eval_split_problems(path: Path, eval_rows: list, sft_rows: list) -> list[str]:
    """An eval row's split must say the truth about the flashcards: `trained` questions are asked in sft.jsonl,
    `held_out` and `unseen` ones are not (else the story's held-out numbers would measure memory)."""

    taught = {normalise(last_content(flashcard_turns(r)[0])) for _, r in sft_rows}
    problems = []
    for line, row in eval_rows:
        question, split = normalise(last_content(row["prompt"])), row["split"]
        if split == "trained" and question not in taught:
            problems.append(f"{path}:{line}: split: 'trained', but no flashcard of sft.jsonl asks {question!r}")
        elif split != "trained" and question in taught:
            problems.append(f"{path}:{line}: split: '{split}', but sft.jsonl teaches {question!r}; call it 'trained'")
    return problems


def _message_texts(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for message in value:
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                yield message["content"]


def iter_texts(path: str | Path) -> Iterator[str]:
    """Every piece of natural text in a JSONL file of any of our formats (used to train the vocabulary)."""
    with open(path, encoding="utf-8-sig") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            for key in ("text", "prompt", "completion", "chosen", "rejected", "messages", "reference"):
                if key in row:
                    yield from _message_texts(row[key])
