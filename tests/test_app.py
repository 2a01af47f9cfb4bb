"""`toyllm app`: every stage of a finished run answering one question side by side. The columns are checked against
`toyllm generate` run with the flags each column shows. The browser test, which drives the page in headless Chromium
as a learner would, serves the installed wheel's demo run (tests/test_wheel.py, slow, run by .ci/run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import generated

from toyllm.app import RunApp, build_app
from toyllm.cli import main

QUESTIONS = ["Who was Alice?", "who did alice follow"]  # held out, as people write; trained, as the data writes


@pytest.fixture(scope="module")
def run_app(demo_run) -> RunApp:
    return RunApp(demo_run[0])


def test_every_stage_and_round_of_the_run_is_a_column(run_app, demo_run):
    names = [column.name for column in run_app.columns]
    assert names == ["random", "pretrain", "sft", "ppo", "ppo-2", "rloo", "rloo-2", "dpo"]
    assert {c.name: c.how for c in run_app.columns}["random"] == "as text, sampled"
    assert {c.name: c.how for c in run_app.columns}["pretrain"] == "as text"
    assert run_app.judge is not None and run_app.sentences  # the last judge (reward-2) and the story's sentences


@pytest.mark.parametrize("question", QUESTIONS)
def test_each_column_answers_as_toyllm_generate_does(run_app, question, capsys):
    result = run_app.ask(question)
    for column in run_app.columns:
        answers, verdicts = result[column.name]
        assert answers == [generated(capsys, column.path, question, column.generate_flags(0))], column.name
        assert verdicts[0].startswith("judge ")


def test_the_sample_switch_draws_what_generate_draws_at_that_temperature_and_seed(run_app, capsys):
    answers, verdicts = run_app.ask(QUESTIONS[0], sample=True, samples=3, temperature=1.5, seed=7)["sft"]
    sft = next(c for c in run_app.columns if c.name == "sft")
    assert answers == [
        generated(capsys, sft.path, QUESTIONS[0], ["--do-sample", "--temperature", "1.5", "--seed", str(seed)])
        for seed in (7, 8, 9)
    ]
    assert len(verdicts) == 3


def test_the_verdict_says_whether_an_answer_is_a_sentence_of_the_story(run_app):
    answers, verdicts = run_app.ask(QUESTIONS[1])["sft"]
    assert answers == ["alice followed the white rabbit"]
    assert verdicts[0].endswith("a sentence of the story")
    assert run_app.verdicts(QUESTIONS[1], ["rabbit alice the the"])[0].endswith("not in the story")


def test_the_page_has_a_column_per_checkpoint_and_the_run_report(demo_run):
    page = build_app(demo_run[0])
    ids = {block.elem_id for block in page.blocks.values() if getattr(block, "elem_id", None)}
    assert {f"answer-{c.name}" for c in page.run.columns} <= ids
    assert {"question", "ask"} <= ids
    assert "| stage |" in page.run.report_text() and page.run.plots()


def test_a_folder_without_a_finished_run_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["app", "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and "no finished run here" in err


SPACE_CHECK = """
import json, os, sys
sys.path.insert(0, os.getcwd())
import toyllm
assert toyllm.__file__.startswith(os.getcwd()), toyllm.__file__  # the Space's own copy, not the installed one
from toyllm.app import build_app
page = build_app("run", data_dir="data")
print(json.dumps(page.run.ask("who did alice follow")))
"""


def test_a_space_folder_serves_the_run_with_its_own_copy_of_toyllm(demo_run, tmp_path, capsys):
    space = tmp_path / "space"
    main(["app", "--output-dir", str(demo_run[0]), "--space-dir", str(space)])
    assert "hf upload" in capsys.readouterr().out
    names = {path.relative_to(space).as_posix() for path in space.rglob("*") if path.is_file()}
    expected = {
        "app.py",
        "README.md",
        "requirements.txt",
        "toyllm/app.py",
        "toyllm/recipes/toy/sft.yaml",
        "toyllm/toy_config/config.json",
        "data/eval.jsonl",
        "run/report/metrics.json",
        "run/dpo/model.safetensors",
        "run/ppo/model.safetensors",
        "run/reward-2/model.safetensors",
    }
    assert expected <= names
    left_local = ("checkpoint-", "training_args.bin", "trainer_state.json", "toyllm_stage.json", "__pycache__")
    assert not [name for name in names if any(part in name for part in left_local)]
    assert not any(name.startswith("run/reward/") for name in names)  # only the last judge scores
    assert "sdk: gradio" in (space / "README.md").read_text()
    assert "trl==1.12.0" in (space / "requirements.txt").read_text()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", SPACE_CHECK], cwd=space, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    assert answers["sft"][0] == ["alice followed the white rabbit"]
    assert answers["sft"][1][0].endswith("a sentence of the story")
