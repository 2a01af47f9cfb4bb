"""A user's mistake is one line per problem and exit code 2; Ctrl-C is exit code 130; a bug is a traceback."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it
RESUME_HINT = "run the same command with --resume to continue from the last saved checkpoint"


class UserError(Exception):
    """A mistake in the user's files or settings: reported as lines of text, never as a traceback."""

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


@contextlib.contextmanager
def exit_on_user_error(resume_hint: str | None = RESUME_HINT) -> Iterator[None]:
    """A user's mistake ends the process with its message and exit code 2; Ctrl-C exits 130, saying how to go on."""
    try:
        yield
    except UserError as error:
        for problem in error.problems:
            print(f"error: {problem}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        hint = f": finished checkpoints are kept; {resume_hint}." if resume_hint else ""
        print(f"\ninterrupted{hint}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


@contextlib.contextmanager
def from_hub(key: str, name: str) -> Iterator[None]:
    """Loading `name` (a local path or a Hub id): where it is no local path and the Hub cannot give it (offline, no
    such repository, no access), one line instead of transformers' or datasets' page of traceback."""
    try:
        yield
    except OSError as error:  # ConnectionError, and transformers' "couldn't connect" / "not a valid model id"
        if os.path.exists(name):
            raise
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"{key}: {name} is no local path and the Hub did not give it ({reason}); fix the path, or check the "
            "network and your login (HF_HUB_OFFLINE=1 reads only what is cached)"
        ) from None
