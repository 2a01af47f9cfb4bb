"""Hub model cards: one README.md per checkpoint saying which stage it is and how it was made."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from toyllm.stages import STAGE

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
    processes = int(os.environ.get("WORLD_SIZE", 1))
    if processes > 1 and argv and argv[0].endswith(".py"):  # the global batch depends on it: say how it was launched
        return shlex.join(["accelerate", "launch", "--num_processes", str(processes), *argv])
    return shlex.join(["python", *argv]) if argv and argv[0].endswith(".py") else shlex.join(argv)


def write_model_card(
    output_dir: str | Path,
    stage: str,
    trainer_name: str,
    base_model: str | None = None,
    dataset: str | None = None,
    command: str | None = None,
    metrics: dict | None = None,
    model_name: str | None = None,
) -> ModelCard:
    pipeline_tag = "text-classification" if stage == "reward" else "text-generation"
    data = ModelCardData(
        base_model=base_model if base_model and not Path(base_model).exists() else None,
        datasets=[dataset] if dataset and not Path(dataset).exists() else None,
        library_name="transformers",
        license="apache-2.0",
        pipeline_tag=pipeline_tag,
        tags=["toyllm", stage, trainer_name.lower()],
        model_name=model_name or Path(output_dir).name,
    )
    lines = [
        "---",
        data.to_yaml(),
        "---",
        "",
        f"# toyllm — stage `{stage}`",
        "",
        STAGE[stage].about if stage in STAGE else "A toyllm checkpoint.",
        "",
        f"- trained with: `{trainer_name}`",
        f"- started from: `{base_model}`" if base_model else "- started from: random initialisation",
        f"- data: `{dataset}`" if dataset else "",
    ]
    if command:
        lines += ["", "## How it was made", "", "```bash", command, "```"]
    if metrics:
        lines += ["", "## Metrics", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {key} | {value:.4g} |" for key, value in sorted(metrics.items())]
    card = ModelCard("\n".join(line for line in lines if line is not None) + "\n")
    card.save(Path(output_dir) / "README.md")
    return card
