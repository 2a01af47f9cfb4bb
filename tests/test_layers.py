"""The support package's layers point one way: recipes and the training support never import evaluation, feedback,
reporting, the demo or the command line. Read from the source's own import statements."""

from __future__ import annotations

import ast

import pytest
from conftest import REPO

SRC = REPO / "src" / "toyllm"
# Each module's layer; a module may import toyllm modules of its own layer or below, never above. README's layout
# section states the same rule.
LAYERS = {
    "base": ["__init__", "defaults", "errors", "files", "launch", "quiet", "resources", "stages", "versions"],
    "generation": ["generation"],
    "training": [
        "args",
        "card",
        "checkpoint",
        "config_checks",
        "data",
        "data_checks",
        "hub",
        "instruct",
        "learned",
        "merge",
        "model",
        "model_source",
        "ppo",
        "recipe_folder",
        "replay",
        "resume",
        "story",
        "tokenizer",
        "toy",
    ],  # fmt: skip
    "evaluation": ["chat", "compare", "evaluate", "feedback", "plots", "report", "tables"],
    "entry points": ["app", "cli", "demo"],
}
LAYER_OF = {module: n for n, modules in enumerate(LAYERS.values()) for module in modules}
RECIPES_LAYER = list(LAYERS).index("training")


def toyllm_imports(path) -> set[str]:
    """The toyllm modules a file imports, anywhere in it (a function's own imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        found |= {name.split(".")[1] for name in names if name.startswith("toyllm.") and name.count(".") >= 1}
    return found - {"recipes", "toy_config", "alice"}


def test_every_module_has_a_layer():
    assert {path.stem for path in SRC.glob("*.py")} == set(LAYER_OF)


@pytest.mark.parametrize("module", sorted(LAYER_OF))
def test_a_module_imports_nothing_above_its_layer(module):
    above = {name for name in toyllm_imports(SRC / f"{module}.py") if LAYER_OF[name] > LAYER_OF[module]}
    assert not above, f"{module} ({list(LAYERS)[LAYER_OF[module]]}) imports {sorted(above)}"


@pytest.mark.parametrize("recipe", sorted(p.name for p in (REPO / "recipes").glob("*.py")))
def test_recipes_import_only_the_training_support(recipe):
    above = {name for name in toyllm_imports(REPO / "recipes" / recipe) if LAYER_OF[name] > RECIPES_LAYER}
    assert not above, f"recipes/{recipe} imports {sorted(above)}"
