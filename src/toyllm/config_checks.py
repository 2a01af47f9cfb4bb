"""A recipe's settings checked before any model loads, each mistake one line naming where it was given: the YAML's
keys and types against the config classes, command-line flags, model paths, tracking backends and settings that
toyllm's recipes do not honour. TrlParser and argparse catch some of the same mistakes later, with a traceback or a
usage screen."""

from __future__ import annotations

import dataclasses
import difflib
import enum
import re
import types
import typing
from pathlib import Path

import torch
import yaml
from transformers.integrations import integration_utils
from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

from toyllm.errors import UserError
from toyllm.model_source import is_gguf


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
    """A local model is a folder, or one GGUF file (toyllm.model_source)."""
    if is_gguf(name):
        if not Path(name).expanduser().is_file():
            raise UserError(f"{key}: {name}: no such GGUF file (make real-model fetches SmolLM2-135M-Instruct's)")
    elif name and looks_like_local_path(name) and not Path(name).expanduser().is_dir():
        raise UserError(f"{key}: {name} does not exist (train the stage that writes it first, or fix the path)")


def check_report_to(report_to: list[str], config_path: str | Path | None) -> None:
    """A tracking backend that transformers does not know, or that is not installed, fails only when the Trainer is
    built, after every model has loaded, and with a traceback: say it first, in one line. `config_path` is the YAML
    that set it, or None when it came from the command line."""
    line = _line_of(Path(config_path).read_text(), "report_to") if config_path else None
    where = f"{config_path}:{line}: report_to" if config_path else "--report_to"
    for name in report_to:
        if name not in INTEGRATION_TO_CALLBACK:
            close = difflib.get_close_matches(name, INTEGRATION_TO_CALLBACK, n=1, cutoff=0.7)
            known = ", ".join(INTEGRATION_TO_CALLBACK)
            hint = f"did you mean '{close[0]}'?" if close else f"expected none or one of {known}"
            raise UserError(f"{where}: unknown tracking backend '{name}' ({hint})")
        if name not in integration_utils.get_available_reporting_integrations():
            raise UserError(
                f"{where}: {name} is not installed (pip install {name}, or pip install -e '.[tracking]' "
                "for tensorboard and trackio)"
            )


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
