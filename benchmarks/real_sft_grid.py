"""The practitioner's SFT (and DPO from it) on data people bring: a real chat model over data folders of different
shapes, through the shipped `recipes/smollm2-135m/` YAMLs, exactly as `toyllm demo --model` runs them.

    make real-model && python benchmarks/real_sft_grid.py [--seeds 0 1] [--set sft.max_steps=64 ...] [--out NAME]

The folders: Alice (data/), Oz (tests/data/oz), the Pigs (a one-file story) and two one-file documents written as
their owners would, a shop's FAQ and a product manual (benchmarks/data/*.md); `--data` picks others. Each run, in a
fresh process (its peak resident memory is its own): the instruct model, SFT, DPO from SFT, then every stage asked
greedily, as the demo asks it:
- `sft_trained`: the share of the flashcards SFT answers word for word;
- `dpo_held_out`: the share of the held-out questions DPO answers word for word (SFT's beside it);
- `sft_retention`, `dpo_retention`: the general questions answered (recipes/smollm2-135m/retention.jsonl) as a share
  of what the instruct model answered;
- `sft_steps`, `sft_seconds`, `dpo_seconds`, `peak_mb`.
The goal per run (issue 38): SFT trained >= 0.9 and retention >= 0.9, DPO held-out >= 0.5 and retention >= 0.9.
`--set stage.key=value` overrides a setting of a stage's YAML (a lever). Results go to real_sft_grid[-NAME].json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GGUF = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDERS = {
    "alice": REPO / "data",
    "oz": REPO / "tests" / "data" / "oz",
    "pigs": REPO / "tests" / "data" / "stories" / "three-little-pigs.md",
    "bike-shop-faq": REPO / "benchmarks" / "data" / "bike-shop-faq.md",
    "kettle-manual": REPO / "benchmarks" / "data" / "kettle-manual.md",
}
RECIPES = None  # the recipe folder (--recipes; None: the shipped recipes/smollm2-135m/)
GOAL = {"sft_trained": 0.9, "sft_retention": 0.9, "dpo_held_out": 0.5, "dpo_retention": 0.9}


def data_folder(source: Path, scratch: Path) -> Path:
    """A data folder as it is; a one-file story made into one with `toyllm story`."""
    if source.is_dir():
        return source
    folder = scratch / source.stem
    if not folder.exists():
        subprocess.run([sys.executable, "-m", "toyllm.cli", "story", str(source), "--output-dir", str(folder)],
                       check=True, capture_output=True)  # fmt: skip
    return folder


def train(stage: str, data: Path, output_dir: Path, seed: int, levers: list[str]) -> float:
    """One stage through the demo's own overrides of its recipe's YAML, the levers appended; its seconds."""
    import importlib

    from toyllm.args import parse_recipe_args
    from toyllm.demo import real_model_chain, stage_overrides

    chain = real_model_chain(str(GGUF), RECIPES)
    recipe = importlib.import_module(f"toyllm.recipes.{chain.table[stage].recipe}")
    extra = [f"--{key}={value}" for name, key, value in (_lever(lever) for lever in levers) if name == stage]
    args = stage_overrides(stage, data, output_dir, seed, chain=chain) + ["--report_to", "none", *extra]
    start = time.perf_counter()
    recipe.main(*parse_recipe_args(recipe.ARGUMENT_TYPES, args))
    return time.perf_counter() - start


def _lever(lever: str) -> tuple[str, str, str]:
    stage_key, _, value = lever.partition("=")
    stage, _, key = stage_key.partition(".")
    return stage, key, value


def ask_all(output_dir: Path, data: Path) -> dict:
    """Each stage's greedy answers to the eval file's questions and the retention questions, as the demo asks."""
    from transformers import AutoModelForCausalLM

    from toyllm.data import load_data
    from toyllm.defaults import CHAT_MAX_NEW_TOKENS
    from toyllm.demo import real_model_chain
    from toyllm.evaluate import ask, contains, right_answers
    from toyllm.generation import normalise
    from toyllm.model import load_weights
    from toyllm.model_source import checkpoint_tokenizer

    rows = load_data(data / "eval.jsonl", "eval").to_list()
    retention = load_data(real_model_chain(str(GGUF), RECIPES).asking.retention_file, "eval").to_list()
    result = {}
    for stage in ("instruct", "sft", "dpo"):
        path = output_dir / stage
        model, tokenizer = load_weights(AutoModelForCausalLM, path).eval(), checkpoint_tokenizer(path)
        answers = ask(model, tokenizer, [r["prompt"] for r in rows + retention], "chat", CHAT_MAX_NEW_TOKENS)
        story, general = answers[: len(rows)], answers[len(rows) :]
        for split in ("trained", "held_out"):
            hits = [normalise(a) == normalise(r["reference"]) for a, r in zip(story, rows) if r["split"] == split]
            result[f"{stage}_{split}"] = sum(hits) / len(hits)
        result[f"{stage}_kept"] = sum(contains(a, right_answers(r)) for a, r in zip(general, retention))
        result[f"{stage}_answers"] = {r["prompt"]: a for r, a in zip(rows + retention, answers)}
    for stage in ("sft", "dpo"):
        result[f"{stage}_retention"] = result[f"{stage}_kept"] / max(result["instruct_kept"], 1)
    return result


def one_run(name: str, source: Path, seed: int, levers: list[str], scratch: Path, demo: bool) -> dict:
    data = data_folder(source, scratch)
    output_dir = scratch / f"{name}-seed{seed}"
    if demo:
        return whole_demo(name, data, output_dir, seed)
    from toyllm.instruct import build_instruct_stage

    build_instruct_stage(str(GGUF), output_dir / "instruct", "instruct", overwrite=True)
    sft_seconds = train("sft", data, output_dir, seed, levers)
    dpo_seconds = train("dpo", data, output_dir, seed, levers)
    return measured(name, seed, output_dir, sft_seconds, dpo_seconds) | ask_all(output_dir, data)


def whole_demo(name: str, data: Path, output_dir: Path, seed: int) -> dict:
    """`toyllm demo --model` itself: the same figures from its metrics.json, and its RL stages' (issue 37's table:
    held-out exact, judge score and word mixtures, trained exact, retention, seconds, answers and the last KL)."""
    from toyllm.demo import real_model_chain, run_demo

    start = time.perf_counter()
    metrics = run_demo(data, output_dir, seed, chain=real_model_chain(str(GGUF), RECIPES))
    stages, seconds = metrics["stages"], metrics["seconds"]
    result = measured(name, seed, output_dir, seconds["sft"], seconds["dpo"]) | {
        "demo_seconds": time.perf_counter() - start
    }
    kept = {stage: values["retention"]["contains"] for stage, values in stages.items()}
    for stage, values in stages.items():
        held_out = values["held_out"]
        result |= {f"{stage}_trained": values["trained"]["exact_match"], f"{stage}_held_out": held_out["exact_match"],
                   f"{stage}_held_out_judge": held_out["mean_reward"],
                   f"{stage}_held_out_mixtures": held_out["word_mixtures"],
                   f"{stage}_retention": kept[stage] / max(kept["instruct"], 1e-9)}  # fmt: skip
    for stage in ("ppo", "rloo"):
        if stage in stages:
            history = json.loads((output_dir / stage / "trainer_state.json").read_text())["log_history"]
            kls = [log.get("objective/kl", log.get("kl")) for log in history if "objective/kl" in log or "kl" in log]
            result |= {f"{stage}_seconds": seconds[stage], f"{stage}_last_kl": kls[-1] if kls else None}
    result["answers"] = metrics["responses"]
    return result


def measured(name: str, seed: int, output_dir: Path, sft_seconds: float, dpo_seconds: float) -> dict:
    """SFT's steps and checks from its trainer_state.json, the seconds, and this process's peak memory."""
    state = json.loads((output_dir / "sft" / "trainer_state.json").read_text())
    checks = [log for log in state["log_history"] if "flashcards/answered" in log]
    return {"data": name, "seed": seed, "sft_steps": state["global_step"], "sft_budget": state["max_steps"],
            "sft_seconds": round(sft_seconds, 1), "dpo_seconds": round(dpo_seconds, 1),
            "sft_checks": [(log["step"], log["flashcards/answered"], log.get("replay/kept"))
                           for log in checks]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=list(FOLDERS), help=f"of {', '.join(FOLDERS)}, or paths")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--set", dest="levers", action="append", default=[], metavar="STAGE.KEY=VALUE")
    parser.add_argument("--out", default="", help="a name for this grid's results file")
    parser.add_argument("--recipes", help="a recipe folder in place of recipes/smollm2-135m/ (as toyllm demo takes)")
    parser.add_argument("--demo", action="store_true", help="run the whole `toyllm demo --model` (RL stages too)")
    parser.add_argument("--one", nargs=2, metavar=("DATA", "SEED"), help=argparse.SUPPRESS)  # a run's own process
    parser.add_argument("--table", nargs="+", metavar="JSON", help="print these results files as a Markdown table")
    parser.add_argument("--scratch", help="the folder of the runs' checkpoints (default: a new temporary one)")
    args = parser.parse_args()
    if args.table:
        print(markdown_table(args.table))
        return
    global RECIPES
    RECIPES = args.recipes
    if args.one:
        name, seed = args.one
        source = FOLDERS.get(name, Path(name))
        result = one_run(Path(name).stem, source, int(seed), args.levers, Path(args.scratch), args.demo)
        result["peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        result["goal_met"] = all(result[key] >= bound for key, bound in GOAL.items())
        print(json.dumps(result))
        return
    if not GGUF.exists():
        sys.exit(f"{GGUF} is missing: make real-model fetches it")
    out = REPO / "benchmarks" / f"real_sft_grid{'-' + args.out if args.out else ''}.json"
    # Each run's checkpoints stay there, for reading; a stage already finished there for the same settings is not
    # trained again (so `--scratch` of an earlier grid and a DPO lever trains DPO alone).
    scratch = Path(args.scratch) if args.scratch else Path(tempfile.mkdtemp(prefix="real-sft-grid-"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    runs = []
    for name in args.data:
        for seed in args.seeds:
            command = [sys.executable, __file__, "--one", name, str(seed), "--scratch", str(scratch)]
            command += [f"--set={lever}" for lever in args.levers]
            command += ["--demo"] if args.demo else []
            command += ["--recipes", args.recipes] if args.recipes else []
            done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
            if done.returncode:
                sys.exit(f"{name} seed {seed} failed:\n{done.stderr[-3000:]}")
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(summary(runs[-1]), flush=True)
            out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "commit": commit.stdout.strip(),
                                       "levers": args.levers, "runs": runs}, indent=1) + "\n")  # fmt: skip
    met = sum(run["goal_met"] for run in runs)
    print(f"goal met on {met} of {len(runs)} runs; {out}")


def markdown_table(paths: list[str]) -> str:
    """The runs of these results files as RESULTS.md's table."""
    lines = ["| data | seed | SFT trained | SFT retention | SFT steps (budget) | SFT s | DPO held-out | DPO retention "
             "| DPO s | peak GB | goal |", "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for path in paths:
        for run in json.loads(Path(path).read_text())["runs"]:
            lines.append(
                f"| {run['data']} | {run['seed']} | {run['sft_trained']:.2f} | {run['sft_retention']:.2f} | "
                f"{run['sft_steps']} ({run['sft_budget']}) | {run['sft_seconds']:.0f} | {run['dpo_held_out']:.2f} | "
                f"{run['dpo_retention']:.2f} | {run['dpo_seconds']:.0f} | {run['peak_mb'] / 1024:.1f} | "
                f"{'met' if run['goal_met'] else 'not met'} |"
            )
    return "\n".join(lines)


def summary(run: dict) -> str:
    return (f"{run['data']:<14} seed {run['seed']}: SFT trained {run['sft_trained']:.2f} retention "
            f"{run['sft_retention']:.2f} ({run['sft_steps']}/{run['sft_budget']} steps, {run['sft_seconds']:.0f}s); "
            f"DPO held-out {run['dpo_held_out']:.2f} retention {run['dpo_retention']:.2f} "
            f"({run['dpo_seconds']:.0f}s); {run['peak_mb']} MB")  # fmt: skip


if __name__ == "__main__":
    main()
