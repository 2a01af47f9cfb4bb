"""The tables that show the stages side by side, in markdown: printed by the demo and `toyllm compare`, and in the
report."""

from __future__ import annotations

from toyllm.stages import split_round


def _cell(text: str, width: int) -> str:
    text = text if text else "(nothing)"
    return text if len(text) <= width else text[: width - 1] + "…"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
    )


def _stage_table(rows: list[dict], keys: list[str], stages: list[str], width: int, labels: dict | None = None) -> str:
    """A markdown table: the rows' own `keys`, then every stage's text, cut to `width`."""
    header = [*keys, *((labels or {}).get(stage, stage) for stage in stages)]
    return markdown_table(
        header, [[*(r[k] for k in keys), *(_cell(r.get(s, ""), width) for s in stages)] for r in rows]
    )


TERMINAL_WIDTH = 34  # characters of an answer in the terminal's table; the report shows every answer whole


def column_labels(stages: dict[str, dict], asked: bool = True) -> dict[str, str]:
    """Each stage's header: its name, with how it was asked when not in its chat template (`asked`) and which
    checkpoint it is when that is another folder, a later feedback round: "pretrain (text)", "ppo (ppo-2)"."""
    labels = {}
    for name, stage in stages.items():
        notes = [stage["asked"]] if asked and stage.get("asked", "chat") != "chat" else []
        base, round_number = split_round(stage.get("checkpoint", name))
        notes += [stage["checkpoint"]] if base == name and round_number > 1 else []
        labels[name] = f"{name} ({', '.join(notes)})" if notes else name
    return labels


def format_responses_table(
    responses: list[dict], stages: dict[str, dict], width: int = TERMINAL_WIDTH, reference: bool = False
) -> str:
    """The model's evolution: for each eval prompt, the answer of every stage, in markdown, under its column label.
    The terminal's table cuts answers to `width`; the report's (`reference=True`) shows them whole, beside the
    reference answer."""
    keys = ["split", "prompt", "reference"] if reference else ["split", "prompt"]
    return _stage_table(responses, keys, list(stages), width, column_labels(stages))


def format_continuations_table(continuations: list[dict], stages: list[str], width: int = 34) -> str:
    """Base vs instruct: each plain-text prompt as every stage continues it through the text-generation pipeline."""
    return _stage_table(continuations, ["text"], stages, width)


def _splits(stages: dict[str, dict]) -> list[str]:
    return [key for key, value in next(iter(stages.values())).items() if isinstance(value, dict)]


def split_score(metric: dict) -> tuple[str, float]:
    """A split's headline: the exact-match share, or for the retention split the share containing the reference."""
    return ("contains", metric["contains"]) if "contains" in metric else ("exact", metric["exact_match"])


def format_metrics_table(stages: dict[str, dict]) -> str:
    """Per-stage perplexity, then the headline score (`split_score`) and mean_reward for every split, in markdown."""
    splits = _splits(stages)
    first = next(iter(stages.values()))
    scores = [split_score(first[split])[0] for split in splits]
    header = ["stage", "perplexity", *(f"{split} {what}" for split, score in zip(splits, scores)
                                       for what in (score, "reward"))]  # fmt: skip
    rows = []
    for name, stage in stages.items():
        cells = [column_labels(stages, asked=False)[name], f"{stage['perplexity']:.2f}"]
        for split in splits:
            reward = stage[split].get("mean_reward")
            cells += [f"{split_score(stage[split])[1]:.2f}", "-" if reward is None else f"{reward:+.2f}"]
        rows.append(cells)
    return markdown_table(header, rows)


def format_diagnostics_table(stages: dict[str, dict]) -> str:
    """Per stage and split: the reference's log-probability, the sampling hit rate, the well-formed share and the
    share of word mixtures."""
    splits = _splits(stages)
    keys = [("reference_logprob", "logp", "{:+.1f}"), ("sampled_exact", "sampled", "{:.2f}"),
            ("well_formed", "well-formed", "{:.2f}"), ("word_mixtures", "mixtures", "{:.2f}")]  # fmt: skip
    header = ["stage", *(f"{split} {label}" for split in splits for _, label, _ in keys)]
    rows = [[name, *(fmt.format(stage[s][key]) if key in stage[s] else "-" for s in splits for key, _, fmt in keys)]
            for name, stage in stages.items()]  # fmt: skip
    return markdown_table(header, rows)


def format_rounds_table(rounds: list[dict]) -> str:
    header = ["round", "new pairs", "judge on new feedback", "held_out exact", "held_out reward",
              "trained exact", "well-formed trained", "well-formed held_out"]  # fmt: skip
    rows = []
    for row in rounds:
        accuracy, trained, held_out = row["judge_accuracy_on_new_feedback"], row["trained"], row["held_out"]
        rows.append([str(row["round"]), str(row["new_pairs"]), "-" if accuracy is None else f"{accuracy:.2f}",
                     f"{held_out['exact_match']:.2f}", f"{held_out['mean_reward']:+.2f}",
                     f"{trained['exact_match']:.2f}", f"{trained['well_formed']:.2f}",
                     f"{held_out['well_formed']:.2f}"])  # fmt: skip
    return markdown_table(header, rows)


def format_comparison(stages: dict[str, dict], responses: list[dict]) -> str:
    """The evolution table and the metrics table, as the demo prints them at its end (and `toyllm compare` does)."""
    note = f"(answers cut at {TERMINAL_WIDTH} characters: report.md shows them whole)"
    return format_responses_table(responses, stages) + "\n" + note + "\n\n" + format_metrics_table(stages)
