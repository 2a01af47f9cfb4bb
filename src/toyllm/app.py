"""`toyllm app`: a local web page over a finished run, where one question is asked of every stage at once.

Each column is a checkpoint of the run (random, pretrain, SFT, every PPO round, DPO; or instruct, SFT, PPO, DPO for a
real model), asked as the evaluation asks it and exactly as `toyllm generate` would (the same function, the same
flags), with the last judge's score and whether the answer is a sentence of the story. Gradio is an optional extra
(`pip install "toyllm[app]"`).
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from transformers import set_seed

import toyllm
from toyllm.chat import Sampling, answer, load_chat_model
from toyllm.data import DataFolder
from toyllm.defaults import CHAT_MAX_NEW_TOKENS
from toyllm.errors import UserError
from toyllm.evaluate import Judge
from toyllm.generation import normalise
from toyllm.hub import LOCAL_ONLY
from toyllm.merge import merge_adapter
from toyllm.resources import ALICE_DIR, RECIPES_DIR, TOY_CONFIG_DIR
from toyllm.stages import REAL_MODEL_TABLE, TABLE, StageTable, round_name

SAMPLES = 4  # sampled answers per stage with the sample switch on (at most MAX_SAMPLES)
MAX_SAMPLES = 8


@dataclass
class Column:
    """One checkpoint of the run and how it is asked: `as_text` (a base model continues plain text) and `sampled`
    (a random model's greedy output is one word repeated, so it is always sampled)."""

    name: str
    path: Path
    as_text: bool
    sampled: bool

    @property
    def how(self) -> str:
        return ("as text" if self.as_text else "chat") + (", sampled" if self.sampled else "")

    def generate_flags(self, seed: int) -> list[str]:
        """The `toyllm generate` flags that give this column's answer."""
        return (["--as-text"] if self.as_text else []) + (["--do-sample", "--seed", str(seed)] if self.sampled else [])


def read_metrics(output_dir: Path) -> dict:
    path = output_dir / "report" / "metrics.json"
    if not path.is_file():
        raise UserError(f"{output_dir}: no finished run here ({path} is missing); run `toyllm demo` first")
    return json.loads(path.read_text())


def run_table(metrics: dict, output_dir: Path) -> StageTable:
    """The stage table the run was made with: the one whose chat models are the stages metrics.json evaluated."""
    for table in (TABLE, REAL_MODEL_TABLE):
        if list(table.policies) == list(metrics["stages"]):
            return table
    raise UserError(f"{output_dir}: not a `toyllm demo` run (its stages are {', '.join(metrics['stages'])})")


def run_columns(output_dir: Path, table: StageTable, rounds: int) -> list[Column]:
    """Every chat-model checkpoint of the run, in stage order, with every feedback round of a repeated stage."""
    columns = []
    for stage in table.policies:
        asked = table[stage].asked
        names = [round_name(stage, n) for n in range(1, rounds + 1)] if stage in table.feedback_round else [stage]
        columns += [Column(name, output_dir / name, "text" in asked, "sampled" in asked) for name in names]
    return [column for column in columns if column.path.is_dir()]


@dataclass
class RunFolders:
    """What a page over a run reads: its metrics, its chat-model columns, the last judge and the story's folder."""

    output_dir: Path
    metrics: dict
    table: StageTable
    columns: list[Column]
    judge_dir: Path | None
    data: DataFolder | None

    @classmethod
    def read(cls, output_dir: str | Path, data_dir: str | Path | None = None) -> RunFolders:
        output_dir = Path(output_dir)
        metrics = read_metrics(output_dir)
        table = run_table(metrics, output_dir)
        rounds = max(1, len(metrics.get("rounds") or []))
        judge_dir = output_dir / round_name(table.round_judge, rounds) if table.round_judge else None
        data_dir = data_dir or metrics.get("data_dir")
        data = DataFolder(data_dir) if data_dir and DataFolder(data_dir).is_complete() else None
        return cls(output_dir, metrics, table, run_columns(output_dir, table, rounds),
                   judge_dir if judge_dir and judge_dir.is_dir() else None, data)  # fmt: skip


class RunApp:
    """A finished run's models, loaded once, asked question by question."""

    def __init__(self, output_dir: str | Path, data_dir: str | Path | None = None):
        run = RunFolders.read(output_dir, data_dir)
        self.output_dir, self.metrics, self.table, self.columns = run.output_dir, run.metrics, run.table, run.columns
        self.models = {c.name: load_chat_model(c.path, as_text=c.as_text) for c in self.columns}
        self.judge = Judge(run.judge_dir) if run.judge_dir else None
        self.sentences = run.data.sentences() if run.data else None

    def answers(self, column: Column, question: str, sample: bool = False, samples: int = SAMPLES,
                temperature: float = 1.0, seed: int = 0) -> list[str]:  # fmt: skip
        """The column's answer (or `samples` sampled answers, seeds seed, seed+1, ...), each what
        `toyllm generate --model PATH <column.generate_flags(seed)>` prints."""
        model, tokenizer = self.models[column.name]
        sampled = sample or column.sampled
        found = []
        for n in range(samples if sample else 1):
            if sampled:
                set_seed(seed + n)
            drawn = Sampling(CHAT_MAX_NEW_TOKENS, do_sample=sampled, temperature=temperature if sample else 1.0)
            found.append(answer(model, tokenizer, [{"role": "user", "content": question}], drawn, column.as_text))
        return found

    def verdicts(self, question: str, answers: list[str]) -> list[str]:
        """For each answer: the judge's score and whether it is a sentence of the story."""
        scores = self.judge.scores([question] * len(answers), answers) if self.judge else [None] * len(answers)
        lines = []
        for text, score in zip(answers, scores):
            parts = [f"judge {score:+.2f}"] if score is not None else []
            if self.sentences is not None:
                parts.append("a sentence of the story" if normalise(text) in self.sentences else "not in the story")
            lines.append(", ".join(parts))
        return lines

    def ask(self, question: str, sample: bool = False, samples: int = SAMPLES, temperature: float = 1.0,
            seed: int = 0) -> dict[str, tuple[list[str], list[str]]]:  # fmt: skip
        """Every column's answers to the question, with their verdicts (the judge scores them all in one batch)."""
        question = question.strip()
        if not question:
            return {c.name: ([], []) for c in self.columns}
        found = {c.name: self.answers(c, question, sample, samples, temperature, seed) for c in self.columns}
        verdicts = iter(self.verdicts(question, [text for texts in found.values() for text in texts]))
        return {name: (texts, [next(verdicts) for _ in texts]) for name, texts in found.items()}

    def report_text(self) -> str:
        """report.md without its image lines (the plots are shown as images beside it)."""
        path = self.output_dir / "report" / "report.md"
        text = path.read_text() if path.is_file() else ""
        return re.sub(r"^!\[.*$\n?", "", text, flags=re.M)

    def plots(self) -> list[Path]:
        return sorted((self.output_dir / "report").glob("*.png"))


def build_app(output_dir: str | Path, data_dir: str | Path | None = None):
    """The Gradio page over a run folder."""
    try:
        import gradio as gr
    except ImportError:
        raise UserError('toyllm app needs Gradio: pip install "toyllm[app]"') from None
    run = RunApp(output_dir, data_dir)
    examples = [row["prompt"] for row in run.metrics.get("responses", [])][:8]
    with gr.Blocks(title=f"toyllm: {run.output_dir}") as page:
        gr.Markdown(f"## Every stage, side by side\nThe run in `{run.output_dir}`. Each column is a checkpoint, "
                    "asked as `toyllm generate` asks it (the flags are under its name); the score is the last "
                    "judge's.")  # fmt: skip
        with gr.Row():
            question = gr.Textbox(label="Question", placeholder=examples[0] if examples else "", elem_id="question",
                                  scale=4)  # fmt: skip
            ask = gr.Button("Ask", variant="primary", elem_id="ask", scale=1)
        with gr.Row():
            sample = gr.Checkbox(label="Sample (what PPO could reach)", value=False, elem_id="sample")
            samples = gr.Slider(1, MAX_SAMPLES, value=SAMPLES, step=1, label="Samples per stage")
            temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.1, label="Temperature")
            seed = gr.Number(value=0, precision=0, label="Seed")
        if examples:
            gr.Examples(examples, inputs=question)
        outputs = _answer_columns(gr, run)
        with gr.Accordion("The run's tables and plots", open=False):
            gr.Markdown(run.report_text())
            for plot in run.plots():
                gr.Image(str(plot), label=plot.stem, show_label=True, interactive=False)

        def on_ask(text, sample_on, sample_count, temp, seed_value):
            result = run.ask(text, sample_on, int(sample_count), float(temp), int(seed_value or 0))
            values = []
            for column in run.columns:
                found, verdicts = result[column.name]
                values.append("\n".join(found))
                values.append("  \n".join(verdicts))
            return values

        inputs = [question, sample, samples, temperature, seed]
        ask.click(on_ask, inputs, outputs)
        question.submit(on_ask, inputs, outputs)
    page.run = run
    return page


