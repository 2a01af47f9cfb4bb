"""The benchmark scripts work the first time: the GPU ones at micro size on the CPU, the grid's `--set` on a copy,
the SFT reach check and the PPO-against-RLOO comparison on one small run each."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

from gpu_common import flops_per_token, peak_flops  # noqa: E402


@pytest.mark.parametrize(
    "script, line",
    [("gpu_pretrain", "pretrain, GPT-2 small shape (micro) on cpu: "), ("gpu_sft", "SFT, Qwen2.5-0.5B shape (micro) "
     "on cpu: "), ("gpu_ppo", "PPO, toy (micro) on cpu: ")],
)  # fmt: skip
def test_benchmark_micro_run(script, line, tmp_path):
    output = tmp_path / "result.json"
    extra = ["--output", str(output)]
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{script}.py"), "--micro", *extra],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert line in result.stdout
    measured = json.loads(output.read_text())
    assert measured["device"] == "cpu"
    rate = measured.get("tokens_per_s") or measured.get("episodes_per_s")
    assert rate > 0


def test_mfu_uses_nanogpt_count_and_a_known_peak():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=32, vocab_size=128))
    n = sum(p.numel() for p in model.parameters()) - 32 * 64  # without the position embeddings
    assert flops_per_token(model, 32) == 6 * n + 12 * 2 * 4 * 16 * 32
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("cpu") is None


def test_story_grid_edits_only_a_copy_of_the_toy_yamls(tmp_path):
    from story_grid import edited_recipes

    from toyllm.resources import RECIPES_DIR

    shipped = (RECIPES_DIR / "toy" / "ppo.yaml").read_text()
    folder = edited_recipes(["ppo.kl_coef=0.1", "sft.neftune_noise_alpha=5"], tmp_path / "recipes")
    ppo = (folder / "toy" / "ppo.yaml").read_text()
    assert "kl_coef: 0.1 " in ppo and "kl_coef: 0.3" not in ppo
    assert (folder / "toy" / "sft.yaml").read_text().endswith("neftune_noise_alpha: 5\n")  # added where missing
    assert (RECIPES_DIR / "toy" / "ppo.yaml").read_text() == shipped
    with pytest.raises(SystemExit, match="no recipe 'pp0'"):
        edited_recipes(["pp0.kl_coef=0.1"], tmp_path / "other")


def test_story_grid_summary_counts_the_runs_levers_are_compared_by():
    from story_grid import summary

    def run(ppo: float, passed: bool) -> dict:
        return {"held_out_exact": {"ppo": ppo, "dpo": 1.0}, "checks": {"a": True, "b": passed}}

    figures = summary([run(0.5, True), run(0.4, False), run(0.75, False)])
    assert figures == {"runs": 3, "ppo_held_out_at_least_half": 2, "ppo_held_out_mean": 0.55, "every_check": 1}


# The two research scripts below each train a whole story (31 s and 59 s on 2 cores): kept out of `make test`'s ten
# minutes and of .ci/run's thirty, they run with the slow story grid (`pytest -m slow`).
@pytest.mark.slow
def test_sft_reach_counts_each_held_out_question(tmp_path):
    output = tmp_path / "reach.json"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "sft_reach.py"), "--stories",
                             "tests/data/pinocchio", "--seeds", "0", "--samples", "8", "--output", str(output)],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = json.loads(output.read_text())["runs"]
    held_out = run["held_out"]
    assert run["trained"]["exact_match"] == 1.0  # the SFT the demo trains, not a half-trained stand-in
    assert len(held_out["questions"]) == len(held_out["hits"]) == len(held_out["reference_logprob"]) == 4
    assert all(0 <= hits <= 8 for hits in held_out["hits"])
    assert all(logprob < 0 for logprob in held_out["reference_logprob"])


@pytest.mark.slow
def test_rl_methods_measures_ppo_and_rloo_from_the_same_start(tmp_path):
    output = tmp_path / "rl_methods.json"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "rl_methods.py"), "--stories",
                             "tests/data/pinocchio", "--seeds", "0", "--set", "ppo.total_episodes=64",
                             "rloo.max_steps=4", "--output", str(output)],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(output.read_text())
    (run,) = record["runs"]
    for name in ("ppo", "rloo"):
        assert run[name]["trained_exact"] > 0  # trained from SFT, not from the random model
        assert 0 <= run[name]["held_out_exact"] <= 1 and isinstance(run[name]["goal"], bool)
        assert record["summary"][name]["runs"] == 1
