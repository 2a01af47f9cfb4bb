"""`toyllm compare`: any causal-LM checkpoints evaluated side by side on an eval file, with the demo's tables,
metrics.json and report."""

from __future__ import annotations

from pathlib import Path

from toyllm.data import DataFolder
from toyllm.data_checks import Fit, check_against_tokenizer, read_rows
from toyllm.errors import UserError
from toyllm.model_source import checkpoint_tokenizer, is_local_model
from toyllm.report import RunRecord, evaluate_and_report
from toyllm.stages import TABLE


def check_eval_fits(folders: dict[str, str | Path], eval_file: str | Path) -> None:
    """Every checkpoint's vocabulary knows every word of the eval file (else its perplexity and answers are about
    [UNK]s, e.g. an Alice model on another story's questions), one line per problem, before any model loads."""
    rows = read_rows(eval_file, "eval")
    problems = []
    for name, folder in folders.items():
        tokenizer = checkpoint_tokenizer(folder)
        try:
            check_against_tokenizer(eval_file, "eval", rows, Fit(tokenizer, tokenizer.model_max_length))
        except UserError as error:
            problems += [f"{name}: {problem}" for problem in error.problems]
    if problems:
        raise UserError(problems)


def run_compare(
    models: dict[str, str | Path],
    eval_file: str | Path,
    reward_model_dir: str | Path | None = None,
    output_dir: str | Path = "outputs/compare",
    data_dir: str | Path | None = None,
) -> dict:
    """`toyllm compare`: evaluate the checkpoints, print the tables, write metrics.json and the report. `data_dir`
    (by default the eval file's own folder, when it holds a whole data folder) gives the well-formed gauge its
    sentences and the judge's accuracy its pairs."""
    folders = {**models, **({"--reward-model": reward_model_dir} if reward_model_dir is not None else {})}
    missing = [f"{name}: {path} is not a folder or GGUF file" for name, path in folders.items()
               if not is_local_model(path)]  # fmt: skip
    if missing:
        raise UserError(missing)
    if not Path(eval_file).is_file():
        raise UserError(f"{eval_file}: no such eval file")
    check_eval_fits(folders, eval_file)
    data = DataFolder(data_dir if data_dir is not None else Path(eval_file).parent)
    if data_dir is not None:
        data.check()
    stage_dirs = dict(models)
    if reward_model_dir is not None and TABLE.round_judge not in stage_dirs:
        stage_dirs[TABLE.round_judge] = reward_model_dir  # its training curve belongs in the report too
    run = RunRecord(stage_dirs, data=data if data.is_complete() else None)
    metrics, table, report = evaluate_and_report(models, eval_file, reward_model_dir, output_dir, run)
    print(table)
    print(f"\nMetrics: {report.parent / 'metrics.json'}  Report: {report}")
    return metrics
