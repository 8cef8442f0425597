"""Where the tests find the repository: without the lab (lab/ is the lab tests' and the bench's tooling)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
