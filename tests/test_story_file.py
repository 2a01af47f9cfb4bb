"""`toyllm story`: a story in one Markdown file becomes a data folder the demo runs. The shipped data/alice.md tells
the story data/ tells; a file it cannot use is one line naming the line, exit code 2, and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ALICE, REPO, read_jsonl

from toyllm.cli import main
from toyllm.data import DATA_FILES, DataFolder
from toyllm.generation import normalise
from toyllm.story import near_misses, parse_story, split_sentences

STORIES = sorted([REPO / "data" / "alice.md", REPO / "data" / "story-template.md",
                  *(REPO / "tests" / "data" / "stories").glob("*.md")])  # fmt: skip


def build(story: Path, output_dir: Path, *flags: str) -> Path:
    main(["story", str(story), "--output-dir", str(output_dir), *flags])
    return output_dir


def pairs_by_question(folder: Path) -> dict[str, tuple[set, set]]:
    found: dict[str, tuple[set, set]] = {}
    for row in read_jsonl(folder / "preference.jsonl"):
        chosen, rejected = found.setdefault(normalise(row["prompt"][0]["content"]), (set(), set()))
        chosen.add(normalise(row["chosen"][0]["content"]))
        rejected.add(normalise(row["rejected"][0]["content"]))
    return found


def normalised_rows(path: Path) -> list:
    return [{k: normalise(str(v)) for k, v in row.items()} for row in read_jsonl(path)]


def test_alice_md_tells_the_story_data_tells(tmp_path):
    built = build(REPO / "data" / "alice.md", tmp_path / "alice")
    for name in ("pretrain.jsonl", "eval.jsonl", "prompts.jsonl"):
        assert normalised_rows(built / name) == normalised_rows(ALICE / name), name
    flashcards = {(normalise(r["messages"][-2]["content"]), normalise(r["messages"][-1]["content"]))
                  for r in read_jsonl(ALICE / "sft.jsonl")}  # fmt: skip
    assert {(normalise(r["messages"][0]["content"]), normalise(r["messages"][1]["content"]))
            for r in read_jsonl(built / "sft.jsonl")} == flashcards  # fmt: skip
    ours, theirs = pairs_by_question(built), pairs_by_question(ALICE)
    assert ours.keys() == theirs.keys()
    for question, (chosen, rejected) in ours.items():
        assert chosen == theirs[question][0]
        assert len(rejected & theirs[question][1]) >= 0.6 * len(theirs[question][1]), question


@pytest.mark.parametrize("story", STORIES, ids=lambda p: p.stem)
def test_every_shipped_story_builds_a_folder_that_passes_the_demos_checks(story, tmp_path):
    folder = build(story, tmp_path / story.stem)
    rows = DataFolder(folder).check()
    parsed = parse_story(story)
    assert len(rows["pretrain"]) == len(parsed.sentences)
    for question, (chosen, rejected) in pairs_by_question(folder).items():
        assert len(chosen) == 1 and not chosen & rejected, question  # no pair rejects the preferred answer
        (answer,) = chosen
        assert set(map(normalise, near_misses(answer))) <= rejected | {answer}  # near misses
        others = {normalise(c.answer) for c in parsed.cards if c.split != "unseen"} - {answer}
        assert others <= rejected  # every other question's answer
    unseen = {normalise(c.question) for c in parsed.split("unseen")}
    trained_on = {normalise(r["prompt"][0]["content"]) for r in read_jsonl(folder / "preference.jsonl")}
    trained_on |= {normalise(r["messages"][0]["content"]) for r in read_jsonl(folder / "sft.jsonl")}
    assert not unseen & trained_on  # unseen questions are in no training file


def test_sentences_are_split_as_people_punctuate():
    text = 'Mr. Fox saw the grapes. "Off with her head!" shouted the Queen.\nShe ran home! Did he? Yes.'
    assert split_sentences(text) == ["Mr. Fox saw the grapes.", '"Off with her head!" shouted the Queen.',
                                     "She ran home!", "Did he?", "Yes."]  # fmt: skip
    assert split_sentences("alice followed the white rabbit\nthe white rabbit was late") == [
        "alice followed the white rabbit", "the white rabbit was late"]  # fmt: skip


def test_the_template_prints_a_story_that_builds(tmp_path, capsys):
    main(["story", "--template"])
    (tmp_path / "mine.md").write_text(capsys.readouterr().out)
    build(tmp_path / "mine.md", tmp_path / "mine")
    assert DataFolder(tmp_path / "mine").is_complete()


def test_the_default_folder_is_the_story_files_name(tmp_path, monkeypatch, capsys):
    (tmp_path / "fox.md").write_text((REPO / "data" / "story-template.md").read_text())
    monkeypatch.chdir(tmp_path)
    main(["story", "fox.md"])
    assert DataFolder(tmp_path / "fox").is_complete()
    assert "next: toyllm demo --data-dir fox" in capsys.readouterr().out


GOOD = """# A fox

