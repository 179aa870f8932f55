"""Where the tests and the repository are, whatever folder a test file sits in."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
