"""Tables that show the stages side by side (printed by the demo and `toyllm compare`) and the report with plots."""

from __future__ import annotations

import json
import time
from pathlib import Path

from toyllm.checkpoint import atomic_write_text
from toyllm.errors import UserError
from toyllm.stages import STAGE


def _cell(text: str, width: int) -> str:
    text = text if text else "(nothing)"
    return text if len(text) <= width else text[: width - 1] + "…"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
    )


def _stage_table(rows: list[dict], keys: list[str], stages: list[str], width: int, labels: dict | None = None) -> str:
    """A markdown table: the rows' own `keys`, then every stage's text, cut to `width`."""
    header = [*keys, *((labels or {}).get(stage, stage) for stage in stages)]
    return markdown_table(
        header, [[*(r[k] for k in keys), *(_cell(r.get(s, ""), width) for s in stages)] for r in rows]
    )


def format_responses_table(
    responses: list[dict], stages: list[str], width: int = 34, asked: dict | None = None, reference: bool = False
) -> str:
    """The model's evolution: for each eval prompt, the answer of every stage, in markdown. A stage not asked in its
    chat template says how it was asked in its column's header, e.g. "pretrain (text)". The terminal's table cuts
    answers to `width`; the report's (`reference=True`) shows them whole, beside the reference answer."""
    labels = {name: f"{name} ({how})" for name, how in (asked or {}).items() if how != "chat"}
    keys = ["split", "prompt", "reference"] if reference else ["split", "prompt"]
    return _stage_table(responses, keys, stages, width, labels)


def format_continuations_table(continuations: list[dict], stages: list[str], width: int = 34) -> str:
    """Base vs instruct: each plain-text prompt as every stage continues it through the text-generation pipeline."""
    return _stage_table(continuations, ["text"], stages, width)


def _splits(stages: dict[str, dict]) -> list[str]:
    return [key for key, value in next(iter(stages.values())).items() if isinstance(value, dict)]


def format_metrics_table(stages: dict[str, dict]) -> str:
    """Per-stage perplexity, then exact_match and mean_reward for every split, in markdown."""
    splits = _splits(stages)
    header = ["stage", "perplexity", *(f"{split} {what}" for split in splits for what in ("exact", "reward"))]
    rows = []
    for name, stage in stages.items():
        cells = [name, f"{stage['perplexity']:.2f}"]
        for split in splits:
            reward = stage[split].get("mean_reward")
            cells += [f"{stage[split]['exact_match']:.2f}", "-" if reward is None else f"{reward:+.2f}"]
        rows.append(cells)
    return markdown_table(header, rows)


OTHER_STAGE = "A checkpoint given to `toyllm compare`, evaluated the same way as the others."


def format_diagnostics_table(stages: dict[str, dict]) -> str:
    """Per stage and split: the reference's log-probability, the sampling hit rate and the well-formed share."""
    splits = _splits(stages)
    keys = [("reference_logprob", "logp", "{:+.1f}"), ("sampled_exact", "sampled", "{:.2f}"),
            ("well_formed", "well-formed", "{:.2f}")]  # fmt: skip
    header = ["stage", *(f"{split} {label}" for split in splits for _, label, _ in keys)]
    rows = [[name, *(fmt.format(stage[s][key]) if key in stage[s] else "-" for s in splits for key, _, fmt in keys)]
            for name, stage in stages.items()]  # fmt: skip
    return markdown_table(header, rows)


def format_rounds_table(rounds: list[dict]) -> str:
    header = ["round", "new pairs", "judge on new feedback", "held_out exact", "held_out reward",
              "trained exact", "well-formed trained", "well-formed held_out"]  # fmt: skip
    rows = []
    for row in rounds:
        accuracy, trained, held_out = row["judge_accuracy_on_new_feedback"], row["trained"], row["held_out"]
        rows.append([str(row["round"]), str(row["new_pairs"]), "-" if accuracy is None else f"{accuracy:.2f}",
                     f"{held_out['exact_match']:.2f}", f"{held_out['mean_reward']:+.2f}",
                     f"{trained['exact_match']:.2f}", f"{trained['well_formed']:.2f}",
                     f"{held_out['well_formed']:.2f}"])  # fmt: skip
    return markdown_table(header, rows)


