"""Errors that every layer raises (a leaf module: it imports nothing of ovlift)."""


class StageInputError(ValueError):
    """Bad input data; the message names the scene, frame and array."""
