"""The report of a run: `report/metrics.json`, and `report/report.md` with the tables, one sentence per stage and
the plots beside it. The demo and `toyllm compare` both end here."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from toyllm.data import DataFolder
from toyllm.evaluate import DEFAULT_ASKING, Asking, evaluate_checkpoints
from toyllm.feedback import round_metrics
from toyllm.files import atomic_write_text
from toyllm.plots import plot_metrics, plot_rl, plot_rounds, plot_training, read_log_history, save_figure
from toyllm.stages import TABLE, StageTable, round_name
from toyllm.tables import (
    format_comparison,
    format_continuations_table,
    format_diagnostics_table,
    format_metrics_table,
    format_responses_table,
    format_rounds_table,
)

OTHER_STAGE = "A checkpoint given to `toyllm compare`, evaluated the same way as the others."


def write_report(
    output_dir: str | Path, metrics: dict, stage_dirs: dict[str, str | Path], table: StageTable = TABLE
) -> Path:
    """`<output_dir>/report/report.md` with the tables, one sentence per stage and the plots beside it (PNGs).

    `metrics` is metrics.json's content; `stage_dirs` names each stage's checkpoint folder, whose
    trainer_state.json (if any) holds the training log that is plotted. Missing logs or keys leave a plot out.
    """
    report_dir = Path(output_dir) / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    stages = metrics.get("stages", {})
    names = list(dict.fromkeys([*stage_dirs, *stages]))
    lines = ["# toyllm report", "", "## The stages", ""]
    lines += [f"- **{name}**: {table[name].about if name in table else OTHER_STAGE}" for name in names]
    if stages:
        lines += _evolution_section(metrics) + _metrics_section(stages)
    lines += _diagnostics_section(metrics) + _rl_methods_section(stages, table)
    lines += _rounds_section(metrics, table) + _seconds_section(metrics)
    lines += _plots_section(report_dir, _figures(output_dir, metrics, stage_dirs, table))
    path = report_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _evolution_section(metrics: dict) -> list[str]:
    stages, responses = metrics["stages"], metrics.get("responses", [])
    lines = ["", "## The model's evolution", "", "Every stage's answer to each eval prompt, whole, beside the "
             "reference: greedy, in the chat template, unless the column says otherwise.", ""]  # fmt: skip
    lines += [format_responses_table(responses, stages, 10_000, reference=True), ""]
    continuations = metrics.get("continuations") or []
    if continuations:
        lines += [
            "## Base vs instruct",
            "",
            "The same checkpoints met the other way users meet a model on the Hub: plain text given to "
            '`pipeline("text-generation")`, continued greedily. A base model (pretrain) continues the text it '
            "has read; the chat-tuned ones (sft, ppo, dpo) answer questions in the table above, and what they do "
            "with plain text shows how much of the completer is left.",
            "",
            format_continuations_table(continuations, list(stages)),
            "",
        ]
    return lines


def _metrics_section(stages: dict) -> list[str]:
    return [
        "## Metrics",
        "",
        "*perplexity* is of the eval references as plain text; *exact* is the share of greedy chat answers equal "
        "to the reference; *reward* is the judge's mean score of those answers (`-` without a judge).",
        "",
        format_metrics_table(stages),
    ]


def _diagnostics_section(metrics: dict) -> list[str]:
    stages = metrics.get("stages", {})
    if not any("reference_logprob" in v for stage in stages.values() for v in stage.values() if isinstance(v, dict)):
        return []
    lines = [
        "",
        "## RLHF diagnostics",
        "",
        "*logp* is the mean log-probability of the reference answer (and its end of turn) given the chat prompt: "
        "how reachable the right answer is for PPO's sampling (-11 is one sample in 60,000). *sampled* is the "
        "share of answers sampled at temperature 1 that are exactly the reference; *well-formed* the share of "
        "greedy answers that are a sentence of the data folder (a mixture of words the model made up is not: the "
        "gauge of reward hacking); *mixtures* the share of greedy answers that repeat a word of four letters or "
        "more more often than the reference does, the same gauge for a model that writes its own sentences.",
        "",
        format_diagnostics_table(stages),
    ]
    accuracy = (metrics.get("judge") or {}).get("pairwise_accuracy")
    if accuracy:
        cells = ", ".join(f"{split} {value:.2f}" for split, value in accuracy.items())
        lines += ["", f"The judge's pairwise accuracy on the preference pairs it was trained on: {cells}."]
    return lines


def _rl_methods_section(stages: dict, table: StageTable) -> list[str]:
    """Where several RL stages met one judge: what to read in their neighbouring columns."""
    shown = [name for name in table.rl_policies if name in stages]
    if len(shown) < 2:
        return []
    return [
        "",
        "## One judge, two RL methods",
        "",
        f"{' and '.join(shown)} start from the same SFT model and maximise the same judge, round after round; only "
        "the method differs (The stages, above). PPO judges each sampled answer against a value model it trains "
        "beside the policy over a batch of different questions; RLOO samples several answers to each question and "
        "judges each against the mean score of its siblings, so an answer gains only by beating the other answers "
        "to its own question, and no second model is trained. Read their columns side by side: a judge's score "
        "that rises while *exact* and *well-formed* fall is the judge being hacked, not the answers improving.",
    ]


def _rounds_section(metrics: dict, table: StageTable) -> list[str]:
    if not metrics.get("rounds"):
        return []
    retrained = ", ".join(name for name in table.feedback_round if table[name].saves == "causal-lm")
    return [
        "",
        "## Feedback rounds",
        "",
        f"Each round after the first labels the previous {table.round_policy} policy's sampled answers (a simulated "
        "labeller: a known preferred answer beats any different sample), retrains the judge on the human pairs plus "
        f"all the feedback so far, and runs {retrained} again from the SFT model against it. *judge on new "
        f"feedback* is how often the judge that round's {table.round_policy} optimised agrees with the labeller on "
        "that policy's own answers: low means it found answers the judge over-rates. The scores are the last "
        "judge's.",
        "",
        format_rounds_table(metrics["rounds"]),
    ]


def _seconds_section(metrics: dict) -> list[str]:
    seconds = metrics.get("seconds") or {}
    if not seconds:
        return []
    timing = ", ".join(f"{name} {value:.1f}" if value else f"{name} skipped" for name, value in seconds.items())
    return ["", f"Seconds per stage ('skipped': already complete): {timing} (total {sum(seconds.values()):.1f} s)."]


def _figures(output_dir, metrics: dict, stage_dirs: dict, table: StageTable) -> list[tuple]:
    """(file, title, figure or None) for every plot the report can hold."""
    stages = metrics.get("stages", {})
    histories = {name: read_log_history(path) for name, path in stage_dirs.items()}
    figures = [
        ("training.png", "Training curves", plot_training(histories)),
        ("rl.png", f"RLHF, per step{_shown(stage_dirs, *table.rl_policies)}", plot_rl(histories)),
        ("metrics.png", "Evaluation per stage", plot_metrics(stages) if stages else None),
    ]
    if metrics.get("rounds"):
        folders = [Path(output_dir) / round_name(table.round_policy, row["round"]) for row in metrics["rounds"]]
        figures.append(
            ("rounds.png", "Proxy vs gold, round after round", plot_rounds(list(map(read_log_history, folders))))
        )
    return figures


def _shown(stage_dirs: dict, *stages: str) -> str:
    """Which checkpoints a plot of stages shows, when they are a later round: " (ppo-2, rloo-2: the last round)"."""
    folders = [Path(stage_dirs[stage]).name for stage in stages if stage in stage_dirs]
    return f" ({', '.join(folders)}: the last round)" if folders and folders != list(stages) else ""


def _plots_section(report_dir: Path, figures: list[tuple]) -> list[str]:
    """Save each plot beside the report; a plot with nothing to show is removed, as a stale one would mislead."""
    lines = []
    for file, title, figure in figures:
        if figure is None:
            (report_dir / file).unlink(missing_ok=True)
            continue
        save_figure(figure, report_dir / file)
        lines += ["", f"### {title}", "", f"![{title}]({file})"]
    return ["", "## Plots", *lines] if lines else []


@dataclass(frozen=True)
class RunRecord:
    """What the report tells of a run besides its evaluation: each stage's folder (its training curves), the seconds
    each step took, the feedback rounds (0: none), the story's data folder (the well-formed gauge, the judge's pairs,
    the rounds), the stage table, and a real model's recipe folder."""

    stage_dirs: dict[str, str | Path]
    seconds: dict[str, float] = field(default_factory=dict)
    rounds: int = 0
    data: DataFolder | None = None
    table: StageTable = TABLE
    recipes: Path | None = None