def format_comparison(stages: dict[str, dict], responses: list[dict]) -> str:
    """The evolution table and the metrics table, as the demo prints them at its end (and `toyllm compare` does)."""
    asked = {name: stage.get("asked", "chat") for name, stage in stages.items()}
    return format_responses_table(responses, list(stages), asked=asked) + "\n\n" + format_metrics_table(stages)


def write_report(output_dir: str | Path, metrics: dict, stage_dirs: dict[str, str | Path]) -> Path:
    """`<output_dir>/report/report.md` with the tables, one sentence per stage and the plots beside it (PNGs).

    `metrics` is metrics.json's content; `stage_dirs` names each stage's checkpoint folder, whose
    trainer_state.json (if any) holds the training log that is plotted. Missing logs or keys leave a plot out.
    """
    from toyllm.plots import plot_metrics, plot_ppo, plot_rounds, plot_training, read_log_history, save_figure
    from toyllm.stages import round_name

    report_dir = Path(output_dir) / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    stages, responses = metrics.get("stages", {}), metrics.get("responses", [])
    histories = {name: read_log_history(path) for name, path in stage_dirs.items()}
    figures = [
        ("training.png", "Training curves", plot_training(histories)),
        ("ppo.png", "PPO, per step", plot_ppo(histories)),
        ("metrics.png", "Evaluation per stage", plot_metrics(stages) if stages else None),
    ]
    if metrics.get("rounds"):
        folders = [Path(output_dir) / round_name("ppo", row["round"]) for row in metrics["rounds"]]
        figures.append(
            ("rounds.png", "Proxy vs gold, round after round", plot_rounds(list(map(read_log_history, folders))))
        )
    names = list(dict.fromkeys([*stage_dirs, *stages]))
    lines = ["# toyllm report", "", "## The stages", ""]
    lines += [f"- **{name}**: {STAGE[name].about if name in STAGE else OTHER_STAGE}" for name in names]
    if stages:
        lines += ["", "## The model's evolution", "", "Every stage's answer to each eval prompt, whole, beside the "
                  "reference: greedy, in the chat template, unless the column says otherwise.", ""]  # fmt: skip
        asked = {name: stage.get("asked", "chat") for name, stage in stages.items()}
        lines += [format_responses_table(responses, list(stages), 10_000, asked=asked, reference=True), ""]
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
        lines += ["## Metrics", ""]
        lines += [
            "*perplexity* is of the eval references as plain text; *exact* is the share of greedy chat answers equal "
            "to the reference; *reward* is the judge's mean score of those answers (`-` without a judge).",
            "",
            format_metrics_table(stages),
        ]
    has_diagnostics = any(
        "reference_logprob" in v for stage in stages.values() for v in stage.values() if isinstance(v, dict)
    )
    if has_diagnostics:
        lines += [
            "",
            "## RLHF diagnostics",
            "",
            "*logp* is the mean log-probability of the reference answer (and its end of turn) given the chat prompt: "
            "how reachable the right answer is for PPO's sampling (-11 is one sample in 60,000). *sampled* is the "
            "share of answers sampled at temperature 1 that are exactly the reference; *well-formed* the share of "
            "greedy answers that are a sentence of the data folder (a mixture of words the model made up is not: the "
            "gauge of reward hacking).",
            "",
            format_diagnostics_table(stages),
        ]
        accuracy = (metrics.get("judge") or {}).get("pairwise_accuracy")
        if accuracy:
            cells = ", ".join(f"{split} {value:.2f}" for split, value in accuracy.items())
            lines += ["", f"The judge's pairwise accuracy on the preference pairs it was trained on: {cells}."]
    if metrics.get("rounds"):
        lines += [
            "",
            "## Feedback rounds",
            "",
            "Each round after the first labels the previous PPO policy's sampled answers (a simulated labeller: a "
            "known preferred answer beats any different sample), retrains the judge on the human pairs plus all the "
            "feedback so far, and runs PPO again from the SFT model. *judge on new feedback* is how often the judge "
            "that round's PPO optimised agrees with the labeller on that policy's own answers: low means PPO found "
            "answers the judge over-rates. The scores are the last judge's.",
            "",
            format_rounds_table(metrics["rounds"]),
        ]
    seconds = metrics.get("seconds") or {}
    if seconds:
        timing = ", ".join(f"{name} {value:.1f}" if value else f"{name} skipped" for name, value in seconds.items())
        lines += [
            "",
            f"Seconds per stage ('skipped': already complete): {timing} (total {sum(seconds.values()):.1f} s).",
        ]
    plotted = [(file, title, figure) for file, title, figure in figures if figure is not None]
    if plotted:
        lines += ["", "## Plots"]
    for file, title, figure in plotted:
        save_figure(figure, report_dir / file)
        lines += ["", f"### {title}", "", f"![{title}]({file})"]
    for file, _, figure in figures:
        if figure is None:
            (report_dir / file).unlink(missing_ok=True)  # a stale plot from an earlier run would mislead
    path = report_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def evaluate_and_report(
    checkpoints: dict[str, str | Path],
    eval_file: str | Path,
    reward_model_dir: str | Path | None,
    output_dir: str | Path,
    stage_dirs: dict[str, str | Path],
    seconds: dict[str, float] | None = None,
    asked: dict[str, str] | None = None,
    rounds: int = 0,
) -> tuple[dict, str, Path]:
    """Evaluate the checkpoints, write `<output_dir>/report/metrics.json` and the report; return the metrics, the
    comparison table and the report's path. The demo and `toyllm compare` both end here."""
    from toyllm.evaluate import evaluate_checkpoints

    start = time.perf_counter()
    stages, responses, continuations, judge = evaluate_checkpoints(checkpoints, eval_file, reward_model_dir, asked)
    seconds = seconds or {}
    metrics = {"stages": stages, "responses": responses, "continuations": continuations, "judge": judge}
    if rounds:
        from toyllm.feedback import round_metrics

        evaluated = {Path(path): stages[name] for name, path in checkpoints.items()}
        metrics["rounds"] = round_metrics(Path(output_dir), Path(eval_file), rounds, Path(reward_model_dir), evaluated)
    metrics["seconds"] = {**seconds, "evaluate": round(time.perf_counter() - start, 2)}
    report_dir = Path(output_dir) / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(report_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    report = write_report(output_dir, metrics, stage_dirs)
    return metrics, format_comparison(stages, responses), report


def check_eval_fits(folders: dict[str, str | Path], eval_file: str | Path) -> None:
    """Every checkpoint's vocabulary knows every word of the eval file (else its perplexity and answers are about
    [UNK]s: an Alice model on another story's questions scored 1947.95), one line per problem, before any model
    loads."""
    from transformers import AutoTokenizer

    from toyllm.data_checks import check_against_tokenizer, read_rows

    rows = read_rows(eval_file, "eval")
    problems = []
    for name, folder in folders.items():
        tokenizer = AutoTokenizer.from_pretrained(folder)
        try:
            check_against_tokenizer(eval_file, "eval", rows, tokenizer, tokenizer.model_max_length)
        except UserError as error:
            problems += [f"{name}: {problem}" for problem in error.problems]
    if problems:
        raise UserError(problems)


def run_compare(
    models: dict[str, str | Path],
    eval_file: str | Path,
    reward_model_dir: str | Path | None = None,
    output_dir: str | Path = "outputs/compare",
) -> dict:
    """`toyllm compare`: evaluate the checkpoints, print the tables, write metrics.json and the report."""
    folders = {**models, **({"--reward-model": reward_model_dir} if reward_model_dir is not None else {})}
    missing = [f"{name}: {path} is not a folder" for name, path in folders.items() if not Path(path).is_dir()]
    if missing:
        raise UserError(missing)
    if not Path(eval_file).is_file():
        raise UserError(f"{eval_file}: no such eval file")
    check_eval_fits(folders, eval_file)
    stage_dirs = dict(models)
    if reward_model_dir is not None and "reward" not in stage_dirs:
        stage_dirs["reward"] = reward_model_dir  # its training curve belongs in the report too
    metrics, table, report = evaluate_and_report(models, eval_file, reward_model_dir, output_dir, stage_dirs)
    print(table)
    print(f"\nMetrics: {report.parent / 'metrics.json'}  Report: {report}")
    return metrics
