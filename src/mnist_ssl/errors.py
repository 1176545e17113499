"""Exceptions the CLI turns into one line on stderr and exit code 2.

Library code raises these instead of printing or calling ``sys.exit``; only
``cli.py`` decides how a failure reaches the user.
"""


class MnistSSLError(Exception):
    """Base class: a problem the user can fix (bad input, bad config, bad file)."""


class ConfigError(MnistSSLError, ValueError):
    """A configuration value is out of range or inconsistent with another."""


class DataError(MnistSSLError):
    """A data file or folder is missing, corrupt or does not hold what was asked."""


class CheckpointError(MnistSSLError):
    """A checkpoint is missing, truncated, foreign or disagrees with its config."""


class DownloadError(MnistSSLError):
    """A download failed or its checksum did not match."""


class TrainingDiverged(MnistSSLError):
    """A loss became NaN or infinite; training stopped before writing bad weights."""


class WriteFailed(MnistSSLError):
    """A file could not be written (disk full, read-only or forbidden folder); the previous
    version of the file, if there was one, is unchanged and no temporary file is left."""
