"""`toyllm generate`, `toyllm chat` and `toyllm compare` on a micro checkpoint built in a second."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from toyllm.recipes import sft
from transformers import AutoTokenizer

from toyllm.args import parse_recipe_args
from toyllm.chat import Terminal, chat_loop, fit_history, load_chat_model, prompt_ids
from toyllm.cli import main
from toyllm.data import load_data
from toyllm.defaults import CHAT_MAX_NEW_TOKENS
from toyllm.errors import UserError
from toyllm.generation import chat_prompts, greedy_answers, one_line
from toyllm.toy import build_random_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("micro") / "random"
    build_random_checkpoint(data=REPO / "data", toy_config_dir=REPO / "toy_config", output_dir=output, seed=0)
    return output


def toyllm(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-m", "toyllm.cli", *args], input=stdin, capture_output=True, text=True, env=env,
        timeout=300, cwd=REPO,
    )  # fmt: skip


def test_generate_prints_the_greedy_answer_only(micro):
    result = toyllm("generate", "--model", str(micro), "--max-new-tokens", "12", "who was alice")
    assert result.returncode == 0, result.stderr
    model, tokenizer = load_chat_model(micro)
    expected = greedy_answers(model, tokenizer, ["who was alice"], max_new_tokens=12)[0]
    assert one_line(result.stdout) == expected
    assert result.stdout.count("\n") == 1 and "Traceback" not in result.stderr


def test_generate_sampling_is_seeded(micro, capsys):
    args = ["generate", "--model", str(micro), "--do-sample", "--temperature", "1.5", "--top-p", "0.9", "who was"]
    assert main([*args, "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert main([*args, "--seed", "3"]) == 0
    assert capsys.readouterr().out == first


def test_chat_through_a_pipe_prints_the_answers_alone(micro):
    """Piped, chat is a filter: one answer a line, each what `generate` answers; no prompts, no labels."""
    result = toyllm("chat", "--model", str(micro), stdin="who did alice follow\n\nwho was alice\n")
    assert result.returncode == 0, result.stderr
    assert "you>" not in result.stdout and "bot>" not in result.stdout
    model, tokenizer = load_chat_model(micro)
    expected = greedy_answers(model, tokenizer, ["who did alice follow", "who was alice"], CHAT_MAX_NEW_TOKENS)
    assert result.stdout.splitlines() == expected
    assert "Traceback" not in result.stderr


def test_chat_at_a_terminal_prompts_and_labels(micro):
    out = io.StringIO()
    chat_loop(micro, terminal=Terminal(io.StringIO("who did alice follow\n\nwho was alice\n"), out, interactive=True))
    assert out.getvalue().count("you> ") == 4  # two questions, one blank line, then EOF
    assert out.getvalue().count("bot> ") == 2


def test_chat_exit_command_and_ctrl_c(micro):
    out = io.StringIO()
    lines = io.StringIO("who was alice\n/exit\nwho did alice follow\n")
    assert chat_loop(micro, terminal=Terminal(lines, out, interactive=True)) == 0
    assert out.getvalue().count("bot> ") == 1

    class CtrlC(io.StringIO):
        def readline(self, *args):
            raise KeyboardInterrupt

    out = io.StringIO()
    assert chat_loop(micro, terminal=Terminal(CtrlC(), out, interactive=True)) == 0
    assert out.getvalue().endswith("you> \n")


def test_chat_keeps_history_within_the_context(micro):
    """The toy sees 64 positions: old exchanges are dropped so that a long conversation keeps going."""
    model, tokenizer = load_chat_model(micro)
    messages = [{"role": "system", "content": "alice"}]
    for _ in range(20):
        messages += [{"role": "user", "content": "who did alice follow"}, {"role": "assistant", "content": "alice"}]
    fitted = fit_history(model, tokenizer, messages + [{"role": "user", "content": "who was alice"}], 32)
    assert fitted[0]["role"] == "system" and fitted[-1]["content"] == "who was alice"
    assert len(prompt_ids(tokenizer, fitted)) < model.config.max_position_embeddings
    assert (
        prompt_ids(tokenizer, [{"role": "user", "content": "who was alice"}])
        == chat_prompts(tokenizer, ["who was alice"])[0]
    )
    out = io.StringIO()
    lines = io.StringIO("who did alice follow\n" * 15)
    assert chat_loop(micro, history=True, terminal=Terminal(lines, out, interactive=True)) == 0
    assert out.getvalue().count("bot> ") == 15


def test_generate_reports_a_missing_folder(tmp_path):
    result = toyllm("generate", "--model", str(tmp_path / "nope"), "hi")
    assert result.returncode == 2
    assert "error:" in result.stderr and "Traceback" not in result.stderr


def test_compare_prints_tables_and_writes_metrics_and_report(micro, tmp_path, capsys):
    out = tmp_path / "compare"
    eval_file = REPO / "data" / "eval.jsonl"
    args = ["compare", "--model", f"first={micro}", "--model", f"second={micro}", "--eval", str(eval_file)]
    assert main([*args, "--reward-model", str(micro), "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert set(metrics) == {"stages", "responses", "continuations", "judge", "data_dir", "seconds"}
    assert metrics["data_dir"] == str((REPO / "data").resolve())  # the eval file's folder holds all five files
    assert all({"text", "first", "second"} <= set(row) for row in metrics["continuations"])
    assert list(metrics["stages"]) == ["first", "second"]
    assert metrics["stages"]["first"] == metrics["stages"]["second"]  # the same checkpoint, measured the same way
    assert "| split | prompt | first | second |" in printed
    assert "| stage | perplexity |" in printed
    first = metrics["stages"]["first"]
    assert f"| first | {first['perplexity']:.2f} |" in printed
    assert all("mean_reward" in v for v in first.values() if isinstance(v, dict))
    report = (out / "report" / "report.md").read_text()
    assert "| split | prompt | reference | first | second |" in report and "](metrics.png)" in report
    assert (out / "report" / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_rejects_bad_models(micro, tmp_path, capsys):
    eval_file = str(REPO / "data" / "eval.jsonl")
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--model", f"a={micro}", "--model", f"a={micro}", "--eval", eval_file])
    assert exit_info.value.code == 2 and "given twice" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--model", f"a={tmp_path / 'nope'}", "--eval", eval_file, "--output-dir", str(tmp_path)])
    assert exit_info.value.code == 2 and "is not a folder" in capsys.readouterr().err
    oz_eval = str(
        REPO / "tests" / "data" / "oz" / "eval.jsonl"
    )  # another story's words: the Alice vocabulary lacks them
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--model", f"a={micro}", "--eval", oz_eval, "--output-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "error: a: " in err and "words not in the vocabulary" in err
    assert not (tmp_path / "c").exists()


def test_recipe_command_runs_a_shipped_yaml_by_its_short_name(micro, tmp_path):
    result = toyllm("sft", "--config", "toy/sft.yaml", "--model_name_or_path", str(micro),
                    "--output_dir", str(tmp_path / "sft"), "--max_steps", "2")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "sft" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "launcher", [[], ["--num_processes", "1"], ["--num_processes", "2"]], ids=["in-process", "launch", "2-processes"]
)
def test_recipe_command_mistake_is_one_line_and_exit_2(launcher, tmp_path):
    result = toyllm("sft", *launcher, "--config", "toy/sft.yaml", "--lerning_rate", "1")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "CalledProcessError" not in result.stderr
    assert "ChildFailedError" not in result.stderr and "were not passed to `accelerate launch`" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert errors == ["error: --lerning_rate: unknown argument (did you mean --learning_rate?)"], result.stderr


def test_an_unreachable_hub_id_is_one_line_naming_the_key(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "toyllm.cli", "sft", "--config", "toy/sft.yaml", "--model_name_or_path",
         "someone/no-such-model", "--output_dir", str(tmp_path / "sft")],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "error: model_name_or_path: someone/no-such-model is no local path" in result.stderr


def test_a_misspelt_flag_gets_a_did_you_mean_and_a_bad_value_no_usage_screen():
    misspelt = toyllm("sft", "--config", "toy/sft.yaml", "--lerning_rate", "1")
    assert (
        misspelt.stderr.strip().splitlines()[-1]
        == "error: --lerning_rate: unknown argument (did you mean --learning_rate?)"
    )
    bad = toyllm("sft", "--config", "toy/sft.yaml", "--learning_rate", "abc")
    assert bad.returncode == 2 and "usage:" not in bad.stderr
    assert (
        bad.stderr.strip().splitlines()[-1]
        == "error: argument --learning_rate/--learning-rate: invalid float value: 'abc'"
    )


def test_chat_asks_each_line_on_its_own_by_default(micro, monkeypatch):
    """The toy is trained on single questions: by default chat sends only the new line (and the system message)."""
    import toyllm.chat

    seen = []
    monkeypatch.setattr(
        toyllm.chat, "answer", lambda model, tokenizer, messages, *rest, **options: seen.append(list(messages)) or "x"
    )
    lines = io.StringIO("who did alice follow\nwho was alice\n")
    chat_loop(micro, system="s", terminal=Terminal(lines, io.StringIO()))
    assert [[m["content"] for m in messages] for messages in seen] == [["s", "who did alice follow"],
                                                                      ["s", "who was alice"]]  # fmt: skip


def test_punctuation_is_dropped_and_unknown_words_are_named(micro):
    tokenizer = AutoTokenizer.from_pretrained(micro)
    assert tokenizer("Who was Alice?")["input_ids"] == tokenizer("who was alice")["input_ids"]
    result = toyllm("generate", "--model", str(micro), "Who was Zebedee?")
    assert result.returncode == 0
    assert "not in the model's vocabulary, read as [UNK]: Zebedee" in result.stderr
    assert "Alice" not in toyllm("generate", "--model", str(micro), "Who was Alice?").stderr


def test_overwrite_with_resume_never_picks_up_another_configs_checkpoint(micro, tmp_path):
    out = tmp_path / "sft"
    first = ["--config", str(REPO / "recipes/toy/sft.yaml"), "--model_name_or_path", str(micro),
             "--output_dir", str(out), "--max_steps", "4", "--save_steps", "2", "--learning_rate", "1e-3"]  # fmt: skip
    sft.main(*parse_recipe_args(sft.ARGUMENT_TYPES, first))
    other = [*first[:-1], "2e-3", "--overwrite", "true", "--resume"]
    with pytest.raises(UserError, match="checkpoint-4: made by a different config, data or seed"):
        parse_and_run = parse_recipe_args(sft.ARGUMENT_TYPES, other)
        sft.main(*parse_and_run)
    same = [*first, "--overwrite", "true", "--resume"]  # the same config resumes (here: from its last checkpoint)
    sft.main(*parse_recipe_args(sft.ARGUMENT_TYPES, same))


def test_plain_string_prompt_completion_rows_train_as_one_chat_turn(micro, tmp_path):
    rows = [json.loads(line) for line in (REPO / "data" / "sft.jsonl").read_text().splitlines()]
    plain = tmp_path / "sft.jsonl"
    with plain.open("w") as f:
        for row in rows:
            turns = [m for m in row["messages"] if m["role"] != "system"]
            f.write(json.dumps({"prompt": turns[0]["content"], "completion": turns[1]["content"]}) + "\n")
    dataset = load_data(plain, "flashcards")
    assert dataset[0]["prompt"] == [{"role": "user", "content": rows[0]["messages"][-2]["content"]}]
    assert dataset[0]["completion"][0]["role"] == "assistant"
    out = tmp_path / "out"
    args = ["--config", str(REPO / "recipes/toy/sft.yaml"), "--model_name_or_path", str(micro),
            "--output_dir", str(out), "--dataset_name", str(plain), "--max_steps", "2"]  # fmt: skip
    sft.main(*parse_recipe_args(sft.ARGUMENT_TYPES, args))  # assistant_only_loss: true, as shipped
    assert (out / "model.safetensors").is_file()
