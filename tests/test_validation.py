"""Bad input fails before training, with one line naming the file, the line and the field; nothing is overwritten."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ALICE, REPO
from datasets import Dataset
from toyllm.recipes import ppo, sft

from toyllm.args import parse_recipe_args
from toyllm.config_checks import check_config_file
from toyllm.data import DataFolder, load_data
from toyllm.data_checks import Fit, read_rows
from toyllm.errors import UserError
from toyllm.ppo import check_ppo_setup, fill_rollout_batch
from toyllm.toy import train_word_level_tokenizer


def msgs(*turns: tuple[str, str]) -> list[dict]:
    return [{"role": role, "content": content} for role, content in turns]


def line(row) -> str:
    return json.dumps(row) + "\n"


# (case, file, content, expected message after "<folder>/")
BAD_DATA = [
    ("invalid JSON", "pretrain.jsonl", '{"text": "alice"\n',
     "pretrain.jsonl:1: invalid JSON: Expecting ',' delimiter (column 17)"),
    ("misspelt key", "pretrain.jsonl", line({"txt": "alice"}),
     "pretrain.jsonl:1: text: missing key (found 'txt': misspelt?)"),
    ("missing key", "eval.jsonl", line({"prompt": "who was alice", "reference": "alice"}),
     "eval.jsonl:1: split: missing key (keys present: prompt, reference)"),
    ("wrong type", "pretrain.jsonl", line({"text": 5}), "pretrain.jsonl:1: text: expected a string, got int"),
    ("wrong type in a list", "eval.jsonl", line({"prompt": "a", "reference": ["b"], "split": "trained"}),
     "eval.jsonl:1: reference: expected a string, got list"),
    ("alternatives not a list", "eval.jsonl", line({"prompt": "a", "reference": "b", "split": "retention",
                                                    "alternatives": "c"}),
     "eval.jsonl:1: alternatives: expected a list of strings, got str"),
    ("empty string", "pretrain.jsonl", line({"text": "  "}), "pretrain.jsonl:1: text: empty string"),
    ("empty content", "sft.jsonl", line({"messages": msgs(("user", "who was alice"), ("assistant", ""))}),
     "sft.jsonl:1: messages[1].content: empty string"),
    ("roles out of order", "sft.jsonl", line({"messages": msgs(("user", "a"), ("user", "b"), ("assistant", "c"))}),
     "sft.jsonl:1: messages[1].role: two user messages in a row: user and assistant take turns"),
    ("system not first", "sft.jsonl", line({"messages": msgs(("user", "a"), ("system", "b"), ("assistant", "c"))}),
     "sft.jsonl:1: messages[1].role: a system message may only come first"),
    ("answer first", "sft.jsonl", line({"messages": msgs(("assistant", "a"))}),
     "sft.jsonl:1: messages: must start with a user message, not assistant"),
    ("no answer", "sft.jsonl", line({"messages": msgs(("user", "a"))}),
     "sft.jsonl:1: messages: must end with an assistant message, not user"),
    ("unknown role", "sft.jsonl", line({"messages": msgs(("user", "a"), ("bot", "c"))}),
     "sft.jsonl:1: messages[1].role: unknown role 'bot' (expected one of system, user, assistant)"),
    ("misspelt preference key", "preference.jsonl",
     line({"prompt": msgs(("user", "a")), "chosen": msgs(("assistant", "b")), "rejectd": msgs(("assistant", "c"))}),
     "preference.jsonl:1: rejected: missing key (found 'rejectd': misspelt?)"),
    ("mixed prompt/completion styles", "sft.jsonl", line({"prompt": "a", "completion": msgs(("assistant", "b"))}),
     "sft.jsonl:1: completion: prompt and completion must both be strings or both message lists"),
    ("prompt ending with the answer", "prompts.jsonl", line({"prompt": msgs(("user", "a"), ("assistant", "b"))}),
     "prompts.jsonl:1: prompt: must end with a user message, not assistant"),
    ("not an object", "prompts.jsonl", '["who was alice"]\n', "prompts.jsonl:1: expected a JSON object, got list"),
    ("empty file", "sft.jsonl", "", "sft.jsonl: empty file: no rows"),
    ("blank lines only", "eval.jsonl", "\n\n", "eval.jsonl: empty file: no rows"),
]  # fmt: skip


def data_folder_with(tmp_path: Path, file_name: str, content: str) -> Path:
    folder = tmp_path / "data"
    shutil.copytree(ALICE, folder)
    (folder / file_name).write_text(content)
    return folder


@pytest.mark.parametrize("case,file_name,content,expected", BAD_DATA, ids=[c[0] for c in BAD_DATA])
def test_bad_data_file_gives_one_line_naming_file_line_and_field(tmp_path, case, file_name, content, expected):
    folder = data_folder_with(tmp_path, file_name, content)
    with pytest.raises(UserError) as error:
        DataFolder(folder).check()
    assert error.value.problems == [f"{folder}/{expected}"]


def test_a_bad_row_is_reported_with_its_own_line_number(tmp_path):
    good = (ALICE / "pretrain.jsonl").read_text().splitlines()
    folder = data_folder_with(tmp_path, "pretrain.jsonl", "\n".join(good[:3] + ['{"text": 1}'] + good[3:]) + "\n")
    with pytest.raises(UserError) as error:
        DataFolder(folder).check()
    assert error.value.problems == [f"{folder}/pretrain.jsonl:4: text: expected a string, got int"]


def test_every_problem_of_every_file_is_listed_at_once(tmp_path):
    folder = data_folder_with(tmp_path, "pretrain.jsonl", '{"text": 1}\n{"text": ""}\n')
    (folder / "eval.jsonl").write_text('{"prompt": "a"}\n')
    with pytest.raises(UserError) as error:
        DataFolder(folder).check()
    assert len(error.value.problems) == 4  # two pretrain rows, two missing eval keys


def test_missing_file_and_incomplete_data_folder(tmp_path):
    with pytest.raises(UserError, match=r"nowhere.jsonl: file not found"):
        read_rows(tmp_path / "nowhere.jsonl", "flashcards")
    folder = tmp_path / "data"
    shutil.copytree(ALICE, folder)
    (folder / "prompts.jsonl").unlink()
    with pytest.raises(UserError) as error:
        DataFolder(folder).check()
    assert error.value.problems == [
        f"{folder}: missing prompts.jsonl (a data folder holds pretrain.jsonl, sft.jsonl, preference.jsonl, "
        "prompts.jsonl, eval.jsonl)"
    ]
    with pytest.raises(UserError, match="data folder not found"):
        DataFolder(tmp_path / "no-such-folder").check()


@pytest.fixture(scope="module")
def toy_tokenizer():
    return train_word_level_tokenizer(ALICE, REPO / "toy_config")


def test_row_longer_than_the_context_is_reported_with_its_length(tmp_path, toy_tokenizer):
    question = " ".join(["alice"] * 70)
    path = tmp_path / "eval.jsonl"
    path.write_text(line({"prompt": question, "reference": "alice", "split": "trained"}))
    with pytest.raises(UserError) as error:
        load_data(path, "eval", Fit(toy_tokenizer, 64))
    assert error.value.problems == [
        f"{path}:1: row is 73 tokens, longer than the model's context (64); shorten it or set truncate_long_rows: true"
    ]
    assert len(load_data(path, "eval", Fit(toy_tokenizer, 64, truncate=True))) == 1


def test_prompt_plus_answer_must_fit_for_ppo(tmp_path, toy_tokenizer):
    path = tmp_path / "prompts.jsonl"
    path.write_text(line({"prompt": msgs(("user", " ".join(["alice"] * 50)))}))
    with pytest.raises(
        UserError, match=r"row is 53 tokens, longer than the model's context \(64 - 12 for the answer\)"
    ):
        load_data(path, "prompts", Fit(toy_tokenizer, 64, reserve=12))


def test_words_the_vocabulary_lacks_would_silently_become_unk(tmp_path, toy_tokenizer):
    path = tmp_path / "sft.jsonl"
    path.write_text(line({"messages": msgs(("user", "who did alice meet"), ("assistant", "alice met a spaceship"))}))
    with pytest.raises(UserError) as error:
        load_data(path, "flashcards", Fit(toy_tokenizer, 64))
    assert error.value.problems == [
        f"{path}:1: messages[0].content: words not in the vocabulary: meet (they would become [UNK]; rebuild the "
        "vocabulary with this file)",
        f"{path}:1: messages[1].content: words not in the vocabulary: met, spaceship (they would become [UNK]; "
        "rebuild the vocabulary with this file)",
    ]


def test_duplicate_and_contradictory_rows_are_warnings(tmp_path, caplog):
    path = tmp_path / "preference.jsonl"
    row = {"prompt": msgs(("user", "who was alice")), "chosen": msgs(("assistant", "alice was very curious"))}
    rows = [{**row, "rejected": msgs(("assistant", "the queen"))}] * 2
    rows.append({"prompt": row["prompt"], "chosen": msgs(("assistant", "the queen")), "rejected": row["chosen"]})
    path.write_text("".join(line(r) for r in rows))
    with caplog.at_level("WARNING", logger="toyllm"):
        assert len(read_rows(path, "preference")) == 3
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}:2: duplicate of line 1",
        f"{path}:3: contradicts line 1 (chosen and rejected swapped)",
    ]
    sft_path = tmp_path / "sft.jsonl"
    sft_path.write_text(
        line({"messages": msgs(("user", "who was alice"), ("assistant", "alice was very curious"))})
        + line({"messages": msgs(("user", "who was alice"), ("assistant", "the queen"))})
    )
    caplog.clear()
    with caplog.at_level("WARNING", logger="toyllm"):
        read_rows(sft_path, "flashcards")
    assert [r.getMessage() for r in caplog.records] == [
        f"{sft_path}:2: same question as line 1 with a different answer"
    ]


# Config errors: one line naming the key, before any model is loaded.
def write_yaml(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "sft.yaml"
    path.write_text((REPO / "recipes/toy/sft.yaml").read_text() + extra)
    return path


def test_unknown_yaml_key_names_the_closest_known_one(tmp_path):
    path = write_yaml(tmp_path, "learning_rat: 0.1\n")
    n = len(path.read_text().splitlines())
    with pytest.raises(UserError) as error:
        check_config_file(path, sft.ARGUMENT_TYPES)
    assert error.value.problems == [f"{path}:{n}: unknown key 'learning_rat' (did you mean 'learning_rate'?)"]


def test_wrong_type_in_yaml(tmp_path):
    path = write_yaml(tmp_path, "num_train_epochs: many\npacking: maybe\n")
    n = len(path.read_text().splitlines())
    with pytest.raises(UserError) as error:
        check_config_file(path, sft.ARGUMENT_TYPES)
    assert error.value.problems == [
        f"{path}:{n - 1}: num_train_epochs: 'many' is not a valid float",
        f"{path}:{n}: packing: 'maybe' is not a valid bool",
    ]


def test_invalid_yaml_and_missing_config(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("seed: 0\nlearning_rate: [1\n")
    with pytest.raises(UserError, match=rf"{path}:\d+: invalid YAML"):
        check_config_file(path, sft.ARGUMENT_TYPES)
    with pytest.raises(UserError, match="nowhere.yaml: config file not found"):
        check_config_file(tmp_path / "nowhere.yaml", sft.ARGUMENT_TYPES)


def test_unknown_or_missing_tracking_backend(tmp_path, monkeypatch):
    """Caught while parsing, not when the Trainer is built after every model has loaded (with a traceback)."""
    path = write_yaml(tmp_path, "")
    path.write_text(path.read_text().replace("report_to: none", "report_to: tensorbord"))
    n = next(i for i, line in enumerate(path.read_text().splitlines(), start=1) if line.startswith("report_to:"))
    with pytest.raises(UserError) as error:
        parse_recipe_args(sft.ARGUMENT_TYPES, ["--config", str(path), "--output_dir", str(tmp_path / "out")])
    assert error.value.problems == [f"{path}:{n}: report_to: unknown tracking backend 'tensorbord' (did you mean "
                                    "'tensorboard'?)"]  # fmt: skip

    import transformers.integrations.integration_utils as integrations

    monkeypatch.setattr(integrations, "get_available_reporting_integrations", lambda: [])  # nothing installed
    args = ["--config", str(REPO / "recipes/toy/sft.yaml"), "--report_to", "trackio"]
    with pytest.raises(UserError, match=r"^--report_to: trackio is not installed \(pip install trackio"):
        parse_recipe_args(sft.ARGUMENT_TYPES, [*args, "--output_dir", str(tmp_path / "out")])


def test_missing_model_path(tmp_path):
    args = ["--config", str(REPO / "recipes/toy/sft.yaml"), "--model_name_or_path", str(tmp_path / "nothing/sft")]
    with pytest.raises(UserError) as error:
        parse_recipe_args(sft.ARGUMENT_TYPES, args)
    assert error.value.problems == [
        f"model_name_or_path: {tmp_path}/nothing/sft does not exist (train the stage that writes it first, or fix "
        "the path)"
    ]


def ppo_args(demo_dir: Path, *extra: str):
    return parse_recipe_args(
        ppo.ARGUMENT_TYPES,
        ["--config", str(REPO / "recipes/toy/ppo.yaml"), "--model_name_or_path", str(demo_dir / "sft"),
         "--reward_model_path", str(demo_dir / "reward"), *extra],
    )  # fmt: skip


@pytest.mark.parametrize(
    "recipe_name, extra, expected",
    [
        ("sft", ["--load_in_4bit", "true"], "load_in_4bit: bitsandbytes quantization needs a CUDA GPU"),
        ("sft", ["--dataset_streaming", "true"], "dataset_streaming: not supported"),
        ("reward", ["--use_peft", "true", "--lora_task_type", "CAUSAL_LM"], "lora_task_type: a reward model needs"),
        ("reward", ["--use_peft", "true", "--lora_modules_to_save", "c_attn"], "lora_modules_to_save: must include"),
    ],
)
def test_settings_the_recipes_cannot_honour_are_refused_when_parsed(tmp_path, recipe_name, extra, expected):
    """Accepted and silently ignored (or overwritten) before; now one line naming the key, before any loading."""
    import importlib

    recipe = importlib.import_module(f"toyllm.recipes.{recipe_name}")
    (tmp_path / "model").mkdir()
    args = ["--config", str(REPO / f"recipes/toy/{recipe_name}.yaml"), "--model_name_or_path", str(tmp_path / "model")]
    with pytest.raises(UserError, match=expected):
        parse_recipe_args(recipe.ARGUMENT_TYPES, [*args, *extra])


def test_reward_lora_defaults_to_a_trained_score_head(tmp_path):
    from toyllm.recipes import reward

    (tmp_path / "model").mkdir()
    args = ["--config", str(REPO / "recipes/toy/reward.yaml"), "--model_name_or_path", str(tmp_path / "model")]
    _, _, model_args = parse_recipe_args(reward.ARGUMENT_TYPES, [*args, "--use_peft", "true"])
    assert (model_args.lora_task_type, model_args.lora_modules_to_save) == ("SEQ_CLS", ["score"])


def test_jsonl_has_only_a_train_split_and_no_eval_split(demo_run, tmp_path):
    demo_dir, _ = demo_run
    args = ["--config", str(REPO / "recipes/toy/sft.yaml"), "--model_name_or_path", str(demo_dir / "pretrain"),
            "--output_dir", str(tmp_path / "out")]  # fmt: skip
    with pytest.raises(UserError, match="a JSONL file has one split, 'train', not 'validation'"):
        sft.main(*parse_recipe_args(sft.ARGUMENT_TYPES, [*args, "--dataset_train_split", "validation"]))
    with pytest.raises(UserError, match="eval_strategy: data/sft.jsonl is a JSONL file with no 'test' split"):
        sft.main(*parse_recipe_args(sft.ARGUMENT_TYPES, [*args, "--eval_strategy", "steps"]))


def test_ppo_judge_with_another_tokenizer_is_refused(demo_run, tmp_path):
    demo_dir, _ = demo_run
    other = tmp_path / "other"
    shutil.copytree(demo_dir / "reward", other)
    tokenizer = json.loads((other / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["zebra"] = len(vocab)
    (other / "tokenizer.json").write_text(json.dumps(tokenizer))
    _, training_args, _ = ppo_args(demo_dir, "--reward_model_path", str(other))
    with pytest.raises(UserError, match=r"^reward_model_path: .* has a different tokenizer from model_name_or_path"):
        check_ppo_setup(training_args, str(demo_dir / "sft"), world_size=1)


def test_ppo_batch_that_processes_or_mini_batches_cannot_split(demo_run):
    demo_dir, _ = demo_run
    _, training_args, _ = ppo_args(demo_dir, "--num_mini_batches", "3")
    with pytest.raises(UserError) as error:
        check_ppo_setup(training_args, str(demo_dir / "sft"), world_size=1)
    assert error.value.problems == [
        "num_mini_batches: 3 does not divide the rollout batch of 8 per process x 1 processes "
        "(per_device_train_batch_size x gradient_accumulation_steps)"
    ]


def test_fewer_prompts_than_a_rollout_batch_are_repeated_to_fill_it(demo_run, monkeypatch):
    """TRL's PPO draws whole rollout batches: 4 held-out questions and a batch of 8 would wait forever."""
    demo_dir, _ = demo_run
    _, training_args, _ = ppo_args(demo_dir)
    prompts = Dataset.from_dict({"input_ids": [[1], [2], [3], [4]]})
    assert fill_rollout_batch(prompts, training_args)["input_ids"] == [[1], [2], [3], [4]] * 2
    many = Dataset.from_dict({"input_ids": [[n] for n in range(15)]})
    assert fill_rollout_batch(many, training_args) is many
    monkeypatch.setenv("WORLD_SIZE", "2")  # two processes need a batch of 8 each
    assert len(fill_rollout_batch(prompts, training_args)) == 16


