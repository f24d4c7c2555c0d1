from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""The checkout: tests read its models/, build/ and node_modules/."""
