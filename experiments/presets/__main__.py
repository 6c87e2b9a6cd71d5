"""Rewrite README.md of the presets from the presets: ``python -m experiments.presets``."""

from experiments.presets import DIRECTORY, readme

(DIRECTORY / "README.md").write_text(readme())
