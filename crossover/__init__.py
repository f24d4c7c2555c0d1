"""crossover: serve a trained image model on the AWS backend that fits its traffic."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""The checkout: app.py, models/, serving/ (paths are built from here, never from the cwd)."""
