"""Optional dependencies (pyproject's extras): where one is missing, a one-line error naming
the extra to install instead of an ImportError deep in a run."""

import importlib.util

from .errors import UserError


def missing(module: str, extra: str, needed_by: str, instead: str = "") -> str | None:
    """The one-line problem and fix when ``module`` (of extra ``extra``) is not importable,
    else None. Finds the module without importing it."""
    try:
        if importlib.util.find_spec(module) is not None:
            return None
    except (ImportError, ValueError):  # a parent package missing, or a module set to None
        pass
    alt = f" (or use {instead})" if instead else ""
    return (f"{needed_by} needs {module}, which is not installed; "
            f"pip install 'maxent_lightning[{extra}]'{alt}")


def require(module: str, extra: str, needed_by: str, instead: str = "") -> None:
    """Raise the UserError of :func:`missing` when ``module`` is not importable."""
    if (problem := missing(module, extra, needed_by, instead)) is not None:
        raise UserError(problem)
