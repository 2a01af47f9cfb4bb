"""A recipe's arguments: `--config recipe.yaml` plus command-line overrides, parsed by TRL's `TrlParser`.

The YAML and the flags are checked first (toyllm.config_checks); every setting is then honoured or refused: what
toyllm's recipes cannot do is an error here, before any model loads.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments
from trl import ScriptArguments, TrlParser

from toyllm.config_checks import check_config_file, check_flags, check_model_path, check_report_to, check_supported
from toyllm.errors import UserError
from toyllm.hub import require_token
from toyllm.launch import world_size
from toyllm.quiet import silence_library_noise
from toyllm.resources import shipped_path
from toyllm.resume import resolve_resume

logger = logging.getLogger(__name__)


@dataclass
class RecipeArguments(ScriptArguments):
    """TRL's script arguments (`dataset_name`, `dataset_config`, `dataset_train_split`, `dataset_test_split`) and
    what every toyllm recipe adds."""

    truncate_long_rows: bool = field(
        default=False, metadata={"help": "Truncate rows longer than the context instead of stopping with an error."}
    )
    overwrite: bool = field(
        default=False, metadata={"help": "Replace a finished checkpoint made from a different config or data."}
    )
    min_steps: int = field(
        default=0,
        metadata={"help": "At least this many optimizer steps: num_train_epochs is stretched when the data is small."},
    )
    test_split_size: float | None = field(
        default=None,
        metadata={
            "help": "Hold out this share of the rows (or, from 1 up, this many rows) as the eval split, for a dataset "
            "without one, such as a JSONL file; evaluated with eval_strategy: steps (TRL's dataset mixtures' name)."
        },
    )

    def __post_init__(self):  # refused while parsing, before any model is loaded
        size = self.test_split_size
        if size is not None and not (0 < size < 1 or (size >= 1 and size == int(size))):
            raise ValueError(
                f"test_split_size: {self.test_split_size}; a share between 0 and 1, or a whole number of rows"
            )


@dataclass
class PreferenceArguments(RecipeArguments):
    """What the reward and DPO recipes add to a preference file that holds pairs for some questions only."""

    flashcards_dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Flashcards (sft.jsonl rows): each question the preference file has no pair for gets pairs, its "
            "taught answer over other questions' answers (up to other_answers_rejected), so preference tuning keeps "
            "what SFT taught."
        },
    )
    other_answers_rejected: int = field(
        default=0,
        metadata={
            "help": "Extra pairs per prompt: its chosen answer over the chosen answer of another prompt, for up to "
            "this many other prompts (0: none). Teaches which answer fits which question."
        },  # fmt: skip
    )

    def __post_init__(self):
        super().__post_init__()
        if self.other_answers_rejected < 0:
            raise ValueError(f"other_answers_rejected: {self.other_answers_rejected}; a number of pairs, 0 or more")


@dataclass
class ReplayArguments(RecipeArguments):
    """What SFT and DPO add to keep a chat model's general answers: self-distillation replay (toyllm.replay)."""

    replay_prompts_dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "General prompts ({'prompt'} rows) the starting model answers itself before training: SFT mixes "
            "its answers into the rows, DPO prefers each over story answers, so the model keeps answering the rest "
            "of the world as it did."
        },  # fmt: skip
    )
    replay_max_new_tokens: int = field(
        default=48,
        metadata={"help": "The longest replay answer, in tokens; a longer one is cut after its last whole sentence."},
    )


