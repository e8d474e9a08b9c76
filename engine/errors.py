"""Which exceptions are the user's input (one clear line) and which are failures."""

from __future__ import annotations


def is_user_error(e: BaseException) -> bool:
    """True for errors caused by bad input: data, config, run directories, diverged training."""
    from engine.config import ConfigError
    from engine.data.manifest import DataError
    from engine.models import ModelError
    from engine.runs import RunError
    from engine.sgd import TrainingDiverged

    return isinstance(
        e, DataError | ConfigError | ModelError | RunError | TrainingDiverged | FileNotFoundError
    )
