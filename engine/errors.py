"""Which exceptions are the user's input (one clear line) and which are failures."""

from __future__ import annotations

from collections.abc import Callable


def is_user_error(e: BaseException) -> bool:
    """True for errors caused by bad input: data, config, run directories, diverged training."""
    from engine.models import ModelError
    from engine.options import ParamError
    from engine.runs import RunError
    from engine.sgd import TrainingDiverged

    # ConfigError and DataError are ParamErrors
    return isinstance(e, ParamError | ModelError | RunError | TrainingDiverged | FileNotFoundError)


def user_message(e: BaseException, *, spell: Callable[[str], str] | None = None) -> str:
    """The one line a person reads for a user error; `spell` renames the parameter a ParamError
    is about (engine.options.flag on the CLI, engine.options.label_of in the app)."""
    from engine.options import ParamError

    if spell is not None and isinstance(e, ParamError) and e.param:
        return e.named(spell(e.param))
    return str(e) or type(e).__name__


_STORAGE_ERRNOS = {"ENOSPC": "the disk is full", "EDQUOT": "the disk quota is exceeded",
                   "EACCES": "permission denied", "EPERM": "operation not permitted",
                   "EROFS": "the file system is read-only"}  # fmt: skip


def storage_error_message(e: BaseException) -> str | None:
    """One clear line for a disk-full / permission error while saving, else None.

    Every artifact is written atomically (engine.runs), so the files saved before the error are
    intact; the line says so and how to go on."""
    import errno

    if not isinstance(e, OSError) or e.errno is None:
        return None
    what = next(
        (txt for name, txt in _STORAGE_ERRNOS.items() if getattr(errno, name, None) == e.errno),
        None,
    )
    if what is None:
        return None
    where = f" on {e.filename}" if e.filename else ""
    return (
        f"{what}{where} ({e.strerror}); nothing saved before was changed: free some space or fix "
        "the permissions, then run the command again (`retracer resume --run-dir ...` continues "
        "an interrupted training run from its last checkpoint)"
    )
