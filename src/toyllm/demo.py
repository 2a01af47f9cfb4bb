"""`toyllm demo`: the whole chain, random → pretrain → SFT → reward → PPO → DPO, then the model's-evolution table.

Each stage runs the recipe's own `main()` with the recipe's own YAML, overriding only paths and the seed, so the demo
is the recipes, not a second implementation of them.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import time
from pathlib import Path

import datasets
import transformers
from transformers import AutoTokenizer

from toyllm.args import parse_recipe_args
from toyllm.checkpoint import is_finished, stage_fingerprint
from toyllm.data import DATA_FILES, check_data_folder
from toyllm.data_checks import check_against_tokenizer
from toyllm.errors import UserError
from toyllm.feedback import feedback_paths, label_round
from toyllm.model import build_random_stage, random_fingerprint
from toyllm.report import evaluate_and_report
from toyllm.resources import RECIPES_DIR, TOY_CONFIG_DIR, default_data_dir
from toyllm.stages import FEEDBACK_ROUND, POLICIES, STAGE, round_name, split_round

FEEDBACK_ROUNDS = 2  # PPO, then one round of feedback: label its answers, retrain the judge, PPO again


def stage_overrides(stage: str, data_dir: Path, output_dir: Path, seed: int) -> list[str]:
    """Command-line overrides that point a toy recipe at this run's data, seed and output folders. A feedback round's
    judge (`reward-2`) trains on the human pairs plus the feedback so far; its PPO (`ppo-2`) is scored by it."""
    base, round_number = split_round(stage)
    row = STAGE[base]
    data = str(data_dir / DATA_FILES[row.data])
    if round_number > 1 and row.data == "preference":
        data = str(feedback_paths(output_dir, round_number - 1)[1])
    args = [
        "--config", str(RECIPES_DIR / "toy" / f"{row.recipe}.yaml"),
        "--model_name_or_path", str(output_dir / row.starts_from),
        "--dataset_name", data,
        "--output_dir", str(output_dir / stage),
        "--seed", str(seed),
        "--disable_tqdm", "true",  # the demo prints one line per stage; the stage's log keeps the loss lines
    ]  # fmt: skip
    if STAGE[row.starts_from].recipe is None:  # the random checkpoint is built (and timed) as a stage of its own
        args += ["--from_scratch", "false"]
    if row.judge:
        args += ["--reward_model_path", str(output_dir / round_name(row.judge, round_number))]
    if base == "ppo":
        args += ["--gold_data_dir", str(data_dir)]
    if base == "sft":  # the story's own sentences are SFT's pretraining mix (ptx_dataset_name in sft.yaml)
        args += ["--ptx_dataset_name", str(data_dir / DATA_FILES["pretrain"])]
    return args


def demo_steps(rounds: int) -> list[str]:
    """The table's stages in order, with each feedback round after PPO: label what PPO wrote (`label-1`), retrain
    the judge (`reward-2`), run PPO again (`ppo-2`), ...; the last round's answers are labelled too, for the report."""
    steps = []
    for stage in STAGE:
        steps.append(stage)
        if stage == FEEDBACK_ROUND[-1]:
            for n in range(2, rounds + 1):
                steps += [f"label-{n - 1}", *(round_name(s, n) for s in FEEDBACK_ROUND)]
            steps.append(f"label-{rounds}")
    return steps


def recipe_args(stage: str, data_dir: Path, output_dir: Path, seed: int, overwrite: bool) -> tuple:
    recipe = importlib.import_module(f"toyllm.recipes.{STAGE[split_round(stage)[0]].recipe}")
    overrides = stage_overrides(stage, data_dir, output_dir, seed) + ["--overwrite", str(overwrite)]
    return recipe, parse_recipe_args(recipe.ARGUMENT_TYPES, overrides)


