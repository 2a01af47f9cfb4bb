"""The report's plots: training curves, PPO's objective, and the evaluation per stage (matplotlib, Agg backend).

Every function returns a `matplotlib.figure.Figure` (or None when there is nothing to plot), drawn without pyplot so
nothing global changes and no window opens; `save_figure` writes it as PNG.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from toyllm.stages import STAGE

WIDTH_IN, DPI = 7.2, 100  # about 720 px wide
# The RL stages' per-step curves: a panel's title and the key each trainer logs it under (TRL's PPO, then RLOO's)
RL_KEYS = {
    "judge's score": ("objective/scores", "reward"),
    "KL to the SFT model": ("objective/kl",),  # PPO: summed over each answer's tokens
    "KL to the SFT model, per token": ("kl",),  # RLOO: averaged over the answer tokens
    "entropy": ("objective/entropy", "entropy"),
    "KL penalty (non-score reward)": ("objective/non_score_reward",),
}
# Extra per-step curves of a stage: (log key, legend label, on the 0..1 axis on the right?)
EXTRA_KEYS = [
    ("rewards/margins", "reward margin", False),
    ("accuracy", "pairwise accuracy", True),
    ("rewards/accuracies", "preference accuracy", True),
    ("flashcards/answered", "flashcards answered", True),  # SFT's stop_when_learned_every checks
    ("replay/kept", "replay answers kept", True),
]
SMOOTH_FROM = 30  # PPO curves with at least this many steps get a moving average


def read_log_history(stage_dir: str | Path | None) -> list[dict]:
    """The trainer's log history saved with a stage (trainer_state.json), or [] when there is none."""
    if stage_dir is None:
        return []
    try:
        history = json.loads((Path(stage_dir) / "trainer_state.json").read_text()).get("log_history", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [entry for entry in history if isinstance(entry, dict)] if isinstance(history, list) else []


def series(history: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one logged quantity; entries without it, or with a non-number, are skipped."""
    steps, values = [], []
    for i, entry in enumerate(history):
        value = entry.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            step = entry.get("step")
            steps.append(step if isinstance(step, (int, float)) else i + 1)
            values.append(float(value))
    return steps, values


def moving_average(values: list[float], window: int) -> list[float]:
    """The mean of the last `window` values at each point (fewer at the start)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def _new_figure(rows: int, cols: int, height_per_row: float) -> tuple[Figure, list]:
    figure = Figure(figsize=(WIDTH_IN, max(2.4, height_per_row * rows)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, squeeze=False)
    return figure, [ax for row in axes for ax in row]


def _ordered(names) -> list[str]:
    order = list(STAGE)
    return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))


def _is_rl(history: list[dict]) -> bool:
    """An online RL stage's log: the judge's score of its answers, per step."""
    return any(key in entry for entry in history for key in RL_KEYS["judge's score"])


def _rl_series(history: list[dict], title: str) -> tuple[list, list]:
    return next((found for key in RL_KEYS[title] if (found := series(history, key))[1]), ([], []))


def plot_training(histories: dict[str, list[dict]]) -> Figure | None:
    """Training loss per step of every stage that logged one (the RL stages have their own plot), one panel each.

    The reward model's pairwise accuracy and DPO's preference accuracy go on a 0..1 axis on the right; DPO's
    reward margin shares the left axis with the loss.
    """
    stages = [n for n in _ordered(histories) if series(histories[n], "loss")[1] and not _is_rl(histories[n])]
    if not stages:
        return None
    cols = 1 if len(stages) == 1 else 2
    rows = math.ceil(len(stages) / cols)
    figure, axes = _new_figure(rows, cols, 2.9)
    figure.suptitle("Training curves", fontsize=12)
    for ax, name in zip(axes, stages):
        _training_panel(ax, name, histories[name])
    for ax in axes[len(stages) :]:
        ax.set_visible(False)
    return figure


def _training_panel(ax, name: str, history: list[dict]) -> None:
    """One stage's loss, with its eval loss and the EXTRA_KEYS it logged (shares on a 0..1 axis on the right)."""
    ax.plot(*series(history, "loss"), color="C0", label="train loss")
    if series(history, "eval_loss")[1]:
        ax.plot(*series(history, "eval_loss"), color="C0", linestyle="--", marker="o", label="eval loss")
    left_label, right = "loss", None
    for number, (key, label, on_right) in enumerate(EXTRA_KEYS, start=1):
        steps, values = series(history, key)
        if not values:
            continue
        if on_right:
            right = right or ax.twinx()
            right.plot(steps, values, color=f"C{number}", label=label)
        else:
            ax.plot(steps, values, color=f"C{number}", label=label)
            left_label = "loss / margin"
    ax.set_title(name, fontsize=11)
    ax.set_xlabel("training step")
    ax.set_ylabel(left_label)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if right is not None:
        right.set_ylim(-0.03, 1.03)
        right.set_ylabel("accuracy")
        more = right.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    if len(handles) > 1:
        # below the panel: inside, it would hide a curve somewhere
        ax.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=len(handles),
                  frameon=False, handlelength=1.5, columnspacing=1.0)  # fmt: skip


