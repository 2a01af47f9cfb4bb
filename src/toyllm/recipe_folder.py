"""A real model's recipe folder (`toyllm demo --model M --recipes DIR`): a YAML per recipe, and `demo.yaml`, the
numbers that size the demo for the models the folder's YAMLs were written for (how many answers are sampled, how
long they are, the feedback rounds, the judge's pairs, the general questions a fine-tuned model should still answer).

The demo reads nothing else from the folder and checks every file of it before anything is trained: an unknown key
or a value of the wrong type is one line naming the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from toyllm.config_checks import check_config_file
from toyllm.errors import UserError

SETTINGS_FILE = "demo.yaml"
DEFAULT_WHY = "the default for --model: sized for a ~100M-parameter instruct model on a CPU; --recipes DIR for another"


@dataclass(frozen=True)
class DemoSettings:
    eval_samples: int  # sampled answers per eval question, for the sampling hit rate
    label_samples: int  # answers the simulated labeller samples per RL prompt
    feedback_rounds: int  # the default of --feedback-rounds with this folder
    judge_pairs: int | None  # preference pairs the judge's accuracy is measured on (null: all)
    max_new_tokens: int  # the longest answer, in tokens
    retention_file: str | None  # general questions (eval rows), relative to the folder; null: none asked


@dataclass(frozen=True)
class RecipeFolder:
    path: Path
    settings: DemoSettings

    @property
    def retention_file(self) -> Path | None:
        name = self.settings.retention_file
        return self.path / name if name else None

    def check(self, recipes: dict) -> None:
        """Each recipe's YAML in the folder, against that recipe's arguments (`recipes`: name → module)."""
        for name, module in recipes.items():
            check_config_file(self.path / f"{name}.yaml", module.ARGUMENT_TYPES)
        if self.retention_file is not None and not self.retention_file.is_file():
            raise UserError(f"{self.path / SETTINGS_FILE}: retention_file: {self.retention_file} not found")


def read_recipe_folder(path: str | Path) -> RecipeFolder:
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"--recipes: {path} is not a folder (give a folder of recipe YAMLs, such as "
                        "recipes/smollm2-135m)")  # fmt: skip
    settings_path = path / SETTINGS_FILE
    config = check_config_file(settings_path, (DemoSettings,))
    missing = [f.name for f in fields(DemoSettings) if f.name not in config]
    if missing:
        raise UserError(f"{settings_path}: missing {', '.join(missing)} (each sizes the demo; see "
                        "recipes/smollm2-135m/demo.yaml)")  # fmt: skip
    settings = DemoSettings(**config)
    numbers = {"eval_samples": 1, "label_samples": 1, "feedback_rounds": 1, "judge_pairs": 0, "max_new_tokens": 1}
    for name, least in numbers.items():
        value = getattr(settings, name)
        if value is not None and value < least:
            raise UserError(f"{settings_path}: {name}: {value}; at least {least}")
    return RecipeFolder(path, settings)
