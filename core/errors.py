"""The small exception hierarchy of HandTwin.

Every error the engine raises on purpose derives from :class:`HandTwinError`, so the command
line and the GUI can turn it into one clear message instead of a traceback.
"""

from __future__ import annotations


class HandTwinError(Exception):
    """Base class of every error HandTwin raises on purpose."""


class ModelFileError(HandTwinError):
    """A hand model file is missing, malformed, or not what it claims to be."""


class UnsafePickleError(ModelFileError):
    """A pickle asked for a class outside the allow-list (it could run code)."""


class InputError(HandTwinError):
    """Bad user input: a missing camera, unreadable video, malformed intrinsics or profile."""


class ExportError(HandTwinError):
    """An export could not be written (for example an unwritable folder)."""


class Cancelled(HandTwinError):
    """A long operation stopped because its caller asked it to (a Cancel button); nothing
    it would have produced was kept."""
