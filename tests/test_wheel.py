"""The built wheel holds what the demo needs, and, installed in a fresh venv, runs it from an empty folder, and
serves that run to a real browser (`toyllm app` in headless Chromium).

The fresh venv reuses this environment's dependencies through a .pth file (no downloads, and site-packages .pth
files of this venv, such as the editable install's finder, are not run from there): only toyllm comes from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import CHROMIUM, CHROMIUM_FLAGS, REPO, generated, serving_app

from toyllm.app import RunFolders
from toyllm.data import DATA_FILES, DataFolder
from toyllm.stages import RECIPES


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(REPO)], check=True, capture_output=True)  # fmt: skip
    return next(out.glob("toyllm-*.whl"))


def test_wheel_holds_the_recipes_their_yamls_the_toy_spec_and_the_story(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"toyllm/recipes/{name}.py" for name in RECIPES}
    expected |= {f"toyllm/recipes/toy/{name}.yaml" for name in RECIPES}
    expected |= {f"toyllm/toy_config/{p.name}" for p in (REPO / "toy_config").iterdir()}
    expected |= {f"toyllm/alice/{name}" for name in [*DATA_FILES.values(), "alice.md", "story-template.md"]}
    shipped = [*(REPO / "recipes").rglob("*.yaml"), *(REPO / "recipes").rglob("*.jsonl")]  # real-model questions too
    expected |= {f"toyllm/recipes/{p.relative_to(REPO / 'recipes')}" for p in shipped}
    assert expected <= names, sorted(expected - names)


@pytest.fixture(scope="module")
def installed_demo(wheel, tmp_path_factory) -> tuple[Path, Path]:
    """(the fresh venv's bin folder, an empty folder where its `toyllm demo` ran): slow, .ci/run runs it."""
    tmp_path = tmp_path_factory.mktemp("installed")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import site; print(site.getsitepackages()[0])"], check=True,
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    ours = [p for p in sys.path if p.endswith("site-packages")][0]
    Path(site, "toyllm_dependencies.pth").write_text(ours + "\n")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, capture_output=True)
    where = subprocess.run([python, "-c", "import toyllm; print(toyllm.__file__)"], check=True, capture_output=True,
                           text=True).stdout  # fmt: skip
    assert where.startswith(site)  # the wheel's copy, not the checkout's
    empty = tmp_path / "empty"
    empty.mkdir()
    demo = subprocess.run([venv / "bin" / "toyllm", "demo", "--feedback-rounds", "1"], cwd=empty,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "| sft | " in demo.stdout and "who was alice" in demo.stdout
    return venv / "bin", empty


@pytest.mark.slow  # a whole demo from the wheel: .ci/run runs it after `make test`
def test_installed_wheel_runs_the_demo_from_an_empty_folder(installed_demo):
    bin_dir, empty = installed_demo
    assert (empty / "outputs" / "toy" / "report" / "metrics.json").is_file()
    # a recipe from the installed package, by its shipped YAML's short name, the way `trl sft --config` runs
    sft = subprocess.run(
        [bin_dir / "toyllm", "sft", "--config", "toy/sft.yaml", "--model_name_or_path", "outputs/toy/pretrain",
         "--output_dir", "outputs/sft-again", "--max_steps", "2"],
        cwd=empty, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert sft.returncode == 0, sft.stderr[-3000:]
    assert "reading the copy toyllm ships" in sft.stderr
    assert (empty / "outputs" / "sft-again" / "model.safetensors").is_file()
    # the shipped one-file story, by the name README gives it
    story = subprocess.run([bin_dir / "toyllm", "story", "data/alice.md", "--output-dir", "my-alice"], cwd=empty,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert story.returncode == 0, story.stderr[-3000:]
    assert DataFolder(empty / "my-alice").is_complete()


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_a_typed_question_is_answered_by_every_stage_in_a_real_browser(installed_demo, capsys, tmp_path):
    """The installed wheel's `toyllm app` over its own demo run, driven in headless Chromium: a question typed and
    asked, every column's answer what `toyllm generate` gives for that checkpoint with the flags it shows."""
    from playwright.sync_api import sync_playwright

    bin_dir, empty = installed_demo
    run_dir, question = empty / "outputs" / "toy", "Who was Alice?"
    columns = RunFolders.read(run_dir).columns
    assert [c.name for c in columns] == ["random", "pretrain", "sft", "ppo", "rloo", "dpo"]  # one feedback round
    expected = {c.name: generated(capsys, c.path, question, c.generate_flags(0)) for c in columns}
    with serving_app(bin_dir / "toyllm", run_dir, tmp_path / "app.log") as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url)
        page.locator("#question textarea").fill(question)
        start = time.perf_counter()
        page.locator("#ask").click()
        last = f"#answer-{columns[-1].name} textarea"
        page.wait_for_function(f"document.querySelector('{last}').value.length > 0", timeout=60_000)
        seconds = time.perf_counter() - start
        shown = {name: page.locator(f"#answer-{name} textarea").input_value() for name in expected}
        verdicts = {name: page.locator(f"#verdict-{name}").inner_text() for name in expected}
        page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
        browser.close()
    assert shown == expected
    assert all(text.startswith("judge ") for text in verdicts.values()), verdicts
    assert "a sentence of the story" in verdicts["sft"]
    screenshots = os.environ.get("TOYLLM_SCREENSHOTS")  # a folder to keep the screenshot in (docs/app.png's source)
    if screenshots:
        shutil.copy(tmp_path / "app.png", Path(screenshots) / "app.png")
    print(json.dumps({"seconds_to_answer_in_browser": round(seconds, 2)}), file=sys.__stdout__)
