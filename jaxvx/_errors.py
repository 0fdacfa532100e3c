"""Exceptions raised by jaxvx. Each is a ``ValueError`` so that callers that catch bad input generically still work."""

__all__ = ["VideoError", "CheckpointError"]


class VideoError(ValueError):
    """A video file is missing, unreadable, empty, or cannot be written.

    The message always names the path and the reason.
    """


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not fit the architecture it claims."""
