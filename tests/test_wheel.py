"""The built wheel holds what the demo needs, and, installed in a fresh venv, runs it from an empty folder.

The fresh venv reuses this environment's dependencies through a .pth file (no downloads, and site-packages .pth
files of this venv, such as the editable install's finder, are not run from there): only toyllm comes from the wheel.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

from toyllm.data import DATA_FILES
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
    expected |= {f"toyllm/alice/{name}" for name in DATA_FILES.values()}
    shipped = [*(REPO / "recipes").rglob("*.yaml"), *(REPO / "recipes").rglob("*.jsonl")]  # real-model questions too
    expected |= {f"toyllm/recipes/{p.relative_to(REPO / 'recipes')}" for p in shipped}
    assert expected <= names, sorted(expected - names)


@pytest.mark.slow  # a whole demo from the wheel: .ci/run runs it after `make test`
def test_installed_wheel_runs_the_demo_from_an_empty_folder(wheel, tmp_path):
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
    assert (empty / "outputs" / "toy" / "report" / "metrics.json").is_file()
    # a recipe from the installed package, by its shipped YAML's short name, the way `trl sft --config` runs
    sft = subprocess.run(
        [venv / "bin" / "toyllm", "sft", "--config", "toy/sft.yaml", "--model_name_or_path", "outputs/toy/pretrain",
         "--output_dir", "outputs/sft-again", "--max_steps", "2"],
        cwd=empty, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert sft.returncode == 0, sft.stderr[-3000:]
    assert "reading the copy toyllm ships" in sft.stderr
    assert (empty / "outputs" / "sft-again" / "model.safetensors").is_file()
