"""The one error type users see: every failure advlab can explain is an AdvlabError."""


class AdvlabError(Exception):
    """Base class of every error advlab raises on purpose (bad input, bad files, bad config)."""


class DataError(AdvlabError):
    """A dataset file is missing, truncated, corrupted or of the wrong format."""


class ConfigError(AdvlabError):
    """A configuration key is unknown or its value is invalid."""


class CheckpointError(AdvlabError):
    """A checkpoint cannot be read or does not match the model."""


class AdvlabDeprecationWarning(FutureWarning):
    """Something renamed by this release (a config key or value, a unit, a flag) was read; the message says what
    to write instead. Shown by default; the command line prints it as one line."""
