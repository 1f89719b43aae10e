"""tensor op kinds (placeholder for the family; see graph/ops/__init__.py)."""

from __future__ import annotations
