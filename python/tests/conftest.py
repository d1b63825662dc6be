"""The examples' own model (examples/dlrm.py) is what the DLRM tests train."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))
