"""The version of the lambdarun distribution (one place: ``lambdarun.__version__`` re-exports it)."""

__version__ = "0.1.0"
