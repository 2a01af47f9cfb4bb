"""A recipe's arguments: `--config recipe.yaml` plus command-line overrides, parsed by TRL's `TrlParser`.

The YAML is checked first against the dataclasses TrlParser will fill: TrlParser and argparse catch the same mistakes
later, but with a traceback or a usage screen; here each mistake is one line naming the file, the line and the key.
Every setting is then honoured or refused: what toyllm's recipes cannot do is an error here, before any model loads.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import logging
import math
import os
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from transformers import TrainingArguments
from trl import ScriptArguments, TrlParser

from toyllm.checkpoint import resolve_resume
from toyllm.errors import UserError
from toyllm.model import bf16_supported
from toyllm.quiet import silence_library_noise
from toyllm.resources import shipped_path

logger = logging.getLogger(__name__)


def _fits(value, annotation) -> bool:
    """Whether a YAML value can fill a field of this type (unknown or exotic types are given the benefit)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if annotation is type(None):
        return value is None
    if origin is typing.Literal:
        return value in args
    if origin in (list, tuple):
        return isinstance(value, (list, tuple, str))
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, (str, int, float)) and not isinstance(value, bool)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return value in [member.value for member in annotation] or isinstance(value, annotation)
    return True


def _describe(annotation) -> str:
    text = str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")
    return re.sub(r"\btransformers\.[\w.]+\.", "", text)


def _line_of(text: str, key: str) -> int | None:
    """The line of a top-level key; its last occurrence, the one YAML keeps."""
    lines = [n for n, line in enumerate(text.splitlines(), start=1) if re.match(rf"^{re.escape(key)}\s*:", line)]
    return lines[-1] if lines else None


def check_config_file(config_path: str | Path, dataclass_types: tuple) -> dict:
    """Unknown keys (with the closest known one) and values of the wrong type, one line each."""
    path = Path(config_path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    text = path.read_text()
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(f"{where}: invalid YAML: {getattr(error, 'problem', error)}") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: expected a mapping of key: value, got {type(config).__name__}")

    fields = {}
    for cls in dataclass_types:
        hints = typing.get_type_hints(cls)
        fields.update({f.name: hints.get(f.name, typing.Any) for f in dataclasses.fields(cls)})
    problems = []
    for key, value in config.items():
        where = f"{path}:{_line_of(text, str(key)) or '?'}"
        if key == "env":
            continue
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1, cutoff=0.7)
            problems.append(f"{where}: unknown key '{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        elif not _fits(value, fields[key]):
            problems.append(f"{where}: {key}: {value!r} is not a valid {_describe(fields[key])}")
    if problems:
        raise UserError(problems)
    return config


def looks_like_local_path(name: str) -> bool:
    """`outputs/toy/sft` or `./model` is a folder; `Qwen/Qwen2.5-0.5B` or `gpt2` may be a Hub id."""
    return name.startswith((".", "/", "~")) or name.count("/") >= 2 or Path(name).exists()


def check_model_path(key: str, name: str | None) -> None:
    if name and looks_like_local_path(name) and not Path(name).expanduser().is_dir():
        raise UserError(f"{key}: {name} does not exist (train the stage that writes it first, or fix the path)")


def check_report_to(report_to: list[str], config_path: str | Path | None) -> None:
    """A tracking backend that transformers does not know, or that is not installed, fails only when the Trainer is
    built, after every model has loaded, and with a traceback: say it first, in one line. `config_path` is the YAML
    that set it, or None when it came from the command line."""
    line = _line_of(Path(config_path).read_text(), "report_to") if config_path else None
    where = f"{config_path}:{line}: report_to" if config_path else "--report_to"
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        get_available_reporting_integrations,
    )

    for name in report_to:
        if name not in INTEGRATION_TO_CALLBACK:
            close = difflib.get_close_matches(name, INTEGRATION_TO_CALLBACK, n=1, cutoff=0.7)
            known = ", ".join(INTEGRATION_TO_CALLBACK)
            hint = f"did you mean '{close[0]}'?" if close else f"expected none or one of {known}"
            raise UserError(f"{where}: unknown tracking backend '{name}' ({hint})")
        if name not in get_available_reporting_integrations():
            raise UserError(
                f"{where}: {name} is not installed (pip install {name}, or pip install -e '.[tracking]' "
                "for tensorboard and trackio)"
            )


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


