"""`toyllm app`: every stage of a finished run answering one question side by side. The columns are checked against
`toyllm generate` run with the flags each column shows; the browser test (slow, run by .ci/run) drives the page in
headless Chromium as a learner would."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from toyllm.app import RunApp, build_app
from toyllm.cli import main

QUESTIONS = ["Who was Alice?", "who did alice follow"]  # held out, as people write; trained, as the data writes
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run_app(demo_run) -> RunApp:
    return RunApp(demo_run[0])


def generated(capsys, path: Path, question: str, flags: list[str]) -> str:
    """What `toyllm generate` prints for this checkpoint, question and flags."""
    main(["generate", "--model", str(path), *flags, question])
    return capsys.readouterr().out.strip()


def test_every_stage_and_round_of_the_run_is_a_column(run_app, demo_run):
    names = [column.name for column in run_app.columns]
    assert names == ["random", "pretrain", "sft", "ppo", "ppo-2", "dpo"]
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(demo_run, tmp_path):
    """`toyllm app` serving the demo run on 127.0.0.1, as a user starts it."""
    port = free_port()
    toyllm = Path(sys.executable).with_name("toyllm")
    log = open(tmp_path / "app.log", "w")
    command = [str(toyllm), "app", "--output-dir", str(demo_run[0]), "--port", str(port)]
    env = os.environ | {"GRADIO_ANALYTICS_ENABLED": "0"}
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            assert server.poll() is None, (tmp_path / "app.log").read_text()
            time.sleep(0.5)
    else:
        pytest.fail(f"toyllm app did not answer on {url}: {(tmp_path / 'app.log').read_text()[-2000:]}")
    yield url
    server.terminate()
    server.wait(timeout=30)
    log.close()


# Chromium as root in a closed network: no sandbox, and none of its own background connections.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_a_typed_question_is_answered_by_every_stage_in_a_real_browser(served, demo_run, capsys, tmp_path):
    from playwright.sync_api import sync_playwright

    question = QUESTIONS[0]
    run = RunApp(demo_run[0])
    expected = {c.name: generated(capsys, c.path, question, c.generate_flags(0)) for c in run.columns}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(served)
        page.locator("#question textarea").fill(question)
        start = time.perf_counter()
        page.locator("#ask").click()
        last = f"#answer-{run.columns[-1].name} textarea"
        page.wait_for_function(f"document.querySelector('{last}').value.length > 0", timeout=60_000)
        seconds = time.perf_counter() - start
        shown = {name: page.locator(f"#answer-{name} textarea").input_value() for name in expected}
        verdicts = {name: page.locator(f"#verdict-{name}").inner_text() for name in expected}
        page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
        browser.close()
    assert shown == expected
    assert all("judge" in text for text in verdicts.values()), verdicts
    screenshots = os.environ.get("TOYLLM_SCREENSHOTS")  # a folder to keep the screenshot in (docs/app.png's source)
    if screenshots:
        shutil.copy(tmp_path / "app.png", Path(screenshots) / "app.png")
    print(json.dumps({"seconds_to_answer_in_browser": round(seconds, 2)}), file=sys.__stdout__)
