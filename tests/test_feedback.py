"""Feedback rounds: the simulated labeller's pairs, the judge's growing training file, and the demo's round table."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import ALICE, logged, read_jsonl

from toyllm.cli import main as toyllm
from toyllm.data import DataFolder
from toyllm.errors import UserError
from toyllm.feedback import Labelling, feedback_paths, label_round
from toyllm.generation import normalise


def test_labeller_prefers_the_known_answer_to_every_different_sample(demo_run, tmp_path):
    demo_dir, _ = demo_run
    pairs_path, judge_path = label_round(demo_dir / "ppo", ALICE, 1, tmp_path, Labelling(samples=8))
    pairs = read_jsonl(pairs_path)
    known = DataFolder(ALICE).known_answers()
    assert pairs and len({json.dumps(p, sort_keys=True) for p in pairs}) == len(pairs)  # no duplicate pair
    for pair in pairs:
        question = normalise(pair["prompt"][-1]["content"])
        assert pair["chosen"] == [{"role": "assistant", "content": known[question]}]
        assert pair["rejected"][0]["content"] not in ("", known[question])
    human = read_jsonl(ALICE / "preference.jsonl")
    assert read_jsonl(judge_path) == human + pairs  # the judge's next training file: human pairs, then feedback


def test_labelled_pairs_are_kept_for_the_same_policy_and_refused_for_another(demo_run, tmp_path):
    demo_dir, _ = demo_run
    pairs_path, _ = label_round(demo_dir / "ppo", ALICE, 1, tmp_path, Labelling(samples=4))
    edited = read_jsonl(pairs_path)[:1]  # a real labeller kept one pair
    pairs_path.write_text(json.dumps(edited[0]) + "\n")
    _, judge_path = label_round(demo_dir / "ppo", ALICE, 1, tmp_path, Labelling(samples=4))
    assert read_jsonl(pairs_path) == edited and read_jsonl(judge_path)[-1] == edited[0]
    with pytest.raises(UserError, match="labelled from another policy; pass --overwrite"):
        label_round(demo_dir / "sft", ALICE, 1, tmp_path, Labelling(samples=4))
    assert read_jsonl(pairs_path) == edited


def test_label_command_writes_the_round_files(demo_run, tmp_path, capsys):
    demo_dir, _ = demo_run
    args = ["label", "--policy", str(demo_dir / "ppo"), "--data-dir", str(ALICE), "--output-dir", str(tmp_path)]
    assert toyllm([*args, "--round", "1", "--samples", "2"]) == 0
    assert capsys.readouterr().out.split() == [str(p) for p in feedback_paths(tmp_path, 1)]
    with pytest.raises(SystemExit) as exit_info:
        toyllm([*args, "--round", "3"])  # round 2 was never labelled
    assert exit_info.value.code == 2 and "round-2.jsonl: not found" in capsys.readouterr().err


def test_demo_runs_the_rounds_and_reports_them(demo_run):
    demo_dir, metrics = demo_run
    rounds = metrics["rounds"]
    assert [row["round"] for row in rounds] == [1, 2]
    assert (demo_dir / "ppo-2" / "toyllm_stage.json").is_file() and (demo_dir / "reward-2").is_dir()
    assert rounds[0]["new_pairs"] == len(read_jsonl(feedback_paths(demo_dir, 1)[0]))
    judge_data = read_jsonl(feedback_paths(demo_dir, 1)[1])
    assert len(judge_data) == len(read_jsonl(ALICE / "preference.jsonl")) + rounds[0]["new_pairs"]
    assert "## Feedback rounds" in (demo_dir / "report" / "report.md").read_text()


def test_a_story_without_known_answers_cannot_be_labelled(tmp_path, demo_run):
    demo_dir, _ = demo_run
    data = tmp_path / "data"
    shutil.copytree(ALICE, data)
    (data / "prompts.jsonl").write_text(json.dumps({"prompt": [{"role": "user", "content": "who smiled"}]}) + "\n")
    with pytest.raises(UserError, match="no PPO prompt has a known preferred answer"):
        label_round(demo_dir / "ppo", data, 1, tmp_path / "out")


def test_ppo_logs_the_labellers_verdict_beside_the_judges_score(demo_run):
    """gold/agreement every 8 steps: the share of PPO prompts whose greedy answer is the preferred one. SFT answers
    every trained prompt (10 of the 15 PPO prompts) and no held-out one, so PPO's first check sees about 10/15."""
    demo_dir, _ = demo_run
    gold = logged(demo_dir / "ppo", "gold/agreement")
    assert sorted(gold) == list(range(1, max(gold) + 1, 8)) and len(gold) >= 8
    assert abs(gold[1] - 10 / 15) <= 1 / 15
    assert (demo_dir / "report" / "rounds.png").is_file()


def test_readme_label_command_after_the_demo_keeps_its_pairs(demo_run, capsys):
    """README's loop by hand, run over the demo's folder: the same policy's pairs are kept, not relabelled."""
    demo_dir, _ = demo_run
    pairs_path = feedback_paths(demo_dir, 1)[0]
    before = pairs_path.read_bytes()
    args = ["label", "--policy", str(demo_dir / "ppo"), "--data-dir", str(ALICE), "--round", "1"]
    assert toyllm([*args, "--output-dir", str(demo_dir)]) == 0
    assert pairs_path.read_bytes() == before
