"""The story the demo tells, measured on the shipped Alice data and on a second story (Oz), for seeds 0, 1 and 2.

These run the whole demo (about 25 s each on 2 cores); their wall time is measured by benchmarks/demo_time.py.
"""

from __future__ import annotations

import pytest
from conftest import DATASETS

from toyllm.demo import run_demo


@pytest.fixture(scope="module", params=[(name, seed) for name in sorted(DATASETS) for seed in (0, 1, 2)])
def story(request, demo_run, tmp_path_factory):
    name, seed = request.param
    if (name, seed) == ("alice", 0):
        return demo_run[1]
    return run_demo(DATASETS[name], tmp_path_factory.mktemp(f"{name}{seed}"), seed=seed)


@pytest.mark.slow
def test_pretraining_cuts_perplexity_tenfold(story):
    stages = story["stages"]
    assert stages["pretrain"]["perplexity"] <= stages["random"]["perplexity"] / 10


@pytest.mark.slow
def test_pretrained_model_does_not_answer_but_sft_answers_every_trained_question(story):
    stages = story["stages"]
    assert stages["pretrain"]["trained"]["exact_match"] < 0.5
    assert stages["sft"]["trained"]["exact_match"] == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["ppo", "dpo"])
def test_preference_tuning_raises_the_judges_score_on_held_out_questions(story, stage):
    stages = story["stages"]
    assert stages[stage]["held_out"]["mean_reward"] > stages["sft"]["held_out"]["mean_reward"]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["ppo", "dpo"])
def test_preference_tuning_keeps_the_trained_answers(story, stage):
    assert story["stages"][stage]["trained"]["exact_match"] >= 0.9
