"""Tables that show the stages side by side (printed by the demo, written into the report)."""

from __future__ import annotations


def _cell(text: str, width: int) -> str:
    text = text if text else "(nothing)"
    return text if len(text) <= width else text[: width - 1] + "…"


def format_responses_table(responses: list[dict], stages: list[str], width: int = 34) -> str:
    """The model's evolution: for each eval prompt, the greedy answer of every stage, in markdown."""
    header = ["split", "prompt", *stages]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in responses:
        cells = [row["split"], row["prompt"], *(_cell(row.get(stage, ""), width) for stage in stages)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_metrics_table(stages: dict[str, dict]) -> str:
    """Per-stage perplexity, then exact_match and mean_reward for every split, in markdown."""
    splits = [key for key in next(iter(stages.values())) if key != "perplexity"]
    header = ["stage", "perplexity"]
    for split in splits:
        header += [f"{split} exact", f"{split} reward"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, stage in stages.items():
        cells = [name, f"{stage['perplexity']:.2f}"]
        for split in splits:
            reward = stage[split].get("mean_reward")
            cells += [f"{stage[split]['exact_match']:.2f}", "-" if reward is None else f"{reward:+.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
