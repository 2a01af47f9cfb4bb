"""What differs between the library versions toyllm accepts, in one place: each entry names the library, the
versions and the upstream change, so that dropping a version is an edit here.
"""

from __future__ import annotations

import importlib.util
import os
from importlib.metadata import version

from toyllm.errors import UserError

# TRL removed PPO in 1.13 (`trl.experimental.ppo`, huggingface/trl#7020); 1.12.0 is the last release that has it.
# toyllm accepts TRL from 1.12.0 on: with a later one every stage but PPO runs, and RLOO is its online RL.
PPO_MODULE = "trl.experimental.ppo"
LAST_TRL_WITH_PPO = "1.12.0"

# TRL warns (TRLExperimentalWarning) on every import of `trl.experimental`, where 1.12's PPO lives and where looking
# for it imports: we pin the last release that has it on purpose, so the warning tells our users nothing.
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def has_module(name: str) -> bool:
    """True when `name` can be imported (a missing parent package counts as missing)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def missing_module_reason(name: str) -> str:
    """One line saying why a stage's module is missing and what to install: only PPO's can be, today."""
    if name == PPO_MODULE:
        return (f"TRL {version('trl')} has no PPO (removed in TRL 1.13); pip install trl=={LAST_TRL_WITH_PPO} for it "
                "(make does: TRL in the Makefile), or use the rloo stage")  # fmt: skip
    return f"{name} cannot be imported"


def require_module(name: str) -> None:
    """A UserError, one line, when a stage's module is missing from the installed libraries."""
    if not has_module(name):
        raise UserError(missing_module_reason(name))
