"""The stage table is the one list of stages: the YAMLs, the demo, the Slurm script and the recipes agree with it."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from conftest import REPO, needs_ppo

import toyllm.demo
from toyllm.args import parse_recipe_args
from toyllm.card import Made, write_model_card
from toyllm.data import DATA_FILES
from toyllm.demo import Step, demo_steps, last_checkpoints, real_model_chain, stage_overrides
from toyllm.report import write_report
from toyllm.stages import RECIPES, STAGE, STAGES, TABLE, TRAINED, Stage, StageTable, installed, not_installed
from toyllm.versions import missing_module_reason

TOY = REPO / "recipes" / "toy"


@pytest.mark.parametrize("stage", TRAINED)
def test_each_toy_yaml_starts_from_the_stage_the_table_names(stage):
    row = STAGE[stage]
    config = yaml.safe_load((TOY / f"{row.recipe}.yaml").read_text())
    assert config["model_name_or_path"] == f"outputs/toy/{row.starts_from}"
    assert config["output_dir"] == f"outputs/toy/{stage}"
    assert config["dataset_name"] == f"data/{DATA_FILES[row.data]}"
    assert config.get("reward_model_path") == (f"outputs/toy/{row.judge}" if row.judge else None)


@pytest.mark.parametrize("stage", TRAINED)
def test_every_shipped_yaml_parses_with_its_recipe(stage, tmp_path):
    """Parsed as users launch them, on a fresh clone: the folders the YAMLs point at need only exist."""
    row = STAGE[stage]
    recipe = importlib.import_module(f"toyllm.recipes.{row.recipe}")
    paths = ["--model_name_or_path", str(tmp_path / row.starts_from), "--output_dir", str(tmp_path / stage)]
    (tmp_path / row.starts_from).mkdir()
    if row.judge:
        (tmp_path / row.judge).mkdir()
        paths += ["--reward_model_path", str(tmp_path / row.judge)]
    script_args, training_args, _ = parse_recipe_args(
        recipe.ARGUMENT_TYPES, ["--config", str(TOY / f"{stage}.yaml"), *paths]
    )
    assert training_args.output_dir == str(tmp_path / stage)
    assert script_args.dataset_name == f"data/{DATA_FILES[row.data]}"


def test_the_demo_chains_stages_as_the_table_says(tmp_path):
    for stage in TRAINED:
        args = stage_overrides(stage, REPO / "data", tmp_path, seed=0)
        model = args[args.index("--model_name_or_path") + 1]
        assert model == str(tmp_path / STAGE[stage].starts_from)
        assert args[args.index("--dataset_name") + 1].endswith(DATA_FILES[STAGE[stage].data])


@needs_ppo
def test_a_new_row_is_all_it_takes_for_the_demo_the_tables_and_the_cards(tmp_path):
    """A stage added to a table (here a second preference stage on DPO's recipe, and a second judge) reaches the
    demo's steps and overrides, the tables' columns, the report and the cards, with no edit anywhere else."""
    table = StageTable(
        STAGES
        + (
            Stage("kto", "dpo", "preference", "sft", "causal-lm", about="A new preference stage."),
            Stage("judge2", "reward", "preference", "sft", "scorer", about="A second judge."),
        )
    )
    steps = demo_steps(2, table)
    names = [step.name for step in steps]
    assert names == ["random", "pretrain", "sft", "reward", "ppo", "rloo", "label-1", "reward-2", "ppo-2", "rloo-2",
                     "label-2", "dpo", "kto", "judge2"]  # fmt: skip
    assert steps[-2] == Step("train", "kto") and steps[0] == Step("build", "random")
    args = stage_overrides(Step("train", "kto"), REPO / "data", tmp_path, seed=0, table=table)
    assert args[args.index("--dataset_name") + 1] == str(REPO / "data" / DATA_FILES["preference"])
    assert args[args.index("--model_name_or_path") + 1] == str(tmp_path / "sft")
    assert "kto" in table.policies and "judge2" not in table.policies  # a column of the tables, or none
    assert last_checkpoints(tmp_path, 2, table)["kto"] == tmp_path / "kto"
    for name, tag in (("kto", "text-generation"), ("judge2", "text-classification")):
        write_model_card(tmp_path / name, Made(name, "Trainer"), name, table)
        card = (tmp_path / name / "README.md").read_text()
        assert table[name].about in card and f"pipeline_tag: {tag}" in card
    report = write_report(tmp_path, {}, {"kto": tmp_path / "kto"}, table=table).read_text()
    assert "- **kto**: A new preference stage." in report


@needs_ppo
def test_the_feedback_round_is_read_from_the_rows():
    """Which stages a round repeats is a field: a table without it runs no label steps."""
    table = StageTable(tuple(replace(row, feedback_round=False) for row in STAGES))
    assert table.round_policy is None and all(step.action != "label" for step in demo_steps(3, table))
    assert (TABLE.round_policy, TABLE.round_judge) == ("ppo", "reward")
    assert TABLE.feedback_round == ("reward", "ppo", "rloo")


@needs_ppo
def test_rloo_meets_the_feedback_rounds_beside_ppo_against_each_rounds_judge(tmp_path):
    """RLOO is retrained each round from the SFT model against that round's judge, as PPO is; the labeller reads
    the round's first policy (PPO), and without PPO (a TRL that has none) RLOO's answers are the ones labelled."""
    steps = [step.name for step in demo_steps(2, TABLE)]
    assert steps[steps.index("reward-2") :] == ["reward-2", "ppo-2", "rloo-2", "label-2", "dpo"]
    args = stage_overrides(Step("train", "rloo", 2), REPO / "data", tmp_path, seed=0)
    assert args[args.index("--reward_model_path") + 1] == str(tmp_path / "reward-2")
    assert args[args.index("--model_name_or_path") + 1] == str(tmp_path / "sft")
    without_ppo = StageTable(tuple(row for row in STAGES if row.name != "ppo"))
    assert (without_ppo.round_policy, without_ppo.round_judge) == ("rloo", "reward")
    assert "label-1" in [step.name for step in demo_steps(2, without_ppo)]


@needs_ppo
def test_a_real_model_demo_runs_one_rl_round_by_default_and_the_toy_two():
    """A real model's second round costs minutes on a CPU for little (benchmarks/RESULTS.md)."""
    real = real_model_chain("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert [step.name for step in demo_steps(real.feedback_rounds, real.table)] == [
        "instruct", "sft", "reward", "ppo", "rloo", "label-1", "dpo"]  # fmt: skip
    toy = toyllm.demo.TOY
    assert "ppo-2" in [step.name for step in demo_steps(toy.feedback_rounds, toy.table)]


def test_a_row_whose_module_is_missing_leaves_the_table_and_says_why():
    """A stage whose recipe needs a module the installed libraries lack (PPO on TRL >= 1.13) is left out of the
    table the demo runs, and the demo names it with the reason in one line."""
    rows = STAGES + (Stage("xpo", "dpo", "preference", "sft", "causal-lm", needs="no_such_trl_module", about="."),)
    assert [row.name for row in not_installed(rows)] == [row.name for row in not_installed(STAGES)] + ["xpo"]
    assert "xpo" not in StageTable(installed(rows)) and "rloo" in StageTable(installed(rows))
    assert missing_module_reason("no_such_trl_module") == "no_such_trl_module cannot be imported"


def test_table_is_a_chain_from_random_and_every_recipe_exists():
    names = [row.name for row in STAGES]
    for position, row in enumerate(STAGES):
        assert row.starts_from is None or names.index(row.starts_from) < position, row.name
        assert row.judge is None or STAGE[row.judge].saves == "scorer"
        assert row.about
    assert all((REPO / "recipes" / f"{recipe}.py").is_file() for recipe in RECIPES)


def test_slurm_script_reads_its_stage_names_from_the_table():
    printed = subprocess.run([sys.executable, "-m", "toyllm.stages"], capture_output=True, text=True, check=True)
    assert printed.stdout.split() == list(RECIPES)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # the python with toyllm
    result = subprocess.run(["bash", str(REPO / "recipes/launch.slurm"), "nonsense", "x.yaml"], capture_output=True,
                            text=True, cwd=REPO, env=env)  # fmt: skip
    assert result.returncode == 2
    assert f"choose one of {' '.join(RECIPES)}" in result.stderr


@pytest.mark.parametrize(
    "stage, rows, steps", [("dpo", 303, -1), ("dpo", 31, 150), ("reward", 30, 300), ("sft", 8, 500)]
)
def test_small_data_gets_at_least_min_steps(stage, rows, steps, tmp_path):
    """An epoch schedule tuned on Alice's 303 pairs gives a 31-pair story 16 DPO steps: min_steps stretches it."""
    from toyllm.args import fit_schedule

    recipe = importlib.import_module(f"toyllm.recipes.{stage}")
    (tmp_path / "model").mkdir()
    args = ["--config", str(TOY / f"{stage}.yaml"), "--model_name_or_path", str(tmp_path / "model")]
    script_args, training_args, _ = parse_recipe_args(recipe.ARGUMENT_TYPES, args)
    fit_schedule(script_args, training_args, rows)
    assert training_args.max_steps == steps
    script_args, training_args, _ = parse_recipe_args(recipe.ARGUMENT_TYPES, [*args, "--max_steps", "7"])
    fit_schedule(script_args, training_args, rows)
    assert training_args.max_steps == 7  # an explicit max_steps wins


@pytest.mark.parametrize(
    "recipe_file, flashcards, steps",
    [("sft.yaml", 13, 130), ("sft.yaml", 8, 96), ("sft.yaml", 40, 400),
     ("sft_full.yaml", 13, 48), ("sft_full.yaml", 8, 32), ("sft_full.yaml", 40, 150)],
)  # fmt: skip
def test_real_model_sft_trains_its_steps_per_flashcard_rule(recipe_file, flashcards, steps, tmp_path):
    """The SmolLM2 SFT YAMLs size their schedule by the flashcards, the replay's 40% of the rows counted: the LoRA
    recipe's budget shows each ~48 times, at least 96 steps (it stops once they are learned); the full recipe's
    schedule shows each ~18 times, at least 32 steps."""
    from toyllm.args import steps_for_passes

    recipe = importlib.import_module("toyllm.recipes.sft")
    (tmp_path / "model").mkdir()
    config = REPO / "recipes" / "smollm2-135m" / recipe_file
    args = ["--config", str(config), "--model_name_or_path", str(tmp_path / "model")]
    script_args, training_args, _ = parse_recipe_args(recipe.ARGUMENT_TYPES, args)
    share = 1 - script_args.replay_fraction
    steps_for_passes(script_args.flashcard_passes, script_args.min_steps, training_args, flashcards, share)
    assert training_args.max_steps == steps
    script_args, training_args, _ = parse_recipe_args(recipe.ARGUMENT_TYPES, [*args, "--max_steps", "7"])
    steps_for_passes(script_args.flashcard_passes, script_args.min_steps, training_args, flashcards, share)
    assert training_args.max_steps == 7  # an explicit max_steps wins


def test_packed_pretraining_reads_each_sentence_at_many_positions():
    """Packing puts a sentence at a new offset in each shuffled copy: the completer is not tied to positions 1-10."""
    from datasets import Dataset

    from toyllm.data import pack_text

    sentences = [[1, 10 + n, 20 + n, 2] for n in range(9)]  # [BOS] two words [EOS]
    packed = pack_text(Dataset.from_dict({"input_ids": sentences}), block_size=8, copies=5, seed=0)
    rows = packed["input_ids"]
    assert all(len(row) == 8 for row in rows[:-1]) and sum(map(len, rows)) == 9 * 4 * 5
    offsets = {row.index(14) for row in rows if 14 in row}
    assert len(offsets) > 1


def test_pretraining_mix_pairs_no_question_with_a_sentence():
    """Each story sentence answers cues drawn from its own words (or, with cues=0, an empty user turn); the
    flashcards keep their questions and answers; no question is ever paired with a sentence."""
    from datasets import Dataset

    from toyllm.data import mix_pretraining_text

    cards = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": f"q{n}"}], "completion": [{"role": "assistant", "content": f"a{n}"}]}
         for n in range(3)]
    )  # fmt: skip
    texts = Dataset.from_list([{"text": f"sentence number {n}"} for n in range(7)])
    mixed = [row["prompt"] + row["completion"] for row in mix_pretraining_text(cards, texts, 0.5, seed=0, cues=4)]
    cards_kept = {(m[0]["content"], m[1]["content"]) for m in mixed if m[1]["content"].startswith("a")}
    cued = [(m[0]["content"], m[1]["content"]) for m in mixed if m[1]["content"].startswith("sentence")]
    assert cards_kept == {(f"q{n}", f"a{n}") for n in range(3)}
    assert {sentence for _, sentence in cued} == {t["text"] for t in texts}
    assert all(cue in sentence.split() for cue, sentence in cued)
    assert len({cue for cue, _ in cued}) > 2  # the cues are drawn, not always the first word
    plain = [row["prompt"] + row["completion"] for row in mix_pretraining_text(cards, texts, 0.5, seed=0, cues=0)]
    assert {m[1]["content"] for m in plain if m[0]["content"] == ""} == {t["text"] for t in texts}
    assert {m[0]["content"] for m in plain if m[1]["content"].startswith("a")} == {"q0", "q1", "q2"}


