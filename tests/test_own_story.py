"""A story written the way people write (capitals, punctuation, apostrophes, pairs only for the held-out questions),
and the rough paths a newcomer hits on the way in, each tried from the user's side."""

from __future__ import annotations

import fcntl
import json
import shutil

import pytest
from conftest import ALICE, REPO, read_jsonl

from toyllm.cli import main as toyllm
from toyllm.data import DataFolder, add_flashcard_pairs, load_data
from toyllm.demo import LOCK_FILE, run_demo
from toyllm.errors import UserError
from toyllm.generation import normalise
from toyllm.toy import random_fingerprint, train_word_level_tokenizer

GOLDILOCKS = REPO / "tests" / "data" / "goldilocks"
TOY_CONFIG = REPO / "toy_config"


@pytest.fixture
def story(tmp_path):
    folder = tmp_path / "story"
    shutil.copytree(GOLDILOCKS, folder)
    return folder


def write_rows(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_answers_compare_as_the_vocabulary_reads_them(story):
    tokenizer = train_word_level_tokenizer(story, TOY_CONFIG)
    written = "Baby Bear’s porridge was just right!"
    assert tokenizer.tokenize(written) == ["baby", "bear's", "porridge", "was", "just", "right"]
    assert normalise(written) == tokenizer.decode(tokenizer(written)["input_ids"]).strip()
    assert normalise("Who was 'Father Bear'?") == "who was father bear"


def test_a_story_as_people_write_it_passes_every_check(story):
    rows = DataFolder(story).check()
    known = DataFolder(story).known_answers()
    for _, row in rows["prompts"]:  # capitalised, with a question mark: matched all the same
        assert normalise(row["prompt"][-1]["content"]) in known


def test_a_prompt_without_a_preferred_answer_is_named_before_anything_is_written(story, tmp_path, capsys):
    write_rows(story / "prompts.jsonl", read_jsonl(story / "prompts.jsonl") + [{"prompt": "Who ate the cake?"}])
    output = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        toyllm(["demo", "--data-dir", str(story), "--output-dir", str(output)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "prompts.jsonl:5: prompt: no preferred answer for 'Who ate the cake?'" in err and "Traceback" not in err
    assert not output.exists()


def test_held_out_questions_need_pairs_and_references_must_be_the_preferred_answers(story):
    rows = read_jsonl(story / "eval.jsonl")
    rows[8]["reference"] = "Father Bear was very small."  # held out: the file prefers "Father Bear was very big."
    rows[0]["reference"] = "The bears lived in a cave."  # trained: the flashcard teaches another answer
    write_rows(story / "eval.jsonl", rows + [{"prompt": "Who was Mother Bear?", "reference": "Mother Bear was kind.",
                                              "split": "held_out"}])  # fmt: skip
    with pytest.raises(UserError) as error:
        DataFolder(story).check()
    problems = "\n".join(error.value.problems)
    assert (
        "eval.jsonl:9: reference: 'Father Bear was very small.', but training prefers 'father bear was very big'"
        in (problems)
    )
    assert "eval.jsonl:1: reference: 'The bears lived in a cave.'" in problems
    assert "eval.jsonl:16: split: 'held_out', but preference.jsonl has no pair for 'Who was Mother Bear?'" in problems


def test_evaluation_never_changes_what_is_trained(story):
    before = train_word_level_tokenizer(story, TOY_CONFIG).get_vocab()
    fingerprint = random_fingerprint(story, TOY_CONFIG, seed=0)
    rows = read_jsonl(story / "eval.jsonl")
    write_rows(story / "eval.jsonl", rows + [{"prompt": "Who owned a spaceship?", "reference": "Nobody did.",
                                              "split": "unseen"}])  # fmt: skip
    assert train_word_level_tokenizer(story, TOY_CONFIG).get_vocab() == before
    assert random_fingerprint(story, TOY_CONFIG, seed=0) == fingerprint


def test_flashcard_questions_without_pairs_get_pairs_and_a_dense_file_gets_none():
    sparse = load_data(GOLDILOCKS / "preference.jsonl", "preference")
    flashcards = load_data(GOLDILOCKS / "sft.jsonl", "flashcards")
    added = add_flashcard_pairs(sparse, flashcards, per_prompt=4, seed=0).to_list()[len(sparse) :]
    taught = {normalise(r["messages"][0]["content"]): r["messages"][1]["content"] for r in flashcards}
    assert len(added) == 4 * len(taught)
    for pair in added:
        question = normalise(pair["prompt"][-1]["content"])
        assert pair["chosen"][0]["content"] == taught[question]
        assert normalise(pair["rejected"][0]["content"]) != normalise(taught[question])
    alice = load_data(ALICE / "preference.jsonl", "preference")
    assert add_flashcard_pairs(alice, load_data(ALICE / "sft.jsonl", "flashcards"), 4, seed=0) is alice


def test_a_byte_order_mark_is_read_past(story):
    path = story / "pretrain.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert DataFolder(story).check()["pretrain"][0][1]["text"].startswith("Once upon a time")


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_a_seed_out_of_range_is_one_line_and_writes_nothing(seed, tmp_path, capsys):
    output = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        toyllm(["demo", "--seed", seed, "--output-dir", str(output)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: --seed: {seed}; a seed is a whole number from 0 to 2**32 - 1"
    assert not output.exists()


@pytest.mark.parametrize("model", ["models/missing.gguf", "./no-such-model"])
def test_a_missing_real_model_is_one_line_and_writes_nothing(model, tmp_path, capsys):
    output = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        toyllm(["demo", "--model", str(tmp_path / model), "--output-dir", str(output)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().startswith(f"error: --model: {tmp_path / model}")
    assert not output.exists()


def test_an_output_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "taken").write_text("mine\n")
    with pytest.raises(SystemExit) as exit_info:
        toyllm(["demo", "--output-dir", str(tmp_path / "taken" / "toy")])
    assert exit_info.value.code == 2
    assert "is a file; give a folder" in capsys.readouterr().err
    assert (tmp_path / "taken").read_text() == "mine\n"


def test_a_second_demo_into_the_same_folder_is_refused_and_names_the_first(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    with open(output / LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write("pid 4242, started today\n")
        lock.flush()
        with pytest.raises(UserError, match=r"another toyllm demo is running in this folder \(pid 4242"):
            run_demo(GOLDILOCKS, output)
    assert not (output / "random").exists()


def test_the_tables_and_the_plot_say_which_round_the_rl_columns_are(demo_run):
    demo_dir, metrics = demo_run
    assert metrics["stages"]["ppo"]["checkpoint"] == "ppo-2" and metrics["stages"]["rloo"]["checkpoint"] == "rloo-2"
    report = (demo_dir / "report" / "report.md").read_text()
    assert "| ppo (ppo-2) |" in report and "| rloo (rloo-2) |" in report
    assert "### RLHF, per step (ppo-2, rloo-2: the last round)" in report and "## One judge, two RL methods" in report
