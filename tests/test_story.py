"""The story the demo tells, on the shipped Alice data, a second story (Oz) and a sparse third one (Pinocchio: 8
flashcards, 30 pairs), for seeds 0, 1 and 2.

Alice seed 0 is the session's demo run and is checked in every test run; the other eight runs (about 45 s each on 2
cores) are marked slow and left out of the default run: `pytest -m slow` runs them, and benchmarks/story_grid.py
checks the same grid and records it.
"""

from __future__ import annotations

import pytest
from conftest import DATASETS

from toyllm.demo import run_demo

RUNS = [
    pytest.param((name, seed), marks=[] if (name, seed) == ("alice", 0) else [pytest.mark.slow], id=f"{name}-{seed}")
    for name in sorted(DATASETS)
    for seed in (0, 1, 2)
]


@pytest.fixture(scope="module", params=RUNS)
def story(request, demo_run, tmp_path_factory):
    name, seed = request.param
    if (name, seed) == ("alice", 0):
        return demo_run[1]
    return run_demo(DATASETS[name], tmp_path_factory.mktemp(f"{name}{seed}"), seed=seed)


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
KNOWN_FAILURES = {("ppo", ("pinocchio", 2)): "PPO loses 1 of 8 trained answers to a word mixture (0.88)"}


@pytest.mark.parametrize("stage", ["ppo", "dpo"])
def test_preference_tuning_keeps_the_trained_answers(story, stage, request):
    reason = KNOWN_FAILURES.get((stage, request.node.callspec.params["story"]))
    if reason:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    assert story["stages"][stage]["trained"]["exact_match"] >= 0.9


def test_dpo_answers_held_out_questions(story):
    assert story["stages"]["dpo"]["held_out"]["exact_match"] >= 0.5
