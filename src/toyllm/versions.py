"""What differs between the library versions toyllm accepts, and the workarounds for the pinned ones, in one place:
each entry names the library, the versions and the upstream behaviour, so that dropping a version is an edit here.
(PPO's own workarounds live with it in toyllm.ppo; the library messages silenced, in toyllm.quiet.)
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


def allow_padding_free(training_args) -> None:
    """TRL 1.12 refuses `padding_free` with a `max_length` unless it packs, because it then truncates nothing. Every
    row of a local file was checked against max_length as it was read (a replay prompt with room for its answer), so
    none needs truncating: max_length is dropped once the rows are loaded. Rows of a Hub dataset are trained whole."""
    if training_args.padding_free and not training_args.packing:
        training_args.max_length = None
