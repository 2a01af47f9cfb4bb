"""The story the demo tells, on the shipped Alice data, a second story (Oz), a sparse third one (Pinocchio: 8
flashcards, 30 pairs), and two written as people write (Goldilocks and Jack: capitals, punctuation, apostrophes,
pairs for the held-out questions only), for seeds 0, 1 and 2.

Alice seed 0 is the session's demo run and is checked in every test run; the other runs are marked slow and left
out of the default run: `pytest -m slow` runs them, and benchmarks/story_grid.py checks the same grid and records it.
"""

from __future__ import annotations

import pytest
from conftest import DATASETS, read_jsonl

from toyllm.data import DataFolder
from toyllm.demo import run_demo
from toyllm.generation import normalise

RUNS = [
    pytest.param((name, seed), marks=[] if (name, seed) == ("alice", 0) else [pytest.mark.slow], id=f"{name}-{seed}")
    for name in sorted(DATASETS)
    for seed in (0, 1, 2)
]


@pytest.fixture(scope="module", params=RUNS)
def story_run(request, demo_run, tmp_path_factory) -> tuple:
    """(output folder, metrics) of one demo run."""
    name, seed = request.param
    if (name, seed) == ("alice", 0):
        return demo_run
    output_dir = tmp_path_factory.mktemp(f"{name}{seed}")
    return output_dir, run_demo(DATASETS[name], output_dir, seed=seed)


@pytest.fixture
def story(story_run) -> dict:
    return story_run[1]


def test_pretraining_cuts_perplexity_tenfold(story):
    stages = story["stages"]
    assert stages["pretrain"]["perplexity"] <= stages["random"]["perplexity"] / 10


def test_pretrained_model_does_not_answer_but_sft_answers_every_trained_question(story):
    stages = story["stages"]
    assert stages["pretrain"]["trained"]["exact_match"] < 0.5
    assert stages["sft"]["trained"]["exact_match"] == 1.0
    assert stages["sft"]["held_out"]["exact_match"] <= 0.25  # it answers what it was taught, not new questions


def test_random_and_pretrained_models_say_something(story):
    for stage in ("random", "pretrain"):
        said = [bool(row[stage]) for row in story["responses"]]
        assert sum(said) / len(said) >= 0.8, stage


@pytest.mark.parametrize("stage", ["ppo", "dpo"])
def test_preference_tuning_raises_the_judges_score_on_held_out_questions(story, stage):
    stages = story["stages"]
    assert stages[stage]["held_out"]["mean_reward"] > stages["sft"]["held_out"]["mean_reward"]


# Known failures, each measured and recorded in benchmarks/RESULTS.md (section 4); strict, so a fix shows up.
KNOWN_FAILURES: dict = {}  # Pinocchio 2's lost trained answer no longer happens (RESULTS.md, section 6)


@pytest.mark.parametrize("stage", ["ppo", "dpo"])
def test_preference_tuning_keeps_the_trained_answers(story, stage, request):
    reason = KNOWN_FAILURES.get((stage, request.node.callspec.params["story_run"]))
    if reason:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    assert story["stages"][stage]["trained"]["exact_match"] >= 0.9


def test_dpo_answers_held_out_questions(story):
    assert story["stages"]["dpo"]["held_out"]["exact_match"] >= 0.5


def test_no_feedback_pair_rejects_the_preferred_answer(story_run, request):
    """The labeller compares answers as the vocabulary reads them: "The bear's porridge." is the answer it prefers,
    never a rejected "the bear's porridge"."""
    output_dir, _ = story_run
    known = DataFolder(DATASETS[request.node.callspec.params["story_run"][0]]).known_answers()
    pairs = [pair for path in sorted((output_dir / "feedback").glob("round-*.jsonl")) for pair in read_jsonl(path)]
    assert pairs
    for pair in pairs:
        preferred = known[normalise(pair["prompt"][-1]["content"])]
        assert pair["chosen"][-1]["content"] == preferred
        assert normalise(pair["rejected"][-1]["content"]) != normalise(preferred)
