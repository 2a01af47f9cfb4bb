"""A story in one plain Markdown file, made into the five JSONL files of a data folder (`toyllm story`).

The preference pairs follow what the toy taught us about a judge (docs/story.md, "Write your own story"): for every
flashcard and held-out question, the preferred answer over near misses (stopped after its first word, one word
dropped), the question echoed back, the story's sentences that share the question's words, every other question's
answer, and any wrong answers the writer gives.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from toyllm.data import DATA_FILES, DataFolder
from toyllm.errors import UserError
from toyllm.generation import normalise

SECTIONS = {"story": "story", "flashcards": "trained", "held-out questions": "held_out", "unseen questions": "unseen"}
LABELS = {"q": "q", "question": "q", "a": "a", "answer": "a", "not": "not", "wrong": "not"}
# A sentence ends at . ! or ? (and any closing quote or bracket) before a capital, an opening quote or a digit.
SENTENCE_END = re.compile(r"(?<=[.!?])([\"'”’)\]]*)\s+(?=[\"'“‘(\[]?[A-Z0-9])")
ABBREVIATIONS = {"mr.", "mrs.", "ms.", "dr.", "st.", "mt.", "jr.", "sr.", "prof."}
COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
# Words that carry no meaning of their own: story sentences that share only these with a question are not near it.
FUNCTION_WORDS = set(
    "a an and are as at be by did do does for from had has have he her him his how i in into is it its of on or "
    "she so that the their them then they this to was were what when where which who whom whose why with you".split()
)
STORY_NEIGHBOURS = 3  # story sentences near a question, given as rejected answers


@dataclass
class Card:
    """A question with its preferred answer, the file's line it starts on, and the wrong answers the writer gave."""

    question: str
    answer: str | None
    line: int
    split: str
    wrong: list[str] = field(default_factory=list)


@dataclass
class Story:
    sentences: list[str]
    cards: list[Card]

    def split(self, name: str) -> list[Card]:
        return [card for card in self.cards if card.split == name]


def split_sentences(paragraph: str) -> list[str]:
    """A paragraph's sentences. One without a . ! or ? anywhere is read one sentence a line (lowercase notes)."""
    lines = [line.strip() for line in paragraph.splitlines() if line.strip()]
    if not re.search(r"[.!?]", paragraph):
        return lines
    pieces, sentences = SENTENCE_END.split(" ".join(lines)), []
    # re.split keeps the closing quote group: glue it back to the sentence it ends
    for text, closing in zip(pieces[::2], pieces[1::2] + [""]):
        sentence = (text + closing).strip()
        if sentences and sentences[-1].split()[-1].lower() in ABBREVIATIONS:
            sentences[-1] += " " + sentence
        elif sentence:
            sentences.append(sentence)
    return sentences


def parse_story(path: Path) -> Story:
    """The file's story and questions; a line it cannot read is a UserError naming it."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    # Comments are blanked line for line, so every later line keeps its number.
    text = COMMENT.sub(lambda m: "\n" * m.group().count("\n"), text)
    section, paragraph, sentences, cards = None, [], [], []
    seen_sections: set[str] = set()

    def end_paragraph():
        if paragraph:
            sentences.extend(split_sentences("\n".join(paragraph)))
            paragraph.clear()

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("#"):
            end_paragraph()
            section = _section(line, f"{path}:{number}", seen_sections) or section
        elif section is None or not line:
            end_paragraph()  # before the first section: the title and notes
        elif section == "story":
            paragraph.append(line)
        else:
            _card_line(cards, line, path, number, section)
    end_paragraph()
    if cards and cards[-1].answer is None:
        raise UserError(f"{path}:{cards[-1].line}: question {cards[-1].question!r} has no 'A:' line")
    story = Story(sentences, cards)
    _check_story(path, story)
    return story


def _section(line: str, where: str, seen_sections: set[str]) -> str | None:
    """The section a "##" heading opens (None for the "#" title): "## Held out", "## Flashcard questions",
    "## Unseen" are known by their first word."""
    level, title = len(line) - len(line.lstrip("#")), line.lstrip("#").strip()
    if level == 1:
        return None
    first = title.lower().replace("held out", "held-out").split(maxsplit=1)[0] if title else ""
    key = next((name for name in SECTIONS if name.split()[0].rstrip("s") == first.rstrip("s")), None)
    if key is None:
        raise UserError(f"{where}: unknown section {title!r}: a story file has the sections "
                        f"{', '.join(repr(s.capitalize()) for s in SECTIONS)}")  # fmt: skip
    if key in seen_sections:
        raise UserError(f"{where}: a second {title!r} section; put its lines under the first")
    seen_sections.add(key)
    return SECTIONS[key]


def _card_line(cards: list[Card], line: str, path: Path, number: int, section: str) -> None:
    """A "Q:", "A:" or "Not:" line of a questions section, added to the cards."""
    where = f"{path}:{number}"
    label, _, value = line.lstrip("-*").strip().partition(":")  # a Markdown bullet before "Q:" is read past
    label, value = LABELS.get(label.strip().lower()), value.strip()
    if label is None or not value:
        raise UserError(f"{where}: expected 'Q: question', 'A: answer' or 'Not: a wrong answer', got {line!r}")
    if label == "q":
        if cards and cards[-1].answer is None:
            raise UserError(f"{path}:{cards[-1].line}: question {cards[-1].question!r} has no 'A:' line")
        cards.append(Card(value, None, number, section))
    elif not cards or cards[-1].split != section or (label == "a" and cards[-1].answer is not None):
        raise UserError(f"{where}: {label.upper() if label != 'not' else 'Not'}: line without its 'Q:' line "
                        "above it")  # fmt: skip
    elif label == "a":
        cards[-1].answer = value
    elif section == "unseen":
        raise UserError(f"{where}: 'Not:' under an unseen question: unseen questions are in no training file")
    elif cards[-1].answer is None:
        raise UserError(f"{where}: 'Not:' before the 'A:' line of {cards[-1].question!r}")
    else:
        cards[-1].wrong.append(value)


def _check_story(path: Path, story: Story) -> None:
    if not story.sentences:
        raise UserError(f"{path}: no story: write its sentences under a '## Story' heading")
    if not story.split("trained"):
        raise UserError(f"{path}: no flashcards: add 'Q:' and 'A:' lines under a '## Flashcards' heading")
    first: dict[str, Card] = {}
    for card in story.cards:
        key = normalise(card.question)
        if not key:
            raise UserError(f"{path}:{card.line}: question {card.question!r} has no words")
        if not normalise(card.answer):
            raise UserError(f"{path}:{card.line}: the answer to {card.question!r} has no words")
        if key in first:
            raise UserError(f"{path}:{card.line}: {card.question!r} is asked again (line {first[key].line}); "
                            "a question is a flashcard, held out or unseen, once")  # fmt: skip
        first[key] = card
        for wrong in card.wrong:
            if normalise(wrong) == normalise(card.answer):
                raise UserError(f"{path}:{card.line}: {card.question!r}: 'Not: {wrong}' is its own answer")


def near_misses(answer: str) -> list[str]:
    """The answer stopped after its first word, and with each later word dropped: what a model that has nearly
    learnt it writes."""
    words = answer.split()
    if len(words) < 2:
        return []
    dropped = [" ".join(words[:i] + words[i + 1 :]) for i in range(1, len(words))] if len(words) > 2 else []
    return [words[0], *dropped]


def story_neighbours(question: str, sentences: list[str], count: int = STORY_NEIGHBOURS) -> list[str]:
    """The story's sentences sharing the most meaningful words with the question, in story order on a tie."""
    asked = set(normalise(question).split()) - FUNCTION_WORDS
    shared = [(len(asked & set(normalise(s).split())), i) for i, s in enumerate(sentences)]
    ranked = sorted((pair for pair in shared if pair[0] > 0), key=lambda pair: (-pair[0], pair[1]))
    return [sentences[i] for _, i in ranked[:count]]


