"""lambdarun hooks of the temporal backend (registered through the ``lambdarun`` entry point)."""

from __future__ import annotations
