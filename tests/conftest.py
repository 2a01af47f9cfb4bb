from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ALICE = REPO / "data"
OZ = Path(__file__).resolve().parent / "data" / "oz"
DATASETS = {"alice": ALICE, "oz": OZ}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> tuple[Path, dict]:
    """One full demo on the shipped data, seed 0: the checkpoints every stage test looks at."""
    from toyllm.demo import run_demo

    output_dir = tmp_path_factory.mktemp("demo")
    metrics = run_demo(ALICE, output_dir, seed=0)
    return output_dir, metrics
