"""The story the demo must tell, checked on every story and seed: the issue's pass/fail grid.

    python benchmarks/story_grid.py [--stories data tests/data/oz tests/data/pinocchio] [--seeds 0 1 2]
    python benchmarks/story_grid.py --set ppo.temperature=1.5 --output /tmp/grid.json   # a lever, measured
    python benchmarks/story_grid.py --stories tests/data/stories/*.md --output benchmarks/story_grid_one_file.json

Each run is a full `toyllm demo` (about 45 s on 2 cores); the grid is printed as markdown and written to
benchmarks/story_grid.json. A run passes when every check below holds.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

from demo_time import machine  # noqa: E402

import toyllm.demo  # noqa: E402
from toyllm.resources import RECIPES_DIR  # noqa: E402
from toyllm.story import write_data_folder  # noqa: E402


def checks(metrics: dict) -> dict[str, bool]:
    stages = metrics["stages"]
    random, pretrain, sft, ppo, dpo = (stages[name] for name in ("random", "pretrain", "sft", "ppo", "dpo"))
    said = {name: sum(bool(row[name]) for row in metrics["responses"]) / len(metrics["responses"])
            for name in ("random", "pretrain")}  # fmt: skip
    result = {
        "pretrain perplexity <= random/10": pretrain["perplexity"] <= random["perplexity"] / 10,
        "sft trained exact = 1": sft["trained"]["exact_match"] == 1.0,
        "sft held-out exact <= 0.25": sft["held_out"]["exact_match"] <= 0.25,
        "random and pretrain say something to >= 80%": min(said.values()) >= 0.8,
        "ppo well-formed >= 0.9": min(ppo["trained"]["well_formed"], ppo["held_out"]["well_formed"]) >= 0.9,
    }
    for name, stage in (("ppo", ppo), ("dpo", dpo)):
        result[f"{name} held-out exact >= 0.5"] = stage["held_out"]["exact_match"] >= 0.5
        result[f"{name} trained exact >= 0.9"] = stage["trained"]["exact_match"] >= 0.9
        result[f"{name} held-out judge > sft"] = stage["held_out"]["mean_reward"] > sft["held_out"]["mean_reward"]
    return result


def edited_recipes(settings: list[str], folder: Path) -> Path:
    """A copy of the recipes folder whose toy YAMLs carry `recipe.key=value` edits: a key's line is replaced, or
    added where the YAML lacks it (a misspelt key is then refused by the recipe's own parser, as a user's would be)."""
    shutil.copytree(RECIPES_DIR, folder)
    for setting in settings:
        name, _, value = setting.partition("=")
        recipe, _, key = name.partition(".")
        path = folder / "toy" / f"{recipe}.yaml"
        if not path.is_file():
            raise SystemExit(f"--set {setting}: no recipe '{recipe}' (recipes/toy/{recipe}.yaml)")
        text, found = re.subn(rf"^{re.escape(key)}:[^#\n]*", f"{key}: {value} ", path.read_text(), flags=re.M)
        path.write_text(text if found else f"{text}{key}: {value}\n")
    return folder


def add_grid_arguments(parser: argparse.ArgumentParser, output_name: str) -> None:
    """The options every grid benchmark shares: which stories and seeds, YAML edits, where the JSON goes."""
    parser.add_argument("--stories", nargs="+", default=["data", "tests/data/oz", "tests/data/pinocchio"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", nargs="*", default=[], metavar="RECIPE.KEY=VALUE",
                        help="edit a toy YAML for this grid only: ppo.kl_coef=0.1 sft.ptx_cues=8")  # fmt: skip
    parser.add_argument("--output", default=str(Path(__file__).with_name(output_name)))


def grid_runs(args: argparse.Namespace) -> Iterator[tuple[str, int, Path, Path]]:
    """(story name, seed, data folder, a fresh output folder) for every story and seed, with the YAML edits applied;
    the output folders are removed at the end."""
    with tempfile.TemporaryDirectory() as tmp:
        if args.set:  # the toy chain reads its YAMLs from here
            toyllm.demo.TOY = replace(toyllm.demo.TOY, recipes=edited_recipes(args.set, Path(tmp) / "recipes") / "toy")
        for story in args.stories:
            data_dir, name = REPO / story, Path(story).stem
            if data_dir.suffix == ".md":  # a story in one file: its data folder, as `toyllm story` writes it
                write_data_folder(data_dir, Path(tmp) / "data" / name)
                data_dir = Path(tmp) / "data" / name
            for seed in args.seeds:
                yield name, seed, data_dir, Path(tmp) / f"{name}-{seed}"


def summary(runs: list[dict]) -> dict:
    """The grid in three figures, the ones levers are compared by."""
    ppo = [run["held_out_exact"]["ppo"] for run in runs]
    return {
        "runs": len(runs),
        "ppo_held_out_at_least_half": sum(exact >= 0.5 for exact in ppo),
        "ppo_held_out_mean": round(sum(ppo) / len(ppo), 3) if ppo else None,
        "every_check": sum(all(run["checks"].values()) for run in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_grid_arguments(parser, "story_grid.json")
    parser.add_argument("--feedback-rounds", type=int, default=None, help="the demo's default unless given")
    args = parser.parse_args()
    runs = []
    for story, seed, data_dir, output in grid_runs(args):
        rounds = {"feedback_rounds": args.feedback_rounds} if args.feedback_rounds else {}
        metrics = toyllm.demo.run_demo(data_dir, output, seed=seed, **rounds)
        stages = metrics["stages"]
        runs.append({
            "story": story, "seed": seed, "checks": checks(metrics),
            "held_out_exact": {name: stages[name]["held_out"]["exact_match"] for name in ("ppo", "dpo")},
            "well_formed": {split: stages["ppo"][split]["well_formed"] for split in ("trained", "held_out")},
            "seconds": round(sum(metrics["seconds"].values()), 1), "rounds": metrics.get("rounds"),
        })  # fmt: skip
    print("\n| story | seed | ppo held-out exact | dpo held-out exact | ppo well-formed (trained / held-out) | "
          "seconds | failed checks |\n|---|---|---|---|---|---|---|")  # fmt: skip
    for run in runs:
        failed = [name for name, ok in run["checks"].items() if not ok]
        exact, formed = run["held_out_exact"], run["well_formed"]
        print(
            f"| {run['story']} | {run['seed']} | {exact['ppo']:.2f} | {exact['dpo']:.2f} | {formed['trained']:.2f} "
            f"/ {formed['held_out']:.2f} | {run['seconds']} | {'; '.join(failed) or 'none'} |"
        )
    figures = summary(runs)
    runs_count = figures["runs"]
    print(f"\nPPO held-out exact >= 0.5 on {figures['ppo_held_out_at_least_half']} of {runs_count} runs (mean "
          f"{figures['ppo_held_out_mean']}); every check on {figures['every_check']} of {runs_count}")  # fmt: skip
    record = {"machine": machine(), "set": args.set, "summary": figures, "runs": runs}
    Path(args.output).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
