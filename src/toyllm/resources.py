"""The files toyllm ships beside its code: the recipes and their YAMLs, the toy model's spec and the Alice story.

In a checkout they are the repository's `recipes/`, `toy_config/` and `data/`; in an installed package,
`toyllm/recipes/`, `toyllm/toy_config/` and `toyllm/alice/`. The shipped YAMLs name them relative to a checkout
(`data/sft.jsonl`, `toy_config`); `shipped_path` lets the same names work from any folder once installed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import toyllm.recipes

logger = logging.getLogger(__name__)

RECIPES_DIR = Path(toyllm.recipes.__file__).parent
ROOT = RECIPES_DIR.parent  # the checkout, or site-packages/toyllm
TOY_CONFIG_DIR = ROOT / "toy_config"
ALICE_DIR = ROOT / "data" if (ROOT / "data").is_dir() else ROOT / "alice"
SHIPPED = {"recipes": RECIPES_DIR, "toy_config": TOY_CONFIG_DIR, "data": ALICE_DIR}


def shipped_path(path: str | None) -> str | None:
    """A relative path that names nothing here but names a file toyllm ships (`data/…`, `toy_config/…`,
    `recipes/…`, or a YAML under `recipes/` such as `toy/sft.yaml`): that file. Anything else is returned as given."""
    if not path or Path(path).is_absolute() or Path(path).exists():
        return path
    first, *rest = Path(path).parts
    candidates = [SHIPPED[first].joinpath(*rest)] if first in SHIPPED else []
    candidates.append(RECIPES_DIR / path)
    found = next((c for c in candidates if c.exists()), None)
    if found is None:
        return path
    story = " (the Alice story; give your own file's path to use yours)" if first == "data" else ""
    logger.warning(f"{path}: not in this folder; reading the copy toyllm ships, {display(found)}{story}")
    return display(found)


def display(path: Path) -> str:
    """A path as short as it can be said from here: relative inside the current folder, absolute outside it."""
    relative = os.path.relpath(path)
    return path.as_posix() if relative.startswith("..") else relative


def default_data_dir() -> str:
    """The Alice story: `data` in a checkout's root, the installed copy anywhere else."""
    return display(ALICE_DIR)


def story_template() -> str:
    """The story file to copy and fill in (`toyllm story --template`)."""
    return (ALICE_DIR / "story-template.md").read_text(encoding="utf-8")