def test_dpo_replay_prefers_the_models_own_general_answer_over_the_storys_answers():
    """Each general prompt's answer (as the model wrote it) over `per_prompt` answers of the story, drawn; the file's
    pairs stay as they are."""
    from datasets import Dataset

    from toyllm.replay import replay_pairs

    def turn(role, text):
        return [{"role": role, "content": text}]

    pairs = Dataset.from_list([{"prompt": turn("user", f"q{n}"), "chosen": turn("assistant", f"story {n}"),
                                "rejected": turn("assistant", "no")} for n in range(5)])  # fmt: skip
    answers = [(turn("user", "what is 2 + 2?"), "The answer is 4."), (turn("user", "capital of france?"), "Paris.")]
    mixed = replay_pairs(pairs, answers, per_prompt=2, seed=0).to_list()
    assert mixed[:5] == pairs.to_list() and len(mixed) == 5 + 2 * 2
    for row in mixed[5:]:
        assert (row["prompt"][0]["content"], row["chosen"][0]["content"]) in [(q[0]["content"], a) for q, a in answers]
        assert row["rejected"][0]["content"] in {f"story {n}" for n in range(5)}
    assert len({row["rejected"][0]["content"] for row in mixed[5:]}) > 1  # drawn, not always the first
    assert replay_pairs(pairs, [], per_prompt=2, seed=0) is pairs


