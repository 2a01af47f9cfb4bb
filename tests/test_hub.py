"""Pushing to the Hub, without the network: HfApi is intercepted, and what it would send is checked file by file.

A fake token is planted in HF_TOKEN: it must reach HfApi and nothing else (no file written, no output).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import ALICE, REPO
from huggingface_hub import HfApi, RepoUrl
from huggingface_hub.hf_api import DEFAULT_IGNORE_PATTERNS
from huggingface_hub.utils import filter_repo_objects
from toyllm.recipes import sft

from toyllm import cli
from toyllm.args import parse_recipe_args
from toyllm.card import Made, recipe_command, write_model_card
from toyllm.errors import UserError
from toyllm.toy import build_random_checkpoint

FAKE_TOKEN = "hf_FAKEtokenPlantedByTest0123456789abcdef"
REPO_ID = "alice/toyllm-sft"
# What the Hub needs to serve the model: weights, config, tokenizer with chat template, generation config, card.
HUB_FILES = {
    "model.safetensors", "config.json", "generation_config.json",
    "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "README.md",
}  # fmt: skip


def snapshot(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def files_with_token(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and FAKE_TOKEN.encode() in p.read_bytes()]


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """A finished stage folder, with the local bookkeeping a recipe leaves next to the Hub files."""
    folder = build_random_checkpoint(ALICE, REPO / "toy_config", tmp_path / "sft", seed=0)
    write_model_card(folder, Made("sft", "SFTTrainer", command="python recipes/sft.py"))
    (folder / "trainer_state.json").write_text("{}\n")
    (folder / "toyllm_stage.json").write_text('{"stage": "sft", "fingerprint": "0"}\n')
    (folder / "training_args.bin").write_bytes(b"a pickle that may hold hub_token")
    (folder / "checkpoint-50").mkdir()
    (folder / "checkpoint-50" / "model.safetensors").write_bytes(b"resume state")
    (folder / ".saving").mkdir()
    (folder / ".saving" / "config.json").write_text("{}")
    return folder


@pytest.fixture
def hub(monkeypatch) -> list[tuple[str, dict]]:
    """HfApi.create_repo and upload_folder replaced by recorders; upload_folder filters the folder exactly as the
    real one does (our ignore patterns plus huggingface_hub's defaults) to name the files it would send."""
    calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, *, token=None, private=None, repo_type=None, exist_ok=False, **kwargs):
        calls.append(("create_repo", {"repo_id": repo_id, "private": private, "token": token or self.token}))
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, allow_patterns=None, ignore_patterns=None, token=None, **kw):
        folder = Path(folder_path)
        relpaths = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file()]
        ignore = [*(ignore_patterns or []), *DEFAULT_IGNORE_PATTERNS]
        files = set(filter_repo_objects(relpaths, allow_patterns=allow_patterns, ignore_patterns=ignore))
        readme = (folder / "README.md").read_text() if "README.md" in files else None
        record = {"repo_id": repo_id, "files": files, "readme": readme, "token": token or self.token, **kw}
        calls.append(("upload_folder", record))
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


@pytest.fixture
def token(monkeypatch) -> str:
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    return FAKE_TOKEN


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "no-token-here"))


@pytest.mark.parametrize("private", [True, False])
def test_push_sends_exactly_the_hub_files(checkpoint, hub, token, capfd, private):
    before = snapshot(checkpoint)
    argv = ["push", "--model", str(checkpoint), "--repo-id", REPO_ID] + (["--private"] if private else [])
    assert cli.main(argv) == 0

    assert [name for name, _ in hub] == ["create_repo", "upload_folder"]
    (_, repo), (_, upload) = hub
    assert repo["repo_id"] == REPO_ID and upload["repo_id"] == REPO_ID
    assert repo["private"] is (True if private else None)  # None: the account's default visibility
    assert upload["files"] == HUB_FILES  # no checkpoint-*, trainer_state, stage marker, training_args.bin, .saving
    assert repo["token"] == upload["token"] == token  # handed to huggingface_hub ...
    out, err = capfd.readouterr()
    assert token not in out + err  # ... and nowhere else
    assert files_with_token(checkpoint) == []
    assert snapshot(checkpoint) == before  # pushing only reads the folder


def test_push_without_token_is_one_line_and_leaves_the_checkpoint(checkpoint, hub, no_token, capfd):
    before = snapshot(checkpoint)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["push", "--model", str(checkpoint), "--repo-id", REPO_ID])
    assert exit_info.value.code == 2
    err = capfd.readouterr().err
    assert err.strip().splitlines() == [
        "error: no Hugging Face token: run `hf auth login` or set HF_TOKEN to a token with write access"
    ]
    assert hub == []
    assert snapshot(checkpoint) == before


