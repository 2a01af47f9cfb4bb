"""Wall time of `toyllm demo` and of each of its stages, start-up and imports included; median of N runs.

    python benchmarks/demo_time.py [--runs 3] [--output benchmarks/demo_time.json]

Each run is a fresh `toyllm demo` process, timed from outside; per-stage seconds come from the run's metrics.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from importlib.metadata import version
from pathlib import Path

GOAL_SECONDS = 60.0


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "date": date.today().isoformat()}
    for package in ("torch", "transformers", "trl", "accelerate", "datasets"):
        info[package] = version(package)
    try:
        import torch

        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["gpu"] = None
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", default=str(Path(__file__).with_name("demo_time.json")))
    args = parser.parse_args()
    toyllm = Path(sys.executable).with_name("toyllm")

    walls, stage_seconds = [], []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as output_dir:
            start = time.perf_counter()
            subprocess.run([str(toyllm), "demo", "--output-dir", output_dir], check=True, capture_output=True)
            walls.append(time.perf_counter() - start)
            stage_seconds.append(json.loads((Path(output_dir) / "report" / "metrics.json").read_text())["seconds"])
        print(f"run {run + 1}/{args.runs}: {walls[-1]:.1f}s", flush=True)

    stages = {name: statistics.median(s[name] for s in stage_seconds) for name in stage_seconds[0]}
    result = {"machine": machine(), "runs": args.runs, "wall_seconds": walls, "median_wall_seconds":
              statistics.median(walls), "goal_seconds": GOAL_SECONDS, "median_stage_seconds": stages}  # fmt: skip
    print("\n| what | median seconds |\n|---|---|")
    for name, seconds in stages.items():
        print(f"| {name} | {seconds:.2f} |")
    print(f"| **toyllm demo, wall** | **{result['median_wall_seconds']:.1f}** (goal ≤ {GOAL_SECONDS:.0f}) |")
    print(f"\n{result['machine']}")
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