def test_the_judge_also_learns_that_another_questions_answer_is_wrong():
    """Each prompt's chosen answer beats the other prompts' chosen answers; pairs the file holds are not repeated,
    a prompt's own chosen answers are never rejected, and a cap draws the other prompts."""
    from datasets import Dataset

    from toyllm.data import add_other_answers_as_rejected

    def pair(question, chosen, rejected):
        answer = [{"role": "assistant", "content": chosen}]
        return {"prompt": [{"role": "user", "content": question}], "chosen": answer,
                "rejected": [{"role": "assistant", "content": rejected}]}  # fmt: skip

    pairs = Dataset.from_list([
        pair("q1", "a1", "x"), pair("q1", "a1", "a2"),  # q1 already rejects q2's answer
        pair("q2", "a2", "y"), pair("q3", "A1", "z"),  # q3's answer is q1's, differently cased
        pair("q4", "a4", "w"),
    ])  # fmt: skip

    def as_triples(dataset):
        return [(r["prompt"][0]["content"], r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in dataset]

    added = as_triples(add_other_answers_as_rejected(pairs, per_prompt=8, seed=0))[len(pairs) :]
    assert sorted(added) == sorted([
        ("q1", "a1", "a4"),
        ("q2", "a2", "a1"), ("q2", "a2", "A1"), ("q2", "a2", "a4"),
        ("q3", "A1", "a2"), ("q3", "A1", "a4"),
        ("q4", "a4", "a1"), ("q4", "a4", "a2"), ("q4", "a4", "A1"),
    ])  # fmt: skip
    capped = as_triples(add_other_answers_as_rejected(pairs, per_prompt=1, seed=0))[len(pairs) :]
    assert len(capped) <= 4 and {q for q, _, _ in capped} <= {"q1", "q2", "q3", "q4"}
    assert capped == as_triples(add_other_answers_as_rejected(pairs, per_prompt=1, seed=0))[len(pairs) :]  # seeded
    assert add_other_answers_as_rejected(pairs, per_prompt=0, seed=0) is pairs