@contextlib.contextmanager
def _library_logs_to(stream):
    """Send transformers' log handlers (bound to the real stderr at import) to the stage's log file."""
    handlers = [h for h in logging.getLogger("transformers").handlers if isinstance(h, logging.StreamHandler)]
    previous = [h.setStream(stream) for h in handlers]
    try:
        yield
    finally:
        for handler, old in zip(handlers, previous):
            handler.setStream(old)


def run_demo(
    data_dir: str | Path | None = None,
    output_dir: str | Path = "outputs/toy",
    seed: int = 0,
    overwrite: bool = False,
    feedback_rounds: int = FEEDBACK_ROUNDS,
) -> dict:
    """Run every stage not already complete for this config and data, then evaluate and report."""
    if feedback_rounds < 1:
        raise UserError(f"--feedback-rounds: {feedback_rounds}; the first round is PPO itself, so at least 1")
    data_dir, output_dir = Path(data_dir or default_data_dir()), Path(output_dir)
    rows = check_data_folder(data_dir)  # every file checked before anything is trained
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    log_dir = output_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    def progress(message: str) -> None:
        print(message, file=sys.__stdout__, flush=True)

    steps = demo_steps(feedback_rounds)
    total = len(steps) + 1
    for number, stage in enumerate(steps, start=1):
        if stage.startswith("label-"):
            round_number = int(stage.split("-")[1])
            policy = round_name("ppo", round_number)
            progress(f"[{number}/{total}] {stage:<8} ... (simulated labeller: {policy}'s answers)")
            start = time.perf_counter()
            label_round(output_dir / policy, data_dir, round_number, output_dir, seed=seed,
                        overwrite=overwrite)  # fmt: skip
            seconds[stage] = round(time.perf_counter() - start, 2)
            continue
        built = stage in STAGE and STAGE[stage].recipe is None  # the random model: built, not trained by a recipe
        if built:
            done = is_finished(output_dir / stage, random_fingerprint(data_dir, TOY_CONFIG_DIR, seed), overwrite)
        else:
            recipe, args = recipe_args(stage, data_dir, output_dir, seed, overwrite)
            done = is_finished(output_dir / stage, stage_fingerprint(*args), overwrite)
        if done:
            seconds[stage] = 0.0
            progress(f"[{number}/{total}] {stage:<8} already complete for this config and data: skipped")
            continue
        progress(f"[{number}/{total}] {stage:<8} ... ")
        start = time.perf_counter()
        log_path = log_dir / f"{stage}.log"
        with open(log_path, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            with _library_logs_to(log):
                if built:
                    build_random_stage(data_dir, TOY_CONFIG_DIR, output_dir / stage, seed, overwrite)
                else:
                    recipe.main(*args)
        seconds[stage] = round(time.perf_counter() - start, 2)
        progress(f"      done in {seconds[stage]:.1f}s (log: {log_path})")
        if built:  # the vocabulary now exists: every eval question must fit and be known to it
            tokenizer = AutoTokenizer.from_pretrained(output_dir / stage)
            eval_file = data_dir / DATA_FILES["eval"]
            check_against_tokenizer(eval_file, "eval", rows["eval"], tokenizer, tokenizer.model_max_length)

    progress(f"[{total}/{total}] evaluate ...")
    last = {
        stage: output_dir / round_name(stage, feedback_rounds if stage in FEEDBACK_ROUND else 1) for stage in STAGE
    }
    with open(log_dir / "evaluate.log", "w") as log, _library_logs_to(log):
        metrics, table, report = evaluate_and_report(
            {stage: last[stage] for stage in POLICIES},
            data_dir / DATA_FILES["eval"],
            last["reward"],  # the judge of the last round, the best informed: it scores every stage
            output_dir,
            stage_dirs=last,
            seconds=seconds,
            asked={stage: STAGE[stage].asked for stage in POLICIES},
            rounds=feedback_rounds,
        )
    progress("")
    progress(table)
    progress("")
    total_seconds = sum(metrics["seconds"].values())
    progress(f"Total {total_seconds:.1f}s. Metrics: {report.parent / 'metrics.json'}  Report: {report}")
    return metrics
