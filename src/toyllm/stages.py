"""The table of stages: what each stage is, which recipe trains it, which data it reads and where it starts from.

The demo, the report, the model cards, the plots, the Slurm script (`python -m toyllm.stages`) and the tests all read
this table: adding a stage is one row here and one recipe in `recipes/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The five files of a data folder, by the kind of rows they hold (see toyllm.data.DATA_FILES).
DataKind = Literal["pretrain", "sft", "preference", "prompts", "eval"]


@dataclass(frozen=True)
class Stage:
    name: str
    recipe: str | None  # module of `recipes/` (toyllm.recipes) that trains it; None: built, not trained
    data: DataKind | None  # the data-folder file it trains on
    starts_from: str | None  # the stage whose checkpoint it loads (its `model_name_or_path`)
    saves: Literal["causal-lm", "scorer"]  # a chat/completion model, or a one-label sequence classifier
    judge: str | None = None  # the stage whose scorer rates its answers while it trains (PPO's reward_model_path)
    asked: str = "chat"  # how the evaluation asks it: "chat" (greedy), "text" (a base model: plain text, greedy), or
    # "text, sampled" (seeded sampling at temperature 1: a random model's greedy output is one word repeated)
    about: str = ""  # one sentence in the report and in the model card


STAGES: tuple[Stage, ...] = (
    Stage(
        "random", None, None, None, "causal-lm", asked="text, sampled",
        about="The GPT-2 architecture with random weights and a vocabulary built from the data: the starting point, "
        "which knows nothing yet.",
    ),
    Stage(
        "pretrain", "pretrain", "pretrain", "random", "causal-lm", asked="text",
        about="Next-token prediction on plain sentences of the story (`transformers.Trainer`): the model becomes a "
        "completer that continues text it has read, but does not answer questions.",
    ),
    Stage(
        "sft", "sft", "sft", "pretrain", "causal-lm",
        about="Supervised fine-tuning on question/answer chats (TRL `SFTTrainer`, loss on the answers only): the "
        "model learns the chat format and to answer the flashcard questions.",
    ),
    Stage(
        "reward", "reward", "preference", "sft", "scorer",
        about="A reward model, the judge, trained on chosen/rejected answer pairs (TRL `RewardTrainer`): it scores "
        "answers and is not itself a chat model, so it has no column in the tables.",
    ),
    Stage(
        "ppo", "ppo", "prompts", "sft", "causal-lm", judge="reward",
        about="RLHF with PPO (TRL `PPOTrainer`): the SFT model samples answers, the judge scores them, and the policy "
        "moves toward higher scores while a KL penalty keeps it close to the SFT model.",
    ),
    Stage(
        "dpo", "dpo", "preference", "sft", "causal-lm",
        about="Direct preference optimisation (TRL `DPOTrainer`): learns from the chosen/rejected pairs directly, "
        "without a judge or sampling, relative to a frozen copy of the SFT model.",
    ),
)  # fmt: skip
STAGE = {stage.name: stage for stage in STAGES}
FEEDBACK_ROUND = ("reward", "ppo")  # the stages each feedback round runs again, on the judge's new training data


def round_name(stage: str, round_number: int) -> str:
    """A stage's checkpoint in feedback round n: round 1 is the stage itself, then `reward-2`, `ppo-2`, ..."""
    return stage if round_number == 1 else f"{stage}-{round_number}"


def split_round(name: str) -> tuple[str, int]:
    """`ppo-2` -> ("ppo", 2); `ppo` -> ("ppo", 1)."""
    stage, _, number = name.rpartition("-")
    return (stage, int(number)) if stage in STAGE and number.isdigit() else (name, 1)


TRAINED = tuple(stage.name for stage in STAGES if stage.recipe)  # in the order the demo runs them
POLICIES = tuple(stage.name for stage in STAGES if stage.saves == "causal-lm")  # the columns of the tables
RECIPES = tuple(dict.fromkeys(stage.recipe for stage in STAGES if stage.recipe))


if __name__ == "__main__":  # the recipe names, for shell scripts (recipes/launch.slurm)
    print(" ".join(RECIPES))