# As a user meets them: exit code 2, the message, no traceback.
def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True)


def test_demo_with_bad_data_exits_2_with_the_message_and_no_traceback(tmp_path):
    folder = data_folder_with(tmp_path, "sft.jsonl", line({"messages": msgs(("user", "a"), ("bot", "c"))}))
    result = run("-m", "toyllm.cli", "demo", "--data-dir", str(folder), "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {folder}/sft.jsonl:1: messages[1].role: unknown role 'bot' (expected one of system, user, assistant)"
    )
    assert not (tmp_path / "out" / "random").exists()  # checked before anything was trained


def test_recipe_with_unknown_key_exits_2_before_loading_anything(tmp_path):
    path = write_yaml(tmp_path, "lerning_rate: 0.1\n")
    result = run("recipes/sft.py", "--config", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().endswith("unknown key 'lerning_rate' (did you mean 'learning_rate'?)")


def test_eval_split_labels_must_match_the_flashcards(tmp_path):
    folder = tmp_path / "story"
    shutil.copytree(ALICE, folder)
    rows = [json.loads(line) for line in (folder / "eval.jsonl").read_text().splitlines()]
    trained = next(i for i, row in enumerate(rows) if row["split"] == "trained")
    held_out = next(i for i, row in enumerate(rows) if row["split"] == "held_out")
    rows[trained]["split"], rows[held_out]["split"] = "held_out", "trained"
    (folder / "eval.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(UserError) as error:
        DataFolder(folder).check()
    assert error.value.problems == [
        f"{folder / 'eval.jsonl'}:{trained + 1}: split: 'held_out', but sft.jsonl teaches "
        f"{rows[trained]['prompt']!r}; call it 'trained'",
        f"{folder / 'eval.jsonl'}:{held_out + 1}: split: 'trained', but no flashcard of sft.jsonl asks "
        f"{rows[held_out]['prompt']!r}",
    ]


def test_a_bad_ptx_fraction_is_refused_while_parsing_and_blamed_on_the_command_line():
    args = ["--config", str(REPO / "recipes/toy/sft.yaml"), "--ptx_fraction", "1.5"]
    with pytest.raises(UserError, match=r"^arguments: ptx_fraction: 1.5; the share of pretraining rows lies between"):
        parse_recipe_args(sft.ARGUMENT_TYPES, args)


def test_a_negative_ptx_cues_is_refused_while_parsing():
    args = ["--config", str(REPO / "recipes/toy/sft.yaml"), "--ptx_cues", "-1"]
    with pytest.raises(UserError, match=r"^arguments: ptx_cues: -1; a number of rows per sentence, 0 or more"):
        parse_recipe_args(sft.ARGUMENT_TYPES, args)