def test_push_without_token_from_the_command_line(checkpoint, tmp_path):
    """The installed `toyllm push`, as a user runs it: exit code, one line on stderr, no traceback."""
    env = {k: v for k, v in os.environ.items() if k not in {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"}}
    env |= {"HF_TOKEN_PATH": str(tmp_path / "no-token-here"), "HF_HUB_OFFLINE": "1"}
    toyllm = Path(sys.executable).with_name("toyllm")
    result = subprocess.run(
        [str(toyllm), "push", "--model", str(checkpoint), "--repo-id", REPO_ID],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: no Hugging Face token: run `hf auth login` or set HF_TOKEN to a token with write access"
    ]


def test_push_without_network_is_one_line(checkpoint, hub, token, monkeypatch, capfd):
    from httpx2 import ConnectError

    def unreachable(self, repo_id, **kwargs):
        raise ConnectError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(HfApi, "create_repo", unreachable)
    before = snapshot(checkpoint)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["push", "--model", str(checkpoint), "--repo-id", REPO_ID])
    assert exit_info.value.code == 2
    out, err = capfd.readouterr()
    assert err.strip().splitlines() == [
        f"error: push to {REPO_ID} failed: ConnectError: [Errno -3] Temporary failure in name resolution"
    ]
    assert token not in out + err
    assert snapshot(checkpoint) == before


def test_push_of_a_folder_that_is_not_a_checkpoint(tmp_path, hub, token, capfd):
    with pytest.raises(SystemExit):
        cli.main(["push", "--model", str(tmp_path / "missing"), "--repo-id", REPO_ID])
    assert capfd.readouterr().err.strip().splitlines() == [f"error: {tmp_path / 'missing'}: no such checkpoint folder"]
    assert hub == []


def sft_args(checkpoint: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--config", str(REPO / "recipes/toy/sft.yaml"), "--model_name_or_path", str(checkpoint),
        "--dataset_name", str(ALICE / "sft.jsonl"), "--output_dir", str(output_dir),
        "--num_train_epochs", "1", "--save_strategy", "no", *extra,
    ]  # fmt: skip


def test_recipe_push_to_hub_sends_our_checkpoint(checkpoint, hub, token, tmp_path, capfd, monkeypatch):
    """`push_to_hub: true` + `hub_model_id` in a recipe: the finished folder goes up once, with our model card."""
    monkeypatch.setattr(sys, "argv", ["recipes/sft.py", "--config", "recipes/toy/sft.yaml", "--push_to_hub", "true"])
    output_dir = tmp_path / "out"
    args = parse_recipe_args(
        sft.ARGUMENT_TYPES,
        sft_args(checkpoint, output_dir, "--push_to_hub", "true", "--hub_model_id", REPO_ID,
                 "--hub_private_repo", "true"),
    )  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sft.main(*args)
    finally:
        torch.set_num_threads(threads)

    creates = [call for name, call in hub if name == "create_repo"]
    uploads = [call for name, call in hub if name == "upload_folder"]
    assert creates and all(c["repo_id"] == REPO_ID and c["private"] is True for c in creates)
    assert len(uploads) == 1  # the finished folder only: not the scratch save, not twice
    assert uploads[0]["repo_id"] == REPO_ID
    assert uploads[0]["files"] == HUB_FILES
    assert "# toyllm — stage `sft`" in uploads[0]["readme"]  # our card, not TRL's generic one
    assert (output_dir / "toyllm_stage.json").is_file()
    out, err = capfd.readouterr()
    assert token not in out + err
    assert files_with_token(tmp_path) == []


def test_recipe_push_to_hub_without_token_stops_before_training(checkpoint, no_token, tmp_path):
    with pytest.raises(UserError, match="no Hugging Face token"):
        parse_recipe_args(sft.ARGUMENT_TYPES, sft_args(checkpoint, tmp_path / "out", "--push_to_hub", "true"))


def test_model_card_command_hides_a_token_passed_on_the_command_line(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["recipes/sft.py", "--hub_token", FAKE_TOKEN, f"--hub_token={FAKE_TOKEN}"])
    command = recipe_command()
    assert FAKE_TOKEN not in command
    assert command == "python recipes/sft.py --hub_token '***' '--hub_token=***'"


def test_model_card_command_of_a_two_process_run_keeps_the_process_count(monkeypatch):
    """Re-running a DDP card's command without --num_processes would halve the global batch."""
    monkeypatch.setattr(sys, "argv", ["recipes/sft.py", "--config", "recipes/toy/sft.yaml"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert recipe_command() == "accelerate launch --num_processes 2 recipes/sft.py --config recipes/toy/sft.yaml"


def test_recipe_push_to_hub_offline_trains_first_and_fails_in_one_line_at_the_end(checkpoint, token, tmp_path,
                                                                                    monkeypatch):  # fmt: skip
    """README: the push happens once, at the end. Without network the stage still trains and saves; the push is one
    line (the Trainer no longer creates the repository in its __init__)."""
    from httpx2 import ConnectError

    def unreachable(self, repo_id, **kwargs):
        raise ConnectError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(HfApi, "create_repo", unreachable)
    output_dir = tmp_path / "out"
    args = parse_recipe_args(sft.ARGUMENT_TYPES, sft_args(checkpoint, output_dir, "--push_to_hub", "true",
                                                          "--hub_model_id", REPO_ID))  # fmt: skip
    with pytest.raises(UserError, match=f"push to {REPO_ID} failed: ConnectError"):
        sft.main(*args)
    assert (output_dir / "toyllm_stage.json").is_file()  # trained and saved before the push was tried
