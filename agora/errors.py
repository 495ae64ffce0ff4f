"""Errors a user can act on.

Every error raised for bad input says which file, which key or row, and what to do about it.
They all derive from :class:`AgoraError` so scripts can catch them in one place, and the CLI
prints them without a traceback.
"""


class AgoraError(Exception):
    """Base class of every error caused by the user's input (recipe, task card, data, model)."""


class RecipeError(AgoraError, ValueError):
    """A recipe (or one of its overrides) is malformed: unknown key, wrong type, bad value."""


class TaskError(AgoraError, ValueError):
    """A task card is unknown or malformed."""


class DataError(AgoraError, ValueError):
    """Benchmark files are missing, empty, or contain rows that do not fit the task card."""


class ModelError(AgoraError, ValueError):
    """A model or tokenizer cannot be found or does not fit the task."""


class HubError(AgoraError, RuntimeError):
    """The Hugging Face Hub refused or could not take an upload (not logged in, no access, offline)."""
