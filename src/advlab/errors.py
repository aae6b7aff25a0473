"""The one error type users see: every failure advlab can explain is an AdvlabError."""


class AdvlabError(Exception):
    """Base class of every error advlab raises on purpose (bad input, bad files, bad config)."""


class DataError(AdvlabError):
    """A dataset file is missing, truncated, corrupted or of the wrong format."""


class ConfigError(AdvlabError):
    """A configuration key is unknown or its value is invalid."""


class CheckpointError(AdvlabError):
    """A checkpoint cannot be read or does not match the model."""