def fit_schedule(script_args: RecipeArguments, training_args: TrainingArguments, num_rows: int) -> None:
    """`min_steps`: an epoch-based schedule tuned on one data size starves a smaller file (the same epochs over a
    tenth of the rows are a tenth of the steps). When `num_train_epochs` would give fewer than `min_steps` optimizer
    steps, train for `min_steps` (`max_steps`); otherwise the epochs stand. An explicit `max_steps` always wins."""
    if script_args.min_steps <= 0 or training_args.max_steps > 0:
        return
    batches = math.ceil(num_rows / (training_args.per_device_train_batch_size * world_size()))
    steps = max(1, batches // training_args.gradient_accumulation_steps) * training_args.num_train_epochs
    if steps < script_args.min_steps:
        training_args.max_steps = script_args.min_steps
        logger.info(f"{num_rows} rows give {steps:.0f} steps in {training_args.num_train_epochs} epochs: training "
                    f"for min_steps {script_args.min_steps} instead.")  # fmt: skip


def steps_for_passes(
    passes: float, min_steps: int, training_args: TrainingArguments, flashcards: int, share: float
) -> None:
    """`flashcard_passes`: train for as many optimizer steps as show each of `flashcards` rows about `passes` times
    when they are `share` of the rows trained on (the rest mixed in), and for at least `min_steps`. A schedule in
    steps fits any file, where epochs over a mixed file count the rows mixed in. An explicit `max_steps` wins."""
    if passes <= 0 or training_args.max_steps > 0:
        return
    rows_per_step = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    steps = passes * flashcards / (share * rows_per_step * world_size())
    training_args.max_steps = max(min_steps, int(round(steps, 6)))  # 0.6 x 8 is 4.800000000000001
    logger.info(f"{flashcards} flashcards, {share:.0%} of the rows, each seen ~{passes:g} times: training for "
                f"{training_args.max_steps} steps")  # fmt: skip


def _config_path(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


class _Parser(TrlParser):
    def error(self, message: str):  # argparse prints the whole usage screen (143 lines for SFT) before the message
        raise UserError(message)


# Paths the shipped YAMLs name relative to a checkout; found in the installed package when not in this folder.
SHIPPED_PATH_FIELDS = ("dataset_name", "ptx_dataset_name", "flashcards_dataset_name", "replay_prompts_dataset_name",
                       "toy_config_dir", "data_dir", "gold_data_dir")  # fmt: skip


def parse_recipe_args(dataclass_types: tuple, args: list[str] | None = None) -> tuple:
    """`--config recipe.yaml` plus command-line overrides, the way TRL's own scripts read them.

    The YAML is checked first (unknown keys, wrong types: one line each). `--resume` is short for
    `--resume_from_checkpoint true`. Precision is the one field chosen for the machine: when neither the YAML nor the
    command line sets `bf16`, it is on where the GPU supports it and off elsewhere (TRL's configs default it on,
    which fails on a CPU).
    """
    use_cpu_for_multi_process_without_gpu()
    silence_library_noise()
    args = _expand_resume(sys.argv[1:] if args is None else args)
    args = [shipped_path(a) if n and args[n - 1] == "--config" else a for n, a in enumerate(args)]
    config_path = _config_path(args)
    config = check_config_file(config_path, dataclass_types) if config_path else {}
    args = _machine_defaults(args, config)
    check_flags(args, dataclass_types)
    try:
        parsed = tuple(_Parser(dataclass_types).parse_args_and_config(args))
    except ValueError as error:  # TrlParser's own checks, e.g. a config class rejecting a value
        named = str(error).split(":")[0]  # our own checks start with the field's name: blame where it was given
        given_here = _given(args, named)
        raise UserError(f"{'arguments' if given_here or not config_path else config_path}: {error}") from None
    built_first = any(getattr(o, "from_scratch", False) for o in parsed)  # pretrain builds its model, then reads it
    for obj in parsed:
        _check_parsed(obj, built_first)
        if isinstance(obj, TrainingArguments):
            _check_training(obj, config_path if "report_to" in config and not _given(args, "report_to") else None)
    return parsed


def _given(args: list[str], name: str) -> bool:
    return any(a == f"--{name}" or a.startswith(f"--{name}=") for a in args)


def _expand_resume(args: list[str]) -> list[str]:
    """`--resume` and a bare `--resume_from_checkpoint` mean `--resume_from_checkpoint true`."""
    args = ["--resume_from_checkpoint" if a == "--resume" else a for a in args]
    if "--resume_from_checkpoint" in args:
        i = args.index("--resume_from_checkpoint")
        if i + 1 == len(args) or args[i + 1].startswith("--"):
            args.insert(i + 1, "true")
    return args


def _machine_defaults(args: list[str], config: dict) -> list[str]:
    """bf16 where the GPU supports it, and no pinned memory without a GPU, unless the YAML or a flag says."""
    if "bf16" not in config and not _given(args, "bf16"):
        args = ["--bf16", str(bf16_supported())] + args
    pin_set = "dataloader_pin_memory" in config or any(a.startswith("--dataloader_pin_memory") for a in args)
    if not pin_set and not torch.cuda.is_available():  # torch warns on every DataLoader that pins with no GPU
        args = ["--dataloader_pin_memory", "false"] + args
    return args


def bf16_supported() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _check_parsed(obj, built_first: bool) -> None:
    """Shipped paths resolved; settings not honoured refused; the model paths given exist."""
    for name in SHIPPED_PATH_FIELDS:
        if hasattr(obj, name):
            setattr(obj, name, shipped_path(getattr(obj, name)))
    check_supported(obj)
    if hasattr(obj, "model_name_or_path") and not built_first:
        check_model_path("model_name_or_path", obj.model_name_or_path)
    if getattr(obj, "reward_model_path", None):
        check_model_path("reward_model_path", obj.reward_model_path)


def _check_training(training_args: TrainingArguments, report_to_config: str | None) -> None:
    resolve_resume(training_args)
    check_report_to(training_args.report_to, report_to_config)
    if training_args.push_to_hub:  # before any training: the Trainer would fail on it only after loading everything
        require_token(training_args.hub_token)
        # The Trainer creates the Hub repository in __init__ (transformers 5, `init_hf_repo`) when push_to_hub is
        # on: without network that is a page of traceback before any training. toyllm pushes the finished folder
        # once, at the end (checkpoint.push_stage), so the Trainer is told not to.
        training_args.push_to_hub, training_args.push_when_finished = False, True


def use_cpu_for_multi_process_without_gpu() -> None:
    """`accelerate launch --num_processes N` (or a DDP config) on a machine without a GPU: N CPU processes over gloo.

    accelerate's multi-process launcher (torchrun) does not tell the processes to use the CPU, and each would then
    train alone on its own copy of the data: N independent runs writing one output_dir. `ACCELERATE_USE_CPU` makes
    the Trainer and accelerate set up the gloo process group instead.
    """
    if world_size() > 1 and "ACCELERATE_USE_CPU" not in os.environ:
        if not torch.accelerator.is_available():
            os.environ["ACCELERATE_USE_CPU"] = "true"
            logger.info("No GPU: running the %s processes on the CPU (gloo).", world_size())
