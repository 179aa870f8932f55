"""Graph -> Graph rewrites applied before export (opt-in: ``convert --optimize``)."""

from __future__ import annotations

from .pipeline import optimize

__all__ = ["optimize"]
