"""A class of another commit, loaded beside this tree's, so that one bench run can measure both interleaved
(the VM's speed drifts too much for runs at different times to compare).

``kafka_bus_at("4f0bc08")`` reads ``shared/tokenpulse_shared/bus/kafka.py`` at that commit with git and imports
it as a module of its own; :func:`class_at` does the same for any module (``bench/scoring.py`` loads the scoring
service of a commit). The module must work with this tree's packages (its imports are absolute).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODULE = "shared/tokenpulse_shared/bus/kafka.py"


def class_at(ref: str, module: str, name: str) -> Any:
    """The class ``name`` of file ``module`` (a path in the repository) at commit ``ref``."""
    source = subprocess.run(
        ["git", "show", f"{ref}:{module}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    stem = Path(module).stem
    mod_name = f"tokenpulse_bench_{stem}_{ref.replace('-', '_').replace('.', '_')}"
    path = Path(tempfile.mkdtemp(prefix="tokenpulse-variant-")) / f"{mod_name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(mod_name, path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = loaded
    spec.loader.exec_module(loaded)
    return getattr(loaded, name)


def kafka_bus_at(ref: str) -> Any:
    """The ``KafkaBus`` class of ``ref``."""
    return class_at(ref, MODULE, "KafkaBus")
