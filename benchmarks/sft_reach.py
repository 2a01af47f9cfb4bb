"""How reachable the held-out answers are after SFT, per question: the quick check of an SFT lever before a full grid.

    python benchmarks/sft_reach.py [--stories data tests/data/oz tests/data/pinocchio] [--seeds 0 1 2]
    python benchmarks/sft_reach.py --set sft.ptx_fraction=0.7 --output /tmp/reach.json
    python benchmarks/sft_reach.py --toy-config-dir /tmp/wider_toy_config     # another architecture

Each run trains only random → pretrain → SFT with the demo's own stages (about 9 s on 2 cores), then, per held-out
question, measures the reference's log-probability given the chat prompt and how many of `--samples` answers
sampled at temperature 1 (seeded) are the reference. PPO samples each prompt about 85 times a round, so a question
with no hit in 200 is out of its reach. SFT must still answer every trained question and at most a quarter of the
held-out ones greedily: the story. Results go to benchmarks/sft_reach.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

from demo_time import machine  # noqa: E402
from story_grid import add_grid_arguments, grid_runs  # noqa: E402

import toyllm.demo  # noqa: E402
import toyllm.toy  # noqa: E402
from toyllm.data import DATA_FILES, load_data  # noqa: E402
from toyllm.resources import TOY_CONFIG_DIR  # noqa: E402

HIT_FLOOR = 2  # hits in --samples that count a question as within PPO's reach


def run_stages(stages: tuple[str, ...], data_dir: Path, output_dir: Path, seed: int,
               toy_config_dir: Path = TOY_CONFIG_DIR) -> dict[str, float]:  # fmt: skip
    """Train these demo stages, in order, with the demo's own recipes and YAMLs, each logged to `logs/<stage>.log`;
    returns each stage's seconds."""
    (output_dir / "logs").mkdir(parents=True, exist_ok=True)
    seconds = {}
    for stage in stages:
        start = time.perf_counter()
        with open(output_dir / "logs" / f"{stage}.log", "w") as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):  # fmt: skip
            if stage == "random":
                toyllm.toy.build_random_stage(data_dir, toy_config_dir, output_dir / stage, seed, False)
            else:
                recipe, recipe_args = toyllm.demo.recipe_args(stage, data_dir, output_dir, seed, False)
                recipe.main(*recipe_args)
        seconds[stage] = round(time.perf_counter() - start, 1)
    return seconds


def sft_reach(model_dir: Path, eval_rows: list[dict], samples: int, seed: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    from toyllm.evaluate import reference_logprobs
    from toyllm.generation import greedy_answers, normalise, sampled_answers
    from toyllm.model import load_weights

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = load_weights(AutoModelForCausalLM, model_dir).eval()
    result = {}
    with torch.no_grad():
        for split in ("trained", "held_out"):
            rows = [row for row in eval_rows if row["split"] == split]
            questions, references = [row["prompt"] for row in rows], [normalise(row["reference"]) for row in rows]
            greedy = [normalise(answer) for answer in greedy_answers(model, tokenizer, questions)]
            result[split] = {"exact_match": sum(map(str.__eq__, greedy, references)) / len(rows)}
            if split == "held_out":
                set_seed(seed)
                sampled = [normalise(answer) for answer in sampled_answers(model, tokenizer, questions, samples)]
                result[split] |= {
                    "questions": questions,
                    "reference_logprob": [
                        round(x, 2) for x in reference_logprobs(model, tokenizer, questions, references)
                    ],  # fmt: skip
                    "hits": [sampled[i * samples : (i + 1) * samples].count(ref) for i, ref in enumerate(references)],
                }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_grid_arguments(parser, "sft_reach.json")
    parser.add_argument("--toy-config-dir", default=str(TOY_CONFIG_DIR), help="the architecture and vocabulary")
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    runs = []
    for story, seed, data_dir, output_dir in grid_runs(args):
        run_stages(("random", "pretrain", "sft"), data_dir, output_dir, seed, Path(args.toy_config_dir))
        eval_rows = load_data(data_dir / DATA_FILES["eval"], "eval").to_list()
        reach = sft_reach(output_dir / "sft", eval_rows, args.samples, seed)
        runs.append({"story": story, "seed": seed, **reach})
        held = reach["held_out"]
        print(f"{story} seed {seed}: SFT exact trained {reach['trained']['exact_match']:.2f} "
              f"held-out {held['exact_match']:.2f}; held-out log-probs {held['reference_logprob']}, hits in "
              f"{args.samples}: {held['hits']}", flush=True)  # fmt: skip
    hits = [n for run in runs for n in run["held_out"]["hits"]]
    logprobs = [x for run in runs for x in run["held_out"]["reference_logprob"]]
    story_kept = sum(run["trained"]["exact_match"] == 1 and run["held_out"]["exact_match"] <= 0.25 for run in runs)
    summary = {
        "questions_in_reach": f"{sum(n >= HIT_FLOOR for n in hits)} of {len(hits)}",
        "mean_reference_logprob": round(statistics.mean(logprobs), 2),
        "runs_keeping_the_story": f"{story_kept} of {len(runs)}",
    }
    print(summary)
    result = {"machine": machine(), "set": args.set, "toy_config_dir": args.toy_config_dir, "summary": summary}
    Path(args.output).write_text(json.dumps(result | {"runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
