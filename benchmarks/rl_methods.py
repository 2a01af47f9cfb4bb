"""PPO beside RLOO, from the same SFT model against the same judge each round: the demo's two RL columns over
stories and seeds.

    python benchmarks/rl_methods.py [--stories data/alice.md tests/data/stories/*.md tests/data/goldilocks \
        tests/data/jack] [--seeds 0 1 2]

Each run is a full `toyllm demo`; per RL stage (the table's policies that train against a judge) it records trained
exact, held-out exact, the held-out judge score (the last judge's) and the well-formed share, beside SFT's, and the
goal checks: trained >= 0.9, well-formed >= 0.9 and a held-out judge score above SFT's. Results go to
benchmarks/rl_methods.json and are printed as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from demo_time import machine  # noqa: E402
from story_grid import add_grid_arguments, grid_runs  # noqa: E402

import toyllm.demo  # noqa: E402
from toyllm.stages import TABLE  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STORIES = ["data/alice.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "tests/data/stories").glob("*.md")),
           "tests/data/goldilocks", "tests/data/jack"]  # fmt: skip


def rl_figures(stage: dict, sft: dict) -> dict:
    figures = {
        "trained_exact": stage["trained"]["exact_match"],
        "held_out_exact": stage["held_out"]["exact_match"],
        "held_out_judge": round(stage["held_out"]["mean_reward"], 3),
        "well_formed": min(stage["trained"]["well_formed"], stage["held_out"]["well_formed"]),
    }
    figures["goal"] = (figures["trained_exact"] >= 0.9 and figures["well_formed"] >= 0.9
                       and stage["held_out"]["mean_reward"] > sft["held_out"]["mean_reward"])  # fmt: skip
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_grid_arguments(parser, "rl_methods.json")
    parser.set_defaults(stories=STORIES)
    args = parser.parse_args()
    runs = []
    for story, seed, data_dir, output_dir in grid_runs(args):
        stages = toyllm.demo.run_demo(data_dir, output_dir, seed=seed)["stages"]
        sft = stages["sft"]
        run = {"story": story, "seed": seed, "sft_held_out_judge": round(sft["held_out"]["mean_reward"], 3),
               "sft_held_out_exact": sft["held_out"]["exact_match"]}  # fmt: skip
        run |= {name: rl_figures(stages[name], sft) for name in TABLE.rl_policies}
        runs.append(run)
    names = TABLE.rl_policies
    print("\n| story | seed | SFT held-out exact / judge | "
          + " | ".join(f"{n} trained / held-out exact / held-out judge / well-formed" for n in names)
          + " |\n|---|---|---|" + "---|" * len(names))  # fmt: skip
    for run in runs:
        cells = [f"{r['trained_exact']:.2f} / {r['held_out_exact']:.2f} / {r['held_out_judge']:+.2f} / "
                 f"{r['well_formed']:.2f}{'' if r['goal'] else ' ✗'}" for r in (run[n] for n in names)]  # fmt: skip
        print(f"| {run['story']} | {run['seed']} | {run['sft_held_out_exact']:.2f} / "
              f"{run['sft_held_out_judge']:+.2f} | " + " | ".join(cells) + " |")  # fmt: skip
    summary = {
        name: {
            "goal": sum(run[name]["goal"] for run in runs),
            "trained_at_least_0.9": sum(run[name]["trained_exact"] >= 0.9 for run in runs),
            "well_formed_at_least_0.9": sum(run[name]["well_formed"] >= 0.9 for run in runs),
            "held_out_judge_above_sft": sum(run[name]["held_out_judge"] > run["sft_held_out_judge"] for run in runs),
            "held_out_exact_mean": round(sum(run[name]["held_out_exact"] for run in runs) / len(runs), 3),
            "runs": len(runs),
        }
        for name in names
    }
    print(json.dumps(summary, indent=1))
    record = {"machine": machine(), "set": args.set, "summary": summary, "runs": runs}
    Path(args.output).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