def rejected_answers(card: Card, story: Story) -> list[str]:
    """A judge learns which answer fits the question only from pairs that show it: the writer's wrong answers, near
    misses, the question echoed, the story's sentences near the question, and every other question's answer. Unseen
    answers are never rejected: those questions are in no training file."""
    others = [c.answer for c in story.cards if c is not card and c.split != "unseen"]
    candidates = [*card.wrong, *near_misses(card.answer), card.question,
                  *story_neighbours(card.question, story.sentences), *others]  # fmt: skip
    right, kept, seen = normalise(card.answer), [], set()
    for text in candidates:
        key = normalise(text)
        if key and key != right and key not in seen:
            seen.add(key)
            kept.append(text)
    return kept


def data_rows(story: Story) -> dict[str, list[dict]]:
    """The five files' rows, in TRL's formats."""

    def user(text):
        return [{"role": "user", "content": text}]

    def assistant(text):
        return [{"role": "assistant", "content": text}]

    asked = story.split("held_out") + story.split("trained")  # what PPO is asked: held-out questions first
    return {
        "pretrain": [{"text": sentence} for sentence in story.sentences],
        "flashcards": [{"messages": user(c.question) + assistant(c.answer)} for c in story.split("trained")],
        "preference": [
            {"prompt": user(c.question), "chosen": assistant(c.answer), "rejected": assistant(wrong)}
            for c in asked
            for wrong in rejected_answers(c, story)
        ],
        "prompts": [{"prompt": user(c.question)} for c in asked],
        "eval": [
            {"prompt": c.question, "reference": c.answer, "split": c.split}
            for split in ("trained", "held_out", "unseen")
            for c in story.split(split)
        ],
    }


def answers_outside_story(story: Story) -> list[Card]:
    """Cards whose answer is no sentence of the story: the toy model can say only what it read."""
    said = {normalise(s) for s in story.sentences}
    return [c for c in story.cards if normalise(c.answer) not in said]


def write_data_folder(story_file: str | Path, output_dir: str | Path, overwrite: bool = False) -> tuple[Story, dict]:
    """Parse the story file and write its data folder, checked as `toyllm demo` checks one; return the story and the
    rows written per file and questions per split. On any problem nothing is written; a folder that already holds a
    data file is kept unless `overwrite`."""
    story_file, output_dir = Path(story_file), Path(output_dir)
    story = parse_story(story_file)
    existing = [name for name in DATA_FILES.values() if (output_dir / name).exists()]
    if existing and not overwrite:
        raise UserError(f"{output_dir}: already holds {', '.join(existing)}; choose another --output-dir or pass "
                        "--overwrite")  # fmt: skip
    rows = data_rows(story)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        for kind, name in DATA_FILES.items():
            text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows[kind])
            (scratch / name).write_text(text, encoding="utf-8")
        try:
            DataFolder(scratch).check()
        except UserError as error:  # a rule the story broke, named by the story file rather than the scratch copy
            problems = [f"{story_file}: {p.replace(str(scratch) + os.sep, '')}" for p in error.problems]
            raise UserError(problems) from None
        output_dir.mkdir(exist_ok=True)
        for name in DATA_FILES.values():
            os.replace(scratch / name, output_dir / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    counts = {kind: len(kind_rows) for kind, kind_rows in rows.items()}
    return story, counts | {split: len(story.split(split)) for split in ("trained", "held_out", "unseen")}
