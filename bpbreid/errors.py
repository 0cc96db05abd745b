"""Errors meant for people: the CLI prints their message instead of a traceback."""

from __future__ import annotations


class BPBReIDError(Exception):
    """Base class of the errors this package raises on bad input or missing files."""


class ConfigError(BPBReIDError, ValueError):
    """A configuration file or override is invalid (unknown key, wrong type, bad value).

    Also a ``ValueError``, as it was before it joined this hierarchy.
    """


class DatasetError(BPBReIDError):
    """A dataset folder, image or label file is missing or malformed."""


class LabelError(DatasetError):
    """A parsing-label file is missing, unreadable or has the wrong shape or values."""


class DownloadError(BPBReIDError):
    """An optional download failed (offline, or the remote file moved)."""


class CheckpointError(BPBReIDError):
    """A checkpoint is missing, corrupt or does not match the model."""


class TrainingError(BPBReIDError):
    """Training stopped on a NaN/inf loss or another unrecoverable condition."""