def _answer_columns(gr, run: RunApp) -> list:
    """A column per stage: its name and `toyllm generate` flags, its answers, and the judge's verdicts."""
    outputs = []
    with gr.Row(equal_height=True):
        for column in run.columns:
            with gr.Column(min_width=160):
                gr.Markdown(f"**{column.name}**  \n`{' '.join(column.generate_flags(0)) or 'greedy'}`")
                outputs.append(gr.Textbox(label="answer", lines=3, interactive=False, elem_id=f"answer-{column.name}"))
                outputs.append(gr.Markdown(elem_id=f"verdict-{column.name}"))
    return outputs


SPACE_APP = """# toyllm app as a Hugging Face Space: every stage of the run in run/ answering side by side.
from pathlib import Path

from toyllm.app import build_app

build_app("run", data_dir="data" if Path("data").is_dir() else None).launch()
"""
SPACE_CARD = """---
title: toyllm, every stage side by side
emoji: 🐇
colorFrom: indigo
colorTo: pink
sdk: gradio
sdk_version: {gradio}
app_file: app.py
license: apache-2.0
---

Ask one question of every stage of a `toyllm demo` run: {columns}. Made with `toyllm app --space-dir`.
"""


def stage_space(output_dir: str | Path, space_dir: str | Path, data_dir: str | Path | None = None) -> Path:
    """A folder that is a Gradio Space serving this run: app.py, README.md (the Space's settings), requirements.txt,
    the toyllm package, `run/` (each column's checkpoint, the last judge and report/, without what `toyllm push`
    keeps local) and `data/` (the story). A LoRA stage goes up merged: its base is a path on this machine."""
    import gradio

    run, space_dir = RunFolders.read(output_dir, data_dir), Path(space_dir)
    if space_dir.exists() and any(space_dir.iterdir()):
        raise UserError(f"{space_dir}: not empty; give --space-dir a new folder")
    package = space_dir / "toyllm"
    shutil.copytree(Path(toyllm.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for source, name in ((RECIPES_DIR, "recipes"), (TOY_CONFIG_DIR, "toy_config"), (ALICE_DIR, "alice")):
        if not (package / name).is_dir():  # a checkout keeps them beside src/, as the wheel's package-dir maps them
            shutil.copytree(source, package / name, ignore=_not_shipped)
    folders = [c.path for c in run.columns] + ([run.judge_dir] if run.judge_dir else [])
    for folder in folders:
        if (folder / "adapter_config.json").is_file():
            merge_adapter(folder, space_dir / "run" / folder.name)
        else:
            shutil.copytree(folder, space_dir / "run" / folder.name, ignore=_local_only)
    shutil.copytree(run.output_dir / "report", space_dir / "run" / "report")
    if run.data:
        (space_dir / "data").mkdir()
        for path in run.data.files:
            shutil.copyfile(path, space_dir / "data" / path.name)
    requirements = [r for r in importlib.metadata.requires("toyllm") or [] if "extra ==" not in r]
    # toyllm accepts a range of TRL versions; the Space runs the one this run was made with
    requirements = [f"trl=={importlib.metadata.version('trl')}" if re.match(r"trl\b", r) else r for r in requirements]
    pinned = [*requirements, f"gradio=={gradio.__version__}"]
    (space_dir / "requirements.txt").write_text("\n".join(pinned) + "\n")
    (space_dir / "app.py").write_text(SPACE_APP)
    names = ", ".join(c.name for c in run.columns)
    (space_dir / "README.md").write_text(SPACE_CARD.format(gradio=gradio.__version__, columns=names))
    return space_dir


def _not_shipped(folder: str, names: list[str]) -> list[str]:
    """shutil.copytree's ignore for the shipped folders: bytecode, and data folders a user built inside data/."""
    top = Path(folder).name in ("data", "alice")
    return [n for n in names if n == "__pycache__" or n.endswith(".pyc") or (top and (Path(folder) / n).is_dir())]


def _local_only(folder: str, names: list[str]) -> list[str]:
    """shutil.copytree's ignore: what `toyllm push` leaves out of an upload (hub.LOCAL_ONLY)."""
    return [name for name in names if any(fnmatch.fnmatch(name, pattern) for pattern in LOCAL_ONLY)]
