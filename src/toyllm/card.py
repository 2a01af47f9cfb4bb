"""Hub model cards: one README.md per checkpoint saying which stage it is and how it was made."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from toyllm.launch import world_size
from toyllm.model_source import describe_source
from toyllm.stages import PIPELINE_TAG, TABLE, StageTable

SECRET_ARGS = ("--hub_token", "--token")


def redact_secrets(argv: list[str]) -> list[str]:
    """`--hub_token hf_...` on a command line must not reach a model card that is pushed to the Hub."""
    redacted = list(argv)
    for i, arg in enumerate(redacted):
        if arg in SECRET_ARGS and i + 1 < len(redacted):
            redacted[i + 1] = "***"
        elif arg.startswith(tuple(f"{name}=" for name in SECRET_ARGS)):
            redacted[i] = arg.split("=", 1)[0] + "=***"
    return redacted


def recipe_command() -> str:
    """The command that launched this process, as a user would type it again (tokens left out)."""
    argv = redact_secrets(sys.argv)
    processes = world_size()
    if processes > 1 and argv and argv[0].endswith(".py"):  # the global batch depends on it: say how it was launched
        return shlex.join(["accelerate", "launch", "--num_processes", str(processes), *argv])
    return shlex.join(["python", *argv]) if argv and argv[0].endswith(".py") else shlex.join(argv)


@dataclass(frozen=True)
class Made:
    """How a checkpoint was made, as its card tells it: the stage, its trainer, the model it started from, its data,
    the command, its final metrics, and the model the weights first came from (`source`, toyllm.model_source: a GGUF
    file's name and licence)."""

    stage: str
    trainer_name: str
    base_model: str | None = None
    dataset: str | None = None
    command: str | None = None
    metrics: dict | None = None
    source: dict | None = None


def write_model_card(output_dir: str | Path, made: Made, model_name: str | None = None, table: StageTable = TABLE):
    """The checkpoint's README.md: the stage's sentence from the table, its trainer, where it started, its data, the
    command that made it and its final metrics; tagged by what the stage saves (a chat model or a scorer), licensed
    as its source model."""
    stage, base_model, dataset, source = made.stage, made.base_model, made.dataset, made.source
    row = table.stage_of(stage)
    pipeline_tag = PIPELINE_TAG[row.saves if row else "causal-lm"]
    data = ModelCardData(
        base_model=base_model if base_model and not Path(base_model).exists() else None,
        datasets=[dataset] if dataset and not Path(dataset).exists() else None,
        library_name="transformers",
        license=(source or {}).get("license") or "apache-2.0",
        pipeline_tag=pipeline_tag,
        tags=["toyllm", stage, made.trainer_name.lower()],
        model_name=model_name or Path(output_dir).name,
    )
    lines = [
        "---",
        data.to_yaml(),
        "---",
        "",
        f"# toyllm — stage `{stage}`",
        "",
        row.about if row else "A toyllm checkpoint.",
        "",
        f"- trained with: `{made.trainer_name}`",
        f"- started from: `{base_model}`" if base_model else "- started from: random initialisation",
        f"- data: `{dataset}`" if dataset else "",
        f"- source model: {describe_source(source)}" if source else "",
    ]
    if made.command:
        lines += ["", "## How it was made", "", "```bash", made.command, "```"]
    if made.metrics:
        lines += ["", "## Metrics", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {key} | {value:.4g} |" for key, value in sorted(made.metrics.items())]
    card = ModelCard("\n".join(line for line in lines if line is not None) + "\n")
    card.save(Path(output_dir) / "README.md")
    return card