def plot_rl(histories: dict[str, list[dict]]) -> Figure | None:
    """The RL stages (PPO, RLOO) per step: the judge's score, the KL to the reference, the entropy and PPO's KL
    penalty; one line per stage. Each stage's score comes from the judge it trained against, and two judges' scales
    can be unrelated, so with several RL stages every one gets a score panel of its own."""
    stages = [n for n in _ordered(histories) if _is_rl(histories[n])]
    panels = []  # (key, title, stages drawn on it)
    for key in RL_KEYS:
        drawn = [n for n in stages if _rl_series(histories[n], key)[1]]
        if key == "judge's score" and len(drawn) > 1:
            panels += [(key, f"{key}: {n} (its own judge)", [n]) for n in drawn]
        elif drawn:
            panels.append((key, key, drawn))
    if not panels:
        return None
    cols = 1 if len(panels) == 1 else 2
    rows = math.ceil(len(panels) / cols)
    figure, axes = _new_figure(rows, cols, 2.5)
    figure.suptitle("RLHF, per training step", fontsize=12)
    for ax, (key, title, drawn) in zip(axes, panels):
        for name in drawn:
            number = stages.index(name)
            steps, values = _rl_series(histories[name], key)
            prefix = f"{name}: " if len(drawn) > 1 else ""
            if len(values) >= SMOOTH_FROM:  # a batch per step is noisy: the raw curve faint, its trend on top
                window = max(5, len(values) // 20)
                ax.plot(steps, values, color=f"C{number}", alpha=0.3, linewidth=0.8, label=f"{prefix}per step")
                ax.plot(steps, moving_average(values, window), color=f"C{number}", linewidth=2,
                        label=f"{prefix}mean of {window} steps")  # fmt: skip
            else:
                ax.plot(steps, values, color=f"C{number}", marker=".", label=f"{prefix}per step")
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("training step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if len(ax.get_lines()) > 1:
            ax.legend(fontsize=7)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return figure


def plot_rounds(rounds: list[list[dict]]) -> Figure | None:
    """The judge's score (the proxy PPO maximises) and the labeller's agreement (gold) over PPO steps, round after
    round: the shape of Gao, Schulman & Hilton's over-optimisation figure, measured on the toy."""
    if not any(series(history, "gold/agreement")[1] for history in rounds):
        return None
    figure, (ax,) = _new_figure(1, 1, 3.2)
    gold_ax = ax.twinx()
    offset = 0
    for number, history in enumerate(rounds, start=1):
        steps, scores = series(history, "objective/scores")
        gold_steps, gold = series(history, "gold/agreement")
        window = max(5, len(scores) // 20)
        label = number == 1
        ax.plot([offset + s for s in steps], moving_average(scores, window), color="C0",
                label=f"judge's score (proxy, mean of {window} steps)" if label else None)  # fmt: skip
        gold_ax.plot([offset + s for s in gold_steps], gold, color="C3", marker=".",
                     label="labeller agrees with the greedy answer (gold)" if label else None)  # fmt: skip
        ax.axvline(offset, color="grey", linestyle=":", linewidth=1)
        ax.text(offset, 1.01, f" round {number}", transform=ax.get_xaxis_transform(), fontsize=8, color="grey")
        offset += max(steps + gold_steps, default=0)
    ax.set_title("Proxy vs gold over PPO steps, round after round", fontsize=11, pad=14)
    ax.set_xlabel("PPO step (rounds one after another)")
    ax.set_ylabel("judge's score")
    gold_ax.set_ylabel("gold: labeller agrees")
    gold_ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()[0] + gold_ax.get_legend_handles_labels()[0]
    figure.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    return figure


def _headline(metric: dict, key: str) -> float:
    """A split's value of `key`; the retention split has `contains` where the others have `exact_match`."""
    if key == "exact_match" and "contains" in metric:
        return metric["contains"]
    return metric.get(key, float("nan"))


def plot_metrics(stages: dict[str, dict]) -> Figure | None:
    """Per stage: perplexity (log axis), then exact match and the judge's mean reward for each split."""
    if not stages:
        return None
    names = list(stages)
    splits = list(dict.fromkeys(k for s in stages.values() for k, v in s.items() if isinstance(v, dict)))
    has_reward = any("mean_reward" in stages[n].get(split, {}) for n in names for split in splits)
    panels = 1 + bool(splits) + (bool(splits) and has_reward)
    figure, axes = _new_figure(panels, 1, 2.5)
    figure.suptitle("Evaluation per stage", fontsize=12)
    ax = axes[0]
    values = [stages[n].get("perplexity", float("nan")) for n in names]
    bars = ax.bar(names, values, color="C0")
    ax.bar_label(bars, labels=[f"{v:.1f}" if math.isfinite(v) else "" for v in values], fontsize=8, padding=2)
    ax.set_yscale("log")
    ax.set_ylim(1, max([v for v in values if math.isfinite(v) and v > 1], default=10) * 3)  # perplexity >= 1
    ax.set_title("perplexity of the eval references (lower is better)", fontsize=11)
    ax.set_ylabel("perplexity (log)")
    ax.grid(axis="y", alpha=0.3)
    metrics = [
        ("exact_match", "exact match", "share of greedy answers equal to the reference (retention: containing it)")
    ]
    if has_reward:
        metrics.append(("mean_reward", "mean reward", "judge's mean score of the greedy answers"))
    for ax, (key, label, title) in zip(axes[1:], metrics):
        width = 0.8 / len(splits)
        for number, split in enumerate(splits):
            offsets = [i - 0.4 + width * (number + 0.5) for i in range(len(names))]
            heights = [_headline(stages[n].get(split, {}), key) for n in names]
            bars = ax.bar(offsets, heights, width=width, color=f"C{number + 1}", label=split)
            if key == "exact_match":  # a share of 0 draws no bar at all: say so
                ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
        ax.set_xticks(range(len(names)), names)
        ax.set_title(title, fontsize=11)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
        if key == "exact_match":
            ax.set_ylim(0, 1.12)
        else:
            ax.axhline(0, color="black", linewidth=0.8)
    if splits:  # one legend for both split panels, below them, so every panel keeps the full width
        handles, labels = axes[1].get_legend_handles_labels()
        figure.legend(handles, labels, loc="outside lower center", ncols=len(splits), fontsize=9, title="split",
                      title_fontsize=9)  # fmt: skip
    return figure


def save_figure(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    figure.savefig(path, dpi=DPI)
    return path
