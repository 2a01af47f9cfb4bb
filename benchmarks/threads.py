"""The toy PPO stage's episodes/s at each intra-op thread count, on a quiet machine and beside busy neighbours.

    python benchmarks/threads.py [--demo-dir outputs/toy] [--threads 1 2] [--neighbours 0 1 2]

Each cell is benchmarks/ppo_throughput.py in a fresh process with `OMP_NUM_THREADS` set (what torch reads at start),
while N neighbour processes multiply matrices with torch's default threads, as other jobs on a shared machine do.
The figures decide the thread count toyllm picks for a toy-sized model (`toyllm.model.fit_threads`); an
`OMP_NUM_THREADS` of your own always wins.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NEIGHBOUR = "import torch\na = torch.randn(512, 512)\nwhile True:\n    a = torch.tanh(a @ a)\n"


def main() -> None:
    from demo_time import machine  # benchmarks/ is the script's own folder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-dir", help="a finished `toyllm demo` output folder (default: make one)")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--neighbours", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=512)
    parser.add_argument("--output", default=str(HERE / "threads.json"))
    args = parser.parse_args()

    cells = []
    with tempfile.TemporaryDirectory() as tmp:
        demo_dir = args.demo_dir
        if demo_dir is None:
            from toyllm.demo import run_demo

            demo_dir = str(Path(tmp) / "demo")
            run_demo(HERE.parent / "data", demo_dir, seed=0)
        for neighbours in args.neighbours:
            for threads in args.threads:
                busy = [subprocess.Popen([sys.executable, "-c", NEIGHBOUR]) for _ in range(neighbours)]
                try:
                    time.sleep(2 if busy else 0)  # the neighbours at full speed before the clock starts
                    output = Path(tmp) / f"ppo-{threads}-{neighbours}.json"
                    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
                    subprocess.run([sys.executable, str(HERE / "ppo_throughput.py"), "--demo-dir", demo_dir,
                                    "--episodes", str(args.episodes), "--output", str(output)],
                                   check=True, env=env, capture_output=True)  # fmt: skip
                finally:
                    for process in busy:
                        process.kill()
                        process.wait()
                result = json.loads(output.read_text())
                cells.append({"threads": threads, "neighbours": neighbours, "episodes_per_s": result["episodes_per_s"],
                              "train_seconds": result["train_seconds"]})  # fmt: skip
                print(f"threads {threads}, {neighbours} busy neighbours: {result['episodes_per_s']:.0f} episodes/s "
                      f"({result['train_seconds']:.1f} s for {args.episodes})", flush=True)  # fmt: skip
    Path(args.output).write_text(json.dumps({"machine": machine(), "episodes": args.episodes, "cells": cells},
                                            indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
