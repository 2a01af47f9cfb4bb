"""The table of stages: what each stage is, which recipe trains it, which data it reads and where it starts from.

The demo, the report, the model cards, the plots, the Slurm script (`python -m toyllm.stages`) and the tests all read
this table, and what differs between stages is a field of its row: adding a stage is one row here and one recipe in
`recipes/`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Literal

from toyllm.versions import PPO_MODULE, has_module

# The five files of a data folder, by the kind of rows they hold (see toyllm.data.DATA_FILES).
DataKind = Literal["pretrain", "flashcards", "preference", "prompts", "eval"]
Saves = Literal["causal-lm", "scorer"]
PIPELINE_TAG: dict[Saves, str] = {"causal-lm": "text-generation", "scorer": "text-classification"}


@dataclass(frozen=True)
class Stage:
    name: str
    recipe: str | None  # module of `recipes/` (toyllm.recipes) that trains it; None: built, not trained
    data: DataKind | None  # the data-folder file it trains on
    starts_from: str | None  # the stage whose checkpoint it loads (its `model_name_or_path`)
    saves: Saves  # a chat/completion model, or a one-label sequence classifier
    judge: str | None = None  # the stage whose scorer rates its answers while it trains (PPO's reward_model_path)
    asked: str = "chat"  # how the evaluation asks it: "chat" (greedy), "text" (a base model: plain text, greedy), or
    # "text, sampled" (seeded sampling at temperature 1: a random model's greedy output is one word repeated)
    also_reads: tuple[tuple[str, DataKind], ...] = ()  # recipe arguments that name another file of the data folder
    reads_folder: tuple[str, ...] = ()  # recipe arguments that name the data folder itself
    feedback_round: bool = False  # trained again in each feedback round, on the judge's new training data
    needs: str | None = None  # a module its recipe imports that not every accepted library version ships
    about: str = ""  # one sentence in the report and in the model card


STAGES: tuple[Stage, ...] = (
    Stage(
        "random", None, None, None, "causal-lm", asked="text, sampled",
        about="The GPT-2 architecture with random weights and a vocabulary built from the data: the starting point, "
        "which knows nothing yet.",
    ),
    Stage(
        "pretrain", "pretrain", "pretrain", "random", "causal-lm", asked="text",
        reads_folder=("data_dir",),  # the folder whose vocabulary `from_scratch` builds
        about="Next-token prediction on plain sentences of the story (`transformers.Trainer`): the model becomes a "
        "completer that continues text it has read, but does not answer questions.",
    ),
    Stage(
        "sft", "sft", "flashcards", "pretrain", "causal-lm",
        also_reads=(("ptx_dataset_name", "pretrain"),),  # the story's own sentences are SFT's pretraining mix
        about="Supervised fine-tuning on question/answer chats (TRL `SFTTrainer`, loss on the answers only): the "
        "model learns the chat format and to answer the flashcard questions.",
    ),
    Stage(
        "reward", "reward", "preference", "sft", "scorer", feedback_round=True,
        also_reads=(("flashcards_dataset_name", "flashcards"),),  # pairs for the questions a sparse file lacks
        about="A reward model, the judge, trained on chosen/rejected answer pairs (TRL `RewardTrainer`): it scores "
        "answers and is not itself a chat model, so it has no column in the tables.",
    ),
    Stage(
        "ppo", "ppo", "prompts", "sft", "causal-lm", judge="reward", feedback_round=True, needs=PPO_MODULE,
        also_reads=(("flashcards_dataset_name", "flashcards"),),  # the trained questions, kept by PPO too
        reads_folder=("gold_data_dir",),  # the labeller's verdict on its prompts, logged while it trains
        about="RLHF with PPO (TRL `PPOTrainer`): the SFT model samples answers, the judge scores them, and the policy "
        "moves toward higher scores while a KL penalty keeps it close to the SFT model.",
    ),
    Stage(
        "rloo", "rloo", "prompts", "sft", "causal-lm", judge="reward", feedback_round=True,
        also_reads=(("flashcards_dataset_name", "flashcards"),),  # the trained questions, kept by RLOO too
        about="RLHF with RLOO (TRL `RLOOTrainer`), the online RL TRL keeps: the SFT model writes several answers to "
        "each question, the judge scores them, and each answer is pushed up or down by how it compares with the "
        "others to the same question; no value model, and a KL penalty keeps it close to the SFT model.",
    ),
    Stage(
        "dpo", "dpo", "preference", "sft", "causal-lm",
        also_reads=(("flashcards_dataset_name", "flashcards"),),
        about="Direct preference optimisation (TRL `DPOTrainer`): learns from the chosen/rejected pairs directly, "
        "without a judge or sampling, relative to a frozen copy of the SFT model.",
    ),
)  # fmt: skip


# A real chat model's chain (`toyllm demo --model`): the instruct model as it comes takes the place of random and
# pretrain; SFT starts from it and reads no pretraining mix (the model already writes language); the rest is as above.
INSTRUCT = Stage(
    "instruct", None, None, None, "causal-lm",
    about="The instruct (chat) model as it comes, before any fine-tuning: what it knows of the world, and what it "
    "makes of the story's questions before it has read the story.",
)  # fmt: skip
REAL_MODEL_STAGES: tuple[Stage, ...] = (
    INSTRUCT,
    *(replace(row, starts_from="instruct", also_reads=()) if row.name == "sft" else row
      for row in STAGES if row.name not in ("random", "pretrain")),
)  # fmt: skip


class StageTable:
    """The rows, by name, and what follows from them: the stages trained, the columns of the tables, the recipes,
    and the stages a feedback round repeats (its policy, whose answers are labelled, and that policy's judge)."""

    def __init__(self, rows: tuple[Stage, ...]):
        self.rows = rows
        self.by_name = {row.name: row for row in rows}
        self.trained = tuple(row.name for row in rows if row.recipe)  # in the order the demo runs them
        self.policies = tuple(row.name for row in rows if row.saves == "causal-lm")
        self.recipes = tuple(dict.fromkeys(row.recipe for row in rows if row.recipe))
        self.feedback_round = tuple(row.name for row in rows if row.feedback_round)
        self.round_policy = next((n for n in self.feedback_round if self[n].saves == "causal-lm"), None)
        self.round_judge = self[self.round_policy].judge if self.round_policy else None
        self.rl_policies = tuple(row.name for row in rows if row.judge and row.saves == "causal-lm")  # PPO, RLOO

    def __getitem__(self, name: str) -> Stage:
        return self.by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_name)

    def stage_of(self, checkpoint: str) -> Stage | None:
        """The row of a checkpoint's name: `ppo-2` is a feedback round of `ppo`."""
        return self.by_name.get(split_round(checkpoint, self)[0])


