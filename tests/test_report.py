"""The report: report.md with every stage's numbers, and the plots, from fake metrics and fake training logs."""

from __future__ import annotations

import json

import pytest

from toyllm.plots import plot_metrics, plot_rl, plot_training, read_log_history, series
from toyllm.report import write_report
from toyllm.tables import format_comparison, format_metrics_table

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SPLITS = ("trained", "held_out", "unseen")


def fake_metrics(with_reward: bool = True) -> dict:
    stages = {}
    for i, name in enumerate(("random", "pretrain", "sft", "ppo", "dpo")):
        stage = {"perplexity": 100.0 / (i + 1) + 0.123}
        for j, split in enumerate(SPLITS):
            stage[split] = {"exact_match": round((i * 3 + j) / 15, 4)}
            if with_reward:
                stage[split]["mean_reward"] = -5.0 + i * 2.1 + j * 0.37
        stages[name] = stage
    responses = [
        {"prompt": "who did alice follow", "split": "trained", "reference": "alice followed the white rabbit",
         **{name: f"answer of {name}" for name in stages}},
        {"prompt": "who was alice", "split": "held_out", "reference": "alice was very curious",
         **{name: "" for name in stages}},
    ]  # fmt: skip
    continuations = [{"text": "alice followed the", **{name: f"alice followed the {name}" for name in stages}}]
    return {
        "stages": stages,
        "responses": responses,
        "continuations": continuations,
        "seconds": {"random": 0.1, "pretrain": 1.5, "evaluate": 0.3},
    }


def steps(n: int, **curves) -> list[dict]:
    """A fake log history: n logged steps, each curve a function of the step, then the trainer's summary entry."""
    history = [{"step": s, "epoch": s / n, **{k.replace("__", "/"): f(s) for k, f in curves.items()}}
               for s in range(1, n + 1)]  # fmt: skip
    return history + [{"step": n, "train_loss": 1.0, "train_runtime": 1.0}]


FAKE_HISTORIES = {
    "pretrain": steps(10, loss=lambda s: 4 / s),
    "sft": steps(8, loss=lambda s: 2 / s),
    "reward": steps(12, loss=lambda s: 0.7 / s, accuracy=lambda s: min(1, 0.5 + s / 20), margin=lambda s: s),
    "ppo": steps(
        6,
        **{
            "objective__scores": lambda s: s - 3,
            "objective__kl": lambda s: s / 10,
            "objective__entropy": lambda s: 3 - s / 5,
            "objective__non_score_reward": lambda s: -s / 100,
            "objective__rlhf_reward": lambda s: s,
        },
    ),  # fmt: skip
    "dpo": steps(
        9,
        loss=lambda s: 0.69 - s / 30,
        rewards__margins=lambda s: s / 5,
        rewards__accuracies=lambda s: min(1, s / 6),
        rewards__chosen=lambda s: s,
    ),  # fmt: skip
}


@pytest.fixture
def stage_dirs(tmp_path):
    dirs = {}
    for name in ("random", "pretrain", "sft", "reward", "ppo", "dpo"):
        folder = tmp_path / "run" / name
        folder.mkdir(parents=True)
        if name in FAKE_HISTORIES:
            (folder / "trainer_state.json").write_text(json.dumps({"log_history": FAKE_HISTORIES[name]}))
        dirs[name] = folder
    return dirs


def lines_by_panel(figure) -> dict[str, int]:
    """Line series per titled panel, counting those on its twin (right-hand) axis."""
    counts = {}
    for ax in figure.axes:
        if ax.get_title():
            siblings = [a for a in figure.axes if a is ax or a.get_shared_x_axes().joined(a, ax)]
            counts[ax.get_title()] = sum(len(a.get_lines()) for a in siblings)
    return counts


def test_report_holds_every_stage_and_its_plots(tmp_path, stage_dirs):
    metrics = fake_metrics()
    path = write_report(tmp_path / "run", metrics, stage_dirs)
    assert path == tmp_path / "run" / "report" / "report.md"
    text = path.read_text()
    comparison = format_comparison(metrics["stages"], metrics["responses"])  # what the demo prints at its end
    assert comparison.count("\n\n") == 1 and comparison.splitlines()[0].startswith("| split | prompt | random |")
    # the report's answers are whole and beside the reference (the terminal's table cuts them)
    long = "the dormouse fell down the king held the king held the king held"
    metrics["responses"][0]["ppo"] = long
    text = write_report(tmp_path / "run", metrics, stage_dirs).read_text()
    assert "| split | prompt | reference | random |" in text
    assert "| trained | who did alice follow | alice followed the white rabbit | answer of random |" in text
    assert f"| {long} |" in text and f"| {long} |" not in format_comparison(metrics["stages"], metrics["responses"])
    assert format_metrics_table(metrics["stages"]) in text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    for name, stage in metrics["stages"].items():
        row = rows[name]
        assert f"| {stage['perplexity']:.2f} |" in row
        for split in SPLITS:
            assert f"| {stage[split]['exact_match']:.2f} |" in row
            assert f"{stage[split]['mean_reward']:+.2f}" in row
    for name in ("random", "pretrain", "sft", "reward", "ppo", "dpo"):
        assert f"- **{name}**: " in text  # one sentence per stage
    assert "answer of dpo" in text and "(nothing)" in text
    assert "## Base vs instruct" in text
    assert "| text | random | pretrain | sft | ppo | dpo |" in text
    assert "| alice followed the | alice followed the random | alice followed the pretrain |" in text
    for png in ("training.png", "rl.png", "metrics.png"):
        assert f"]({png})" in text  # relative links, beside report.md
        data = (path.parent / png).read_bytes()
        assert data[:8] == PNG_SIGNATURE
        assert b"Matplotlib" in data[:4096]  # written by matplotlib (its Software text chunk)


