"""Pushing a checkpoint folder to the Hugging Face Hub: `toyllm push`, and `push_to_hub: true` in any recipe.

    toyllm push --model outputs/toy/sft --repo-id your-name/toyllm-sft [--private]

What goes up is what `from_pretrained` and the Hub page need: the safetensors weights, config, tokenizer files with
the chat template, generation config and the model card (README.md). Local bookkeeping stays local: Trainer
checkpoints, `trainer_state.json`, the stage marker, and `training_args.bin`, a pickle of the training arguments that
holds `hub_token` when one was passed on the command line.

The token comes from `HF_TOKEN` or `hf auth login`; it is handed to `huggingface_hub` and never printed or written.
"""

from __future__ import annotations

import logging
from pathlib import Path

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError

from toyllm.errors import UserError

try:  # huggingface_hub 2.x talks HTTP through httpx2, 1.x through httpx
    from httpx2 import HTTPError as _TransportError
except ImportError:  # pragma: no cover
    from httpx import HTTPError as _TransportError

logger = logging.getLogger(__name__)

# Left out of every push (fnmatch patterns on paths relative to the folder, as `upload_folder` reads them).
LOCAL_ONLY = [
    "checkpoint-*", "checkpoint-*/**",   # Trainer checkpoints, for --resume
    ".*", "**/.*",                      # scratch and temporary files
    "runs/**", "logs/**",               # tensorboard and stage logs
    "training_args.bin",                # a pickle that can hold hub_token
    "*.pt", "*.pth", "*.bin",           # pickled tensors: the weights go up as safetensors only
    "trainer_state.json", "toyllm_stage.json", "toyllm_run.json",
]  # fmt: skip
NO_TOKEN = "no Hugging Face token: run `hf auth login` or set HF_TOKEN to a token with write access"


def require_token(token: str | None = None) -> str:
    """The token to push with (an explicit one, else HF_TOKEN or the one saved by `hf auth login`)."""
    token = token or get_token()
    if not token:
        raise UserError(NO_TOKEN)
    return token


def check_hub_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise UserError(f"{folder}: no such checkpoint folder")
    if not any(folder.glob("*.safetensors")) or not (folder / "config.json").is_file():
        raise UserError(f"{folder}: not a finished checkpoint (no safetensors weights and config.json)")


def push_folder(
    folder: str | Path,
    repo_id: str,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload toyllm checkpoint",
) -> str:
    """Create `repo_id` if needed and upload the checkpoint in `folder`; return the commit URL.

    Network and permission failures become a UserError of one line; the local folder is only read.
    """
    folder = Path(folder)
    check_hub_folder(folder)
    token = require_token(token)
    api = HfApi(token=token)
    try:
        repo = api.create_repo(repo_id=repo_id, private=private, repo_type="model", exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo.repo_id,
            folder_path=str(folder),
            repo_type="model",
            commit_message=commit_message,
            ignore_patterns=list(LOCAL_ONLY),  # upload_folder appends its own defaults to the list it gets
        )
    except HfHubHTTPError as error:
        status = getattr(error.response, "status_code", None)
        reason = {401: "the token was refused", 403: "the token may not write to this repository"}.get(status)
        raise UserError(f"push to {repo_id} failed: {reason or str(error).splitlines()[0]}") from None
    except (_TransportError, OSError, ValueError) as error:  # no network, offline mode, a malformed repo id
        raise UserError(f"push to {repo_id} failed: {type(error).__name__}: {str(error).splitlines()[0]}") from None
    logger.info(f"Pushed {folder} to https://huggingface.co/{repo.repo_id}")
    return str(getattr(commit, "commit_url", commit))
