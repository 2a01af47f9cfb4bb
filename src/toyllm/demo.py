"""`toyllm demo`: the whole chain, random → pretrain → SFT → reward → PPO → DPO, then the model's-evolution table;
with `--model`, a real instruct model's chain, instruct → SFT → reward → PPO → DPO (the practitioner's path).

Each stage runs the recipe's own `main()` with the recipe's own YAML, overriding only paths and the seed, so the demo
is the recipes, not a second implementation of them. The steps, their arguments and the columns of the tables all
come from the stage table (toyllm.stages).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import logging
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import datasets
import transformers
from transformers import AutoTokenizer

from toyllm.args import parse_recipe_args
from toyllm.checkpoint import is_finished, stage_fingerprint
from toyllm.config_checks import check_model_path
from toyllm.data import DataFolder, as_data_folder
from toyllm.data_checks import Fit, check_against_tokenizer, unknown_words
from toyllm.defaults import FEEDBACK_ROUNDS, LABEL_SAMPLES
from toyllm.errors import UserError
from toyllm.evaluate import DEFAULT_ASKING, Asking, learned_and_kept
from toyllm.feedback import Labelling, feedback_paths, label_round
from toyllm.instruct import build_instruct_stage, model_fingerprint
from toyllm.recipe_folder import DEFAULT_WHY, read_recipe_folder
from toyllm.report import RunRecord, evaluate_and_report
from toyllm.resources import RECIPES_DIR, TOY_CONFIG_DIR, default_data_dir, display
from toyllm.stages import (
    REAL_MODEL_STAGES,
    REAL_MODEL_TABLE,
    STAGES,
    TABLE,
    Stage,
    StageTable,
    not_installed,
    round_name,
    split_round,
)
from toyllm.toy import build_random_stage, random_fingerprint
from toyllm.versions import missing_module_reason

LOCK_FILE = ".toyllm_demo.lock"
REAL_MODEL_RECIPES = RECIPES_DIR / "smollm2-135m"  # sized for a ~100M-parameter instruct model on a CPU


@dataclass(frozen=True)
class Chain:
    """What the demo runs: the toy's chain, or a real instruct model's (`model`), each with its stage table, the
    folder of its stages' YAMLs, how its models are asked (samples per question, answer length, the judge's pairs,
    the retention questions a real model should still answer after fine-tuning) and its feedback rounds."""

    table: StageTable
    recipes: Path
    model: str | None = None  # a folder, a Hub id or a GGUF file; None: the toy, built from the story
    asking: Asking = DEFAULT_ASKING
    label_samples: int = LABEL_SAMPLES
    feedback_rounds: int = FEEDBACK_ROUNDS  # the default of --feedback-rounds
    left_out: tuple[Stage, ...] = ()  # rows whose recipe the installed libraries cannot run (PPO on TRL >= 1.13)
    why: str = ""  # how its recipe folder was chosen, said in one line


TOY = Chain(TABLE, RECIPES_DIR / "toy", left_out=not_installed(STAGES))


def real_model_chain(model: str, recipes: str | Path | None = None) -> Chain:
    """A real instruct model's chain with the YAMLs and demo settings of `recipes` (default: SmolLM2-135M's)."""
    folder = read_recipe_folder(recipes or REAL_MODEL_RECIPES)
    settings = folder.settings
    asking = Asking(samples=settings.eval_samples, max_new_tokens=settings.max_new_tokens,
                    judge_pairs=settings.judge_pairs, retention_file=folder.retention_file)  # fmt: skip
    why = "--recipes" if recipes else DEFAULT_WHY
    return Chain(REAL_MODEL_TABLE, folder.path, model, asking, settings.label_samples, settings.feedback_rounds,
                 not_installed(REAL_MODEL_STAGES), why)  # fmt: skip


@dataclass(frozen=True)
class Step:
    """One step of the demo: build a stage (the random model), train one (round 1, or a feedback round's retraining),
    or label a feedback round's policy answers."""

    action: Literal["build", "train", "label"]
    stage: str  # the stage built or trained; for "label", the policy whose answers are labelled
    round: int = 1

    @classmethod
    def named(cls, name: str) -> Step:
        """The train step of a checkpoint's name: `sft`, `ppo-2`."""
        stage, round_number = split_round(name)
        return cls("train", stage, round_number)

    @property
    def name(self) -> str:
        """The checkpoint folder (and log file) it writes: `sft`, `ppo-2`; `label-1` for a label step."""
        return f"label-{self.round}" if self.action == "label" else round_name(self.stage, self.round)


def demo_steps(rounds: int, table: StageTable = TABLE) -> list[Step]:
    """The table's stages in order, with each feedback round after the round's last stage: label what its policy
    wrote (`label-1`), retrain the round's stages (`reward-2`, `ppo-2`), ...; the last round's answers are labelled
    too, for the report."""
    steps = []
    for name in table:
        steps.append(Step("train" if table[name].recipe else "build", name))
        if table.feedback_round and name == table.feedback_round[-1]:
            for n in range(2, rounds + 1):
                steps += [
                    Step("label", table.round_policy, n - 1),
                    *(Step("train", s, n) for s in table.feedback_round),
                ]
            steps.append(Step("label", table.round_policy, rounds))
    return steps


def stage_overrides(
    step: Step | str,
    data: DataFolder | str | Path,
    output_dir: Path,
    seed: int,
    table: StageTable | None = None,
    chain: Chain = TOY,
) -> list[str]:
    """Command-line overrides that point a chain's recipe YAML at this run's data, seed and output folders. A
    feedback round's judge (`reward-2`) trains on the human pairs plus the feedback so far; its policy (`ppo-2`) is
    scored by it. `table` replaces the chain's own."""
    step, data, table = Step.named(step) if isinstance(step, str) else step, as_data_folder(data), table or chain.table
    row = table[step.stage]
    dataset = data.file(row.data)
    if step.round > 1 and row.data == "preference":
        dataset = feedback_paths(output_dir, step.round - 1)[1]
    args = [
        "--config", str(chain.recipes / f"{row.recipe}.yaml"),
        "--model_name_or_path", str(output_dir / row.starts_from),
        "--dataset_name", str(dataset),
        "--output_dir", str(output_dir / step.name),
        "--seed", str(seed),
        "--disable_tqdm", "true",  # the demo prints one line per stage; the stage's log keeps the loss lines
    ]  # fmt: skip
    if table[row.starts_from].recipe is None and chain.model is None:  # the random checkpoint is built (and timed)
        args += ["--from_scratch", "false"]  # as a stage of its own
    if row.judge:
        args += ["--reward_model_path", str(output_dir / round_name(row.judge, step.round))]
    for flag in row.reads_folder:
        args += [f"--{flag}", str(data.path)]
    for flag, kind in row.also_reads:
        args += [f"--{flag}", str(data.file(kind))]
    return args


def recipe_args(
    step: Step | str, data: DataFolder | str | Path, output_dir: Path, seed: int, overwrite: bool, chain: Chain = TOY
) -> tuple:
    """The recipe module of a train step, and its arguments parsed as the recipe parses them."""
    step = Step.named(step) if isinstance(step, str) else step
    recipe = importlib.import_module(f"toyllm.recipes.{chain.table[step.stage].recipe}")
    overrides = stage_overrides(step, data, output_dir, seed, chain=chain) + ["--overwrite", str(overwrite)]
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


def progress(message: str) -> None:
    print(message, file=sys.__stdout__, flush=True)


class DemoRun:
    """One run of the demo: its data, output folder and seed, and the seconds each step took."""

    def __init__(self, data: DataFolder, output_dir: Path, seed: int, overwrite: bool, chain: Chain = TOY):
        self.data, self.output_dir, self.seed, self.overwrite, self.chain = data, output_dir, seed, overwrite, chain
        self.log_dir = output_dir / "logs"
        self.seconds: dict[str, float] = {}

    def label(self, step: Step, header: str) -> None:
        policy = round_name(step.stage, step.round)
        progress(f"{header} ... (simulated labeller: {policy}'s answers)")
        start = time.perf_counter()
        labelling = Labelling(self.chain.label_samples, self.seed, self.chain.asking.max_new_tokens)
        label_round(self.output_dir / policy, self.data, step.round, self.output_dir, labelling, self.overwrite)
        self.seconds[step.name] = round(time.perf_counter() - start, 2)

    def build_or_train(self, step: Step, header: str) -> None:
        """Run the step unless its folder already holds this very stage; its output goes to its log file."""
        folder = self.output_dir / step.name
        if step.action == "build" and self.chain.model is not None:
            fingerprint = model_fingerprint(self.chain.model)
        elif step.action == "build":
            fingerprint = random_fingerprint(self.data, TOY_CONFIG_DIR, self.seed)
        else:
            recipe, args = recipe_args(step, self.data, self.output_dir, self.seed, self.overwrite, self.chain)
            fingerprint = stage_fingerprint(*args)
        if is_finished(folder, fingerprint, self.overwrite):
            self.seconds[step.name] = 0.0
            progress(f"{header} already complete for this config and data: skipped")
            return
        progress(f"{header} ... ")
        start = time.perf_counter()
        log_path = self.log_dir / f"{step.name}.log"
        with open(log_path, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            with _library_logs_to(log):
                if step.action == "build" and self.chain.model is not None:
                    build_instruct_stage(self.chain.model, folder, step.stage, self.overwrite)
                elif step.action == "build":
                    build_random_stage(self.data, TOY_CONFIG_DIR, folder, self.seed, self.overwrite)
                else:
                    recipe.main(*args)
        self.seconds[step.name] = round(time.perf_counter() - start, 2)
        progress(f"      done in {self.seconds[step.name]:.1f}s (log: {log_path})")


def run_demo(
    data_dir: str | Path | None = None,
    output_dir: str | Path = "outputs/toy",
    seed: int = 0,
    overwrite: bool = False,
    feedback_rounds: int | None = None,
    chain: Chain = TOY,
) -> dict:
    """Run every stage not already complete for this config and data, then evaluate and report. `chain`: the toy's,
    or a real instruct model's (`real_model_chain`). `feedback_rounds`: the chain's own default when None."""
    feedback_rounds = chain.feedback_rounds if feedback_rounds is None else feedback_rounds
    if feedback_rounds < 1:
        raise UserError(f"--feedback-rounds: {feedback_rounds}; the first round is PPO itself, so at least 1")
    if not 0 <= seed < 2**32:
        raise UserError(f"--seed: {seed}; a seed is a whole number from 0 to 2**32 - 1")
    if chain.model is not None:
        check_model_path("--model", chain.model)  # a missing folder or GGUF file, before anything is written
        read_recipe_folder(chain.recipes).check(recipe_modules(chain.table))
        progress(f"recipes: {display(chain.recipes)} ({chain.why})")
    data, output_dir = DataFolder(data_dir or default_data_dir()), Path(output_dir)
    rows = data.check()  # every file checked before anything is written
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    run = DemoRun(data, output_dir, seed, overwrite, chain)
    with output_folder_lock(output_dir):
        return run_steps(run, rows, feedback_rounds)


def recipe_modules(table: StageTable) -> dict:
    """Each recipe of the table, by name, as its module (its ARGUMENT_TYPES read a YAML)."""
    return {name: importlib.import_module(f"toyllm.recipes.{name}") for name in table.recipes}


@contextlib.contextmanager
def output_folder_lock(output_dir: Path):
    """One demo at a time in an output folder: a second one would overwrite the first's logs and half-saved stages.
    The lock is the operating system's (flock), so a killed run leaves none behind."""
    for folder in (output_dir, *output_dir.parents):
        if folder.exists() and not folder.is_dir():
            raise UserError(f"--output-dir: {folder} is a file; give a folder (it is created if missing)")
    (output_dir / "logs").mkdir(parents=True, exist_ok=True)
    with open(output_dir / LOCK_FILE, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise UserError(f"{output_dir}: another toyllm demo is running in this folder ({holder}); wait for it "
                            "to finish, or choose another --output-dir") from None  # fmt: skip
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def run_steps(run: DemoRun, rows: dict, feedback_rounds: int) -> dict:
    """Every step of the demo in order, then the evaluation."""
    data, output_dir = run.data, run.output_dir
    steps = demo_steps(feedback_rounds, run.chain.table)
    total = len(steps) + 1
    for row in run.chain.left_out:
        progress(f"{row.name}: not run: {missing_module_reason(row.needs)}")
    for number, step in enumerate(steps, start=1):
        header = f"[{number}/{total}] {step.name:<8}"
        if step.action == "label":
            run.label(step, header)
            continue
        run.build_or_train(step, header)
        if step.name == "sft" and run.chain.asking.retention_file is not None:
            progress("      " + learned_and_kept(output_dir / "sft", output_dir / "instruct", data,
                                                 run.chain.asking))  # fmt: skip
        if step.action == "build":  # the vocabulary now exists: every eval question must fit it
            check_eval_rows(data, rows["eval"], AutoTokenizer.from_pretrained(output_dir / step.name))
    progress(f"[{total}/{total}] evaluate ...")
    return evaluate_run(run, feedback_rounds)


def check_eval_rows(data: DataFolder, rows: list, tokenizer) -> None:
    """Eval rows longer than the context are errors; words the vocabulary lacks (it is built from the training files
    only, so evaluation never changes what is trained) are named in one line and read as the unknown token."""
    eval_file = data.file("eval")
    check_against_tokenizer(eval_file, "eval", rows, Fit(tokenizer, tokenizer.model_max_length, unknown_words_ok=True))
    unknown = dict.fromkeys(word for _, row in rows for key in ("prompt", "reference")
                            for word in unknown_words(tokenizer, row[key]))  # fmt: skip
    if unknown:
        progress(f"      note: {eval_file}: words no training file holds, read as {tokenizer.unk_token}: "
                 f"{', '.join(unknown)}")  # fmt: skip


def last_checkpoints(output_dir: Path, rounds: int, table: StageTable = TABLE) -> dict[str, Path]:
    """Each stage's newest checkpoint: the last feedback round's for the stages a round repeats."""
    return {name: output_dir / round_name(name, rounds if name in table.feedback_round else 1) for name in table}


def evaluate_run(run: DemoRun, rounds: int) -> dict:
    """Every policy evaluated and scored by the last round's judge (the best informed), the tables printed."""
    table = run.chain.table
    last = last_checkpoints(run.output_dir, rounds, table)
    record = RunRecord(last, run.seconds, rounds, run.data, table, run.chain.recipes if run.chain.model else None)
    asking = replace(run.chain.asking, asked={stage: table[stage].asked for stage in table.policies})
    with open(run.log_dir / "evaluate.log", "w") as log, _library_logs_to(log):
        metrics, comparison, report = evaluate_and_report(
            {stage: last[stage] for stage in table.policies}, run.data.file("eval"), last[table.round_judge],
            run.output_dir, record, asking,
        )  # fmt: skip
    progress("")
    progress(comparison)
    progress("")
    total_seconds = sum(metrics["seconds"].values())
    progress(f"Total {total_seconds:.1f}s. Metrics: {report.parent / 'metrics.json'}  Report: {report}")
    return metrics