def evaluate_and_report(
    checkpoints: dict[str, str | Path],
    eval_file: str | Path,
    reward_model_dir: str | Path | None,
    output_dir: str | Path,
    run: RunRecord,
    asking: Asking = DEFAULT_ASKING,
) -> tuple[dict, str, Path]:
    """Evaluate the checkpoints as `asking` says, write `<output_dir>/report/metrics.json` and the report; return the
    metrics, the comparison table and the report's path."""
    start = time.perf_counter()
    stages, responses, continuations, judge = evaluate_checkpoints(
        checkpoints, eval_file, reward_model_dir, run.data, asking
    )
    metrics = {"stages": stages, "responses": responses, "continuations": continuations, "judge": judge}
    if run.data is not None:
        metrics["data_dir"] = str(run.data.path.resolve())  # the story the run was trained on: `toyllm app` reads it
    if run.recipes is not None:
        metrics["recipes"] = str(run.recipes)
    if run.rounds:
        evaluated = {Path(path): stages[name] for name, path in checkpoints.items()}
        metrics["rounds"] = round_metrics(Path(output_dir), run.data, run.rounds, evaluated, run.table, asking)
    metrics["seconds"] = {**run.seconds, "evaluate": round(time.perf_counter() - start, 2)}
    report_dir = Path(output_dir) / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(report_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    report = write_report(output_dir, metrics, run.stage_dirs, run.table)
    return metrics, format_comparison(stages, responses), report
