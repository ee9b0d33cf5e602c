"""Errors that every layer raises, and how their messages list names (a leaf module: it
imports nothing of ovlift)."""


class StageInputError(ValueError):
    """Bad input data; the message names the scene, frame and array."""


def name_list(names: list[str], limit: int = 10) -> str:
    """``names`` for an error message: the first ``limit`` and how many in all (stores can hold thousands)."""
    if not names:
        return "(none)"
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"
