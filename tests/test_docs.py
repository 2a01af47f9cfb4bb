"""README and docs/: a front door of one screen per question, links that resolve, and commands that name real
recipes, configs, files and flags (extracted from every ```bash block, with the parsers the commands use)."""

from __future__ import annotations

import importlib
import re
import shlex

import pytest
from conftest import REPO

from toyllm.cli import build_parser
from toyllm.config_checks import check_config_file, check_flags
from toyllm.stages import RECIPES

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def commands(page) -> list[str]:
    """Every command line of the page's bash blocks, continuation lines joined, `[optional]` brackets dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [re.sub(r"\[(--[^\]]*)\]", r"\1", line) for line in lines if line.strip() and not line.startswith("#")]


def test_readme_fits_a_sitting():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_resolve(page):
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path) if path else page
        assert resolved.exists(), f"{page.name}: {target}"
        if anchor and resolved.suffix == ".md":
            headings = re.findall(r"^#+ (.*)$", resolved.read_text(), flags=re.M)
            assert anchor in {slug(h) for h in headings}, f"{page.name}: {target}"


def check_recipe_command(recipe: str, args: list[str]) -> None:
    module = importlib.import_module(f"toyllm.recipes.{recipe}")
    config = args[args.index("--config") + 1]
    path = REPO / config if (REPO / config).exists() else REPO / "recipes" / config
    check_config_file(path, module.ARGUMENT_TYPES)
    check_flags(args, module.ARGUMENT_TYPES)


def check_command(words: list[str]) -> None:
    while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value prefixes
        words = words[1:]
    if ">" in words:  # the shell's redirection: `toyllm story --template > my-story.md`
        words = words[: words.index(">")]
    if words[0] == "toyllm" and words[1] in RECIPES:
        check_recipe_command(words[1], [w for w in words[2:] if w not in ("--num_processes", "2")])
    elif words[0] == "toyllm":
        build_parser().parse_args(words[1:])  # argparse exits on an unknown flag or command
    elif words[:2] == ["accelerate", "launch"]:
        script = next(w for w in words if w.endswith(".py"))
        assert (REPO / script).is_file(), script
        config_file = words[words.index("--config_file") + 1]
        assert (REPO / config_file).is_file(), config_file
        check_recipe_command(script.split("/")[-1][:-3], words[words.index(script) + 1 :])
    elif words[0] == "sbatch":
        slurm = next(w for w in words if w.endswith(".slurm"))
        stage, config = words[words.index(slurm) + 1 : words.index(slurm) + 3]
        assert stage in RECIPES and (REPO / config).is_file()
        check_recipe_command(stage, ["--config", config, *words[words.index(slurm) + 3 :]])


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_commands_name_real_recipes_files_and_flags(page):
    for line in commands(page):
        words = shlex.split(line, comments=True)
        if words:
            check_command(words)
