"""`toyllm demo`: the whole chain, random → pretrain → SFT → reward → PPO → DPO, then the model's-evolution table.

Each stage runs the recipe's own `main()` with the recipe's own YAML, overriding only paths and the seed, so the demo
is the recipes, not a second implementation of them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import sys
import time
from pathlib import Path

import datasets
import transformers
from transformers import AutoTokenizer

import toyllm.recipes
from toyllm.data import DATA_FILES, check_data_folder
from toyllm.evaluate import evaluate_checkpoints
from toyllm.model import build_random_checkpoint
from toyllm.report import format_comparison, write_report
from toyllm.stage import atomic_write_text, parse_recipe_args, read_marker, stage_fingerprint, write_marker
from toyllm.validate import UserError, check_against_tokenizer

RECIPES_DIR = Path(toyllm.recipes.__file__).parent
TOY_CONFIG_DIR = RECIPES_DIR.parent / "toy_config"
TRAINED_STAGES = ("pretrain", "sft", "reward", "ppo", "dpo")
POLICY_STAGES = ("random", "pretrain", "sft", "ppo", "dpo")


def stage_overrides(stage: str, data_dir: Path, output_dir: Path, seed: int) -> list[str]:
    """Command-line overrides that point a toy recipe at this run's data, seed and output folders."""
    data = {name: str(data_dir / file) for name, file in DATA_FILES.items()}
    model_from = {"pretrain": "random", "sft": "pretrain", "reward": "sft", "ppo": "sft", "dpo": "sft"}[stage]
    dataset = {"pretrain": "pretrain", "sft": "sft", "reward": "preference", "ppo": "prompts", "dpo": "preference"}
    args = [
        "--config", str(RECIPES_DIR / "toy" / f"{stage}.yaml"),
        "--model_name_or_path", str(output_dir / model_from),
        "--dataset_name", data[dataset[stage]],
        "--output_dir", str(output_dir / stage),
        "--seed", str(seed),
    ]  # fmt: skip
    if stage == "pretrain":  # the random checkpoint is built (and timed) as a stage of its own
        args += ["--from_scratch", "false"]
    if stage == "ppo":
        args += ["--reward_model_path", str(output_dir / "reward")]
    return args


def recipe_args(stage: str, data_dir: Path, output_dir: Path, seed: int, overwrite: bool) -> tuple:
    recipe = importlib.import_module(f"toyllm.recipes.{stage}")
    overrides = stage_overrides(stage, data_dir, output_dir, seed) + ["--overwrite", str(overwrite)]
    return recipe, parse_recipe_args(recipe.ARGUMENT_TYPES, overrides)


def random_fingerprint(data_dir: Path, seed: int) -> str:
    digest = hashlib.sha256(f"seed={seed}".encode())
    for path in [*(data_dir / f for f in DATA_FILES.values()), *sorted(TOY_CONFIG_DIR.iterdir())]:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def check_can_write(folder: Path, fingerprint: str, overwrite: bool) -> bool:
    """True when `folder` already holds this exact stage; an error when it holds another config's, unless told."""
    marker = read_marker(folder)
    if marker is None:
        return False
    if marker["fingerprint"] == fingerprint:
        return True
    if not overwrite:
        raise UserError(
            f"{folder}: holds a finished {marker['stage']} checkpoint from a different config, data or seed; "
            "pass --overwrite to replace it, or choose another --output-dir"
        )
    return False


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
    data_dir: str | Path = "data", output_dir: str | Path = "outputs/toy", seed: int = 0, overwrite: bool = False
) -> dict:
    """Run every stage not already complete for this config and data, then evaluate and report."""
    data_dir, output_dir = Path(data_dir), Path(output_dir)
    rows = check_data_folder(data_dir)  # every file checked before anything is trained
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    log_dir = output_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    def progress(message: str) -> None:
        print(message, file=sys.__stdout__, flush=True)

    def build_random() -> None:
        fingerprint = random_fingerprint(data_dir, seed)
        if check_can_write(output_dir / "random", fingerprint, overwrite):
            return
        build_random_checkpoint(data_dir, TOY_CONFIG_DIR, output_dir / "random", seed)
        write_marker(output_dir / "random", "random", fingerprint)

    total = len(TRAINED_STAGES) + 2
    for number, stage in enumerate(("random", *TRAINED_STAGES), start=1):
        if stage == "random":
            done = check_can_write(output_dir / "random", random_fingerprint(data_dir, seed), overwrite)
        else:
            recipe, args = recipe_args(stage, data_dir, output_dir, seed, overwrite)
            done = check_can_write(output_dir / stage, stage_fingerprint(*args), overwrite)
        if done:
            seconds[stage] = 0.0
            progress(f"[{number}/{total}] {stage:<8} already complete for this config and data: skipped")
            continue
        progress(f"[{number}/{total}] {stage:<8} ... ")
        start = time.perf_counter()
        log_path = log_dir / f"{stage}.log"
        with open(log_path, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            with _library_logs_to(log):
                build_random() if stage == "random" else recipe.main(*args)
        seconds[stage] = round(time.perf_counter() - start, 2)
        progress(f"      done in {seconds[stage]:.1f}s (log: {log_path})")
        if stage == "random":  # the vocabulary now exists: every eval question must fit and be known to it
            tokenizer = AutoTokenizer.from_pretrained(output_dir / "random")
            eval_file = data_dir / DATA_FILES["eval"]
            check_against_tokenizer(eval_file, "eval", rows["eval"], tokenizer, tokenizer.model_max_length)

    progress(f"[{total}/{total}] evaluate ...")
    start = time.perf_counter()
    checkpoints = {stage: output_dir / stage for stage in POLICY_STAGES}
    with open(log_dir / "evaluate.log", "w") as log, _library_logs_to(log):
        stages, responses, continuations = evaluate_checkpoints(
            checkpoints, data_dir / DATA_FILES["eval"], output_dir / "reward"
        )
    seconds["evaluate"] = round(time.perf_counter() - start, 2)
    metrics = {"stages": stages, "responses": responses, "continuations": continuations, "seconds": seconds}

    report_dir = output_dir / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(report_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    report = write_report(output_dir, metrics, {stage: output_dir / stage for stage in ("random", *TRAINED_STAGES)})
    progress("")
    progress(format_comparison(stages, responses))
    progress("")
    progress(f"Total {sum(seconds.values()):.1f}s. Metrics: {report_dir / 'metrics.json'}  Report: {report}")
    return metrics