def round_name(stage: str, round_number: int) -> str:
    """A stage's checkpoint in feedback round n: round 1 is the stage itself, then `reward-2`, `ppo-2`, ..."""
    return stage if round_number == 1 else f"{stage}-{round_number}"


def split_round(name: str, table: StageTable | None = None) -> tuple[str, int]:
    """`ppo-2` -> ("ppo", 2); `ppo` -> ("ppo", 1)."""
    stage, _, number = name.rpartition("-")
    return (stage, int(number)) if stage in (table or TABLE) and number.isdigit() else (name, 1)


def installed(rows: tuple[Stage, ...]) -> tuple[Stage, ...]:
    """The rows whose recipe the installed libraries can run (a TRL without PPO drops the ppo row)."""
    return tuple(row for row in rows if row.needs is None or has_module(row.needs))


def not_installed(rows: tuple[Stage, ...]) -> tuple[Stage, ...]:
    return tuple(row for row in rows if row.needs is not None and not has_module(row.needs))


ALL_RECIPES = StageTable(STAGES).recipes  # every recipe toyllm ships: the CLI names them all, and says what is missing
TABLE = StageTable(installed(STAGES))
REAL_MODEL_TABLE = StageTable(installed(REAL_MODEL_STAGES))
STAGE = StageTable(STAGES).by_name  # every row, installed or not: a recipe reads its own
TRAINED, POLICIES, RECIPES = TABLE.trained, TABLE.policies, TABLE.recipes


if __name__ == "__main__":  # the recipe names, for shell scripts (recipes/launch.slurm)
    print(" ".join(RECIPES))
