"""Test helpers shared across folders (``exact_values``, ``benchmark_scripts``) import by name from any
subfolder of tests/."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