## Story

A fox saw the grapes. The fox wanted the grapes. The fox went home.

## Flashcards

Q: What did the fox see?
A: A fox saw the grapes.

## Held-out questions

Q: What did the fox want?
A: The fox wanted the grapes.
"""

BROKEN = {
    "unknown section": (GOOD.replace("## Flashcards", "## Cards"), 7, "unknown section 'Cards'"),
    "answer missing": (GOOD.replace("A: A fox saw the grapes.\n", ""), 9, "has no 'A:' line"),
    "stray line": (GOOD.replace("A: A fox saw the grapes.", "The fox saw the grapes."), 10, "expected 'Q: question'"),
    "answer without question": (GOOD.replace("Q: What did the fox see?\n", ""), 9, "without its 'Q:' line"),
    "asked twice": (GOOD.replace("What did the fox want?", "What did the fox see?"), 14, "is asked again (line 9)"),
    "wrong answer under unseen": (GOOD + "\n## Unseen questions\n\nQ: Who?\nA: The fox.\nNot: The grapes.\n", 21,
                                  "'Not:' under an unseen question"),
    "wrong answer is the answer": (GOOD + "Not: the fox wanted the grapes\n", 14, "is its own answer"),
    "no flashcards": (GOOD.replace("## Flashcards", "## Unseen questions"), None, "no flashcards"),
    "no story": (GOOD.replace("A fox saw the grapes. The fox wanted the grapes. The fox went home.", ""), None,
                 "no story"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_story_is_one_line_naming_the_line_and_writes_nothing(case, tmp_path, capsys):
    text, line, message = BROKEN[case]
    story = tmp_path / "story.md"
    story.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        build(story, tmp_path / "out")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and message in err, err
    assert f"{story}:{line}:" in err if line else f"{story}:" in err
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["story.md"]  # no scratch folder left behind


def test_a_folder_that_holds_data_is_kept_unless_overwrite(tmp_path, capsys):
    story = tmp_path / "fox.md"
    story.write_text(GOOD)
    out = tmp_path / "out"
    out.mkdir()
    (out / "sft.jsonl").write_text("mine\n")
    with pytest.raises(SystemExit) as exit_info:
        build(story, out)
    assert exit_info.value.code == 2 and "already holds sft.jsonl" in capsys.readouterr().err
    assert (out / "sft.jsonl").read_text() == "mine\n"
    build(story, out, "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == sorted(DATA_FILES.values())


def test_a_file_that_is_not_utf8_is_one_line(tmp_path, capsys):
    story = tmp_path / "story.md"
    story.write_bytes(GOOD.encode("utf-16"))
    with pytest.raises(SystemExit) as exit_info:
        build(story, tmp_path / "out")
    assert exit_info.value.code == 2 and "not UTF-8 text" in capsys.readouterr().err


def test_an_answer_the_story_never_says_is_noted(tmp_path, capsys):
    story = tmp_path / "fox.md"
    story.write_text(GOOD.replace("A: The fox wanted the grapes.", "A: The fox was hungry."))
    build(story, tmp_path / "out")
    err = capsys.readouterr().err
    assert f"{story}:14: the answer 'The fox was hungry.' is no sentence of the story" in err


def test_headings_and_labels_are_read_as_people_vary_them(tmp_path):
    varied = (GOOD.replace("## Held-out questions", "## Held out")
              .replace("Q: What did the fox see?", "- Question: What did the fox see?")
              .replace("A: A fox saw the grapes.", "- answer: A fox saw the grapes."))  # fmt: skip
    (tmp_path / "good.md").write_text(GOOD)
    (tmp_path / "varied.md").write_text(varied)
    for name in ("good", "varied"):
        build(tmp_path / f"{name}.md", tmp_path / name)
    for file in DATA_FILES.values():
        assert (tmp_path / "good" / file).read_text() == (tmp_path / "varied" / file).read_text(), file