def fit_schedule(script_args: RecipeArguments, training_args: TrainingArguments, num_rows: int) -> None:
    """`min_steps`: an epoch-based schedule tuned on one data size starves a smaller file (8 epochs of 303 pairs are
    152 DPO steps, of 31 pairs only 16). When `num_train_epochs` would give fewer than `min_steps` optimizer steps,
    train for `min_steps` (`max_steps`); otherwise the epochs stand. An explicit `max_steps` always wins."""
    if script_args.min_steps <= 0 or training_args.max_steps > 0:
        return
    batches = math.ceil(num_rows / (training_args.per_device_train_batch_size * int(os.environ.get("WORLD_SIZE", 1))))
    steps = max(1, batches // training_args.gradient_accumulation_steps) * training_args.num_train_epochs
    if steps < script_args.min_steps:
        training_args.max_steps = script_args.min_steps
        logger.info(f"{num_rows} rows give {steps:.0f} steps in {training_args.num_train_epochs} epochs: training "
                    f"for min_steps {script_args.min_steps} instead.")  # fmt: skip


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


def check_flags(args: list[str], dataclass_types: tuple) -> None:
    """A command-line flag no config class has, with the closest one that exists."""
    known = {f.name for cls in dataclass_types for f in dataclasses.fields(cls)} | {"config", "help"}
    for arg in args:
        if not arg.startswith("--"):
            continue
        name = arg[2:].split("=", 1)[0].replace("-", "_")
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean --{close[0]}?" if close else "see --help for the arguments this recipe takes"
            raise UserError(f"--{name}: unknown argument ({hint})")


# Paths the shipped YAMLs name relative to a checkout; found in the installed package when not in this folder.
SHIPPED_PATH_FIELDS = ("dataset_name", "ptx_dataset_name", "toy_config_dir", "data_dir", "gold_data_dir")


def parse_recipe_args(dataclass_types: tuple, args: list[str] | None = None) -> tuple:
    """`--config recipe.yaml` plus command-line overrides, the way TRL's own scripts read them.

    The YAML is checked first (unknown keys, wrong types: one line each). `--resume` is short for
    `--resume_from_checkpoint true`. Precision is the one field chosen for the machine: when neither the YAML nor the
    command line sets `bf16`, it is on where the GPU supports it and off elsewhere (TRL's configs default it on,
    which fails on a CPU).
    """
    use_cpu_for_multi_process_without_gpu()
    silence_library_noise()
    args = ["--resume_from_checkpoint" if a == "--resume" else a for a in (sys.argv[1:] if args is None else args)]
    if "--resume_from_checkpoint" in args:
        i = args.index("--resume_from_checkpoint")
        if i + 1 == len(args) or args[i + 1].startswith("--"):
            args.insert(i + 1, "true")
    args = [shipped_path(a) if n and args[n - 1] == "--config" else a for n, a in enumerate(args)]
    config_path = _config_path(args)
    config = check_config_file(config_path, dataclass_types) if config_path else {}
    if "bf16" not in config and not any(a == "--bf16" or a.startswith("--bf16=") for a in args):
        args = ["--bf16", str(bf16_supported())] + args
    pin_set = "dataloader_pin_memory" in config or any(a.startswith("--dataloader_pin_memory") for a in args)
    if not pin_set and not torch.cuda.is_available():  # torch warns on every DataLoader that pins with no GPU
        args = ["--dataloader_pin_memory", "false"] + args
    check_flags(args, dataclass_types)
    try:
        parsed = tuple(_Parser(dataclass_types).parse_args_and_config(args))
    except ValueError as error:  # TrlParser's own checks, e.g. a config class rejecting a value
        named = str(error).split(":")[0]  # our own checks start with the field's name: blame where it was given
        given_here = any(a == f"--{named}" or a.startswith(f"--{named}=") for a in args)
        raise UserError(f"{'arguments' if given_here or not config_path else config_path}: {error}") from None
    built_first = any(getattr(o, "from_scratch", False) for o in parsed)  # pretrain builds its model, then reads it
    for obj in parsed:
        for name in SHIPPED_PATH_FIELDS:
            if hasattr(obj, name):
                setattr(obj, name, shipped_path(getattr(obj, name)))
        check_supported(obj)
        if hasattr(obj, "model_name_or_path") and not built_first:
            check_model_path("model_name_or_path", obj.model_name_or_path)
        if getattr(obj, "reward_model_path", None):
            check_model_path("reward_model_path", obj.reward_model_path)
        if isinstance(obj, TrainingArguments):
            resolve_resume(obj)
            on_command_line = any(a == "--report_to" or a.startswith("--report_to=") for a in args)
            check_report_to(obj.report_to, config_path if "report_to" in config and not on_command_line else None)
            if obj.push_to_hub:  # before any training: the Trainer would fail on it only after loading everything
                from toyllm.hub import require_token

                require_token(obj.hub_token)
                # The Trainer creates the Hub repository in __init__ (transformers 5, `init_hf_repo`) when
                # push_to_hub is on: without network that is a page of traceback before any training. toyllm pushes
                # the finished folder once, at the end (checkpoint.push_stage), so the Trainer is told not to.
                obj.push_to_hub, obj.push_when_finished = False, True
    return parsed


def check_supported(obj) -> None:
    """Settings the parsed classes accept that toyllm's recipes do not honour are refused, one line each."""
    refused = {
        "dataset_streaming": "the recipes check every row before training, which needs the whole dataset",
        "ignore_bias_buffers": "no toyllm model has bias buffers for DDP to ignore",
    }
    problems = [f"{key}: not supported ({why})" for key, why in refused.items() if getattr(obj, key, False)]
    if (getattr(obj, "load_in_4bit", False) or getattr(obj, "load_in_8bit", False)) and not torch.cuda.is_available():
        key = "load_in_4bit" if obj.load_in_4bit else "load_in_8bit"
        problems.append(f"{key}: bitsandbytes quantization needs a CUDA GPU; leave it false on this machine")
    if problems:
        raise UserError(problems)


def use_cpu_for_multi_process_without_gpu() -> None:
    """`accelerate launch --num_processes N` (or a DDP config) on a machine without a GPU: N CPU processes over gloo.

    accelerate's multi-process launcher (torchrun) does not tell the processes to use the CPU, and each would then
    train alone on its own copy of the data: N independent runs writing one output_dir. `ACCELERATE_USE_CPU` makes
    the Trainer and accelerate set up the gloo process group instead.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "ACCELERATE_USE_CPU" not in os.environ:
        if not torch.accelerator.is_available():
            os.environ["ACCELERATE_USE_CPU"] = "true"
            logger.info("No GPU: running the %s processes on the CPU (gloo).", os.environ["WORLD_SIZE"])
