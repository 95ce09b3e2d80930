"""One exception family for everything a user can get wrong.

Every message names the file, row or field at fault and what was expected, so
that a researcher pointing the book at a half-downloaded dataset knows what to fix.
"""
from __future__ import annotations


class VisionCLIPError(Exception):
    """Base of every error this library raises on bad input."""


class ConfigError(VisionCLIPError):
    """A profile or parameter is unknown, of the wrong type or out of range."""


class DataError(VisionCLIPError):
    """A dataset, manifest, CSV row or image is missing or malformed."""


class CheckpointError(VisionCLIPError):
    """A checkpoint or saved model is missing, truncated or of another configuration."""


class TrainingError(VisionCLIPError):
    """Training cannot continue (for example, too many non-finite steps in a row)."""
