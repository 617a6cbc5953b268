"""fracsight: bone fracture detection in X-ray radiographs (a decision aid, not a diagnosis)."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
