"""How long `toyllm app` takes to answer a question in every column of a finished run.

    python benchmarks/app_latency.py [--output-dir outputs/toy] [--output benchmarks/app_latency.json]

Every question of the run's eval file is asked once greedily (as a click on "Ask") and once with the sample switch
(4 answers a column); the figures are the server side of a click: the models' answers and the judge's scores. The
browser test (tests/test_wheel.py) prints the same from click to page.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from demo_time import machine  # noqa: E402

from toyllm.app import RunApp  # noqa: E402


def timings(run: RunApp, questions: list[str], **options) -> list[float]:
    seconds = []
    for question in questions:
        start = time.perf_counter()
        run.ask(question, **options)
        seconds.append(time.perf_counter() - start)
    return seconds


def summary(seconds: list[float]) -> dict:
    return {"median_s": round(statistics.median(seconds), 3), "max_s": round(max(seconds), 3), "asked": len(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="outputs/toy", help="the finished run")
    parser.add_argument("--output", default=str(Path(__file__).with_name("app_latency.json")))
    args = parser.parse_args()
    start = time.perf_counter()
    run = RunApp(args.output_dir)
    load = time.perf_counter() - start
    questions = [row["prompt"] for row in run.metrics["responses"]]
    run.ask(questions[0])  # the first call pays for lazy initialisation, as the page's first click does
    record = {
        "machine": machine(),
        "run": args.output_dir,
        "columns": [c.name for c in run.columns],
        "load_s": round(load, 2),
        "greedy": summary(timings(run, questions)),
        "sampled_4": summary(timings(run, questions, sample=True, samples=4)),
    }
    print(json.dumps(record, indent=2))
    Path(args.output).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