def test_report_without_logs_or_judge(tmp_path):
    """No trainer_state.json anywhere and no judge: tables still written, no training plots, rewards shown as -."""
    metrics = fake_metrics(with_reward=False)
    stale = tmp_path / "report" / "training.png"
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    path = write_report(tmp_path, metrics, {"a": tmp_path / "missing", "b": tmp_path})
    text = path.read_text()
    assert "training.png" not in text and "rl.png" not in text and not stale.exists()
    assert "](metrics.png)" in text and "| - |" in text
    assert "- **a**: " in text  # any name gets a sentence
    figure = plot_metrics(metrics["stages"])
    assert len(figure.axes) == 2  # perplexity and exact match: no reward panel without a judge


def test_training_plot_series(stage_dirs):
    histories = {name: read_log_history(folder) for name, folder in stage_dirs.items()}
    figure = plot_training(histories)
    assert lines_by_panel(figure) == {"pretrain": 1, "sft": 1, "reward": 2, "dpo": 3}
    reward = next(ax for ax in figure.axes if ax.get_title() == "reward")
    assert reward.get_xlabel() == "training step" and reward.get_ylabel() == "loss"
    assert any(ax.get_ylabel() == "accuracy" for ax in figure.axes)
    figure = plot_rl(histories)
    assert lines_by_panel(figure) == {
        "judge's score": 1, "KL to the SFT model": 1, "entropy": 1, "KL penalty (non-score reward)": 1,
    }  # fmt: skip
    assert all(ax.get_xlabel() == "training step" for ax in figure.axes if ax.get_visible())
    long_run = {"ppo": steps(100, objective__scores=lambda s: s % 7, objective__kl=lambda s: s / 100)}
    # a long, noisy run: the raw curve plus its moving average
    assert lines_by_panel(plot_rl(long_run)) == {"judge's score": 2, "KL to the SFT model": 2}


def test_ppo_runs_scored_by_different_judges_never_share_a_score_axis():
    """`toyllm compare --model ppo=... --model ppo-2=...`: each PPO trained against its own judge, whose scores are
    on unrelated scales. The scores get a panel each; the KL, on one scale for all, stays on one panel."""
    histories = {
        "ppo": steps(10, objective__scores=lambda s: s, objective__kl=lambda s: s / 10),
        "ppo-2": steps(10, objective__scores=lambda s: 100 - s, objective__kl=lambda s: s / 20),
    }
    assert lines_by_panel(plot_rl(histories)) == {
        "judge's score: ppo (its own judge)": 1, "judge's score: ppo-2 (its own judge)": 1, "KL to the SFT model": 2,
    }  # fmt: skip


def test_rloo_is_drawn_beside_ppo_with_its_own_score_and_its_per_token_kl():
    """RLOO logs `reward` and a per-token `kl`, PPO `objective/scores` and a per-answer KL: one RL plot holds both,
    never mixing the two KL scales on one axis, and RLOO's curves stay out of the loss panels."""
    histories = {
        "ppo": steps(10, objective__scores=lambda s: s, objective__kl=lambda s: s / 10),
        "rloo": steps(10, reward=lambda s: s / 2, kl=lambda s: s / 100, loss=lambda s: 0.0),
    }
    assert lines_by_panel(plot_rl(histories)) == {
        "judge's score: ppo (its own judge)": 1, "judge's score: rloo (its own judge)": 1,
        "KL to the SFT model": 1, "KL to the SFT model, per token": 1,
    }  # fmt: skip
    assert plot_training(histories) is None


def test_plots_tolerate_missing_keys_and_files(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "trainer_state.json").write_text("{not json")
    assert read_log_history(tmp_path / "bad") == [] and read_log_history(tmp_path / "none") == []
    histories = {
        "reward": [{"step": 1, "loss": 0.7}, {"step": 2, "loss": "nan?"}, {"loss": 0.5}],  # no accuracy logged
        "ppo": [{"step": 1, "objective/scores": 0.2}],  # only the score
        "empty": [],
    }
    assert series(histories["reward"], "loss") == ([1, 3], [0.7, 0.5])
    assert lines_by_panel(plot_training(histories)) == {"reward": 1}
    assert lines_by_panel(plot_rl(histories)) == {"judge's score": 1}
    assert plot_training({"x": []}) is None and plot_rl({"x": [{"loss": 1.0}]}) is None


def test_metrics_plot_bars():
    metrics = fake_metrics()
    figure = plot_metrics(metrics["stages"])
    perplexity, exact, reward = figure.axes
    assert perplexity.get_yscale() == "log"
    assert len(perplexity.patches) == 5
    assert len(exact.patches) == len(reward.patches) == 5 * len(SPLITS)
    assert [t.get_text() for t in exact.get_xticklabels()] == list(metrics["stages"])
    assert exact.get_ylabel() == "exact match" and reward.get_ylabel() == "mean reward"
