"""The Kafka bus of another commit, loaded beside this tree's, so that one bench run can measure both
interleaved (the VM's speed drifts too much for runs at different times to compare).

``kafka_bus_at("4f0bc08")`` reads ``shared/tokenpulse_shared/bus/kafka.py`` at that commit with git and imports
it as a module of its own; it must work with this tree's ``tokenpulse_shared`` (its imports are absolute).
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


def kafka_bus_at(ref: str) -> Any:
    """The ``KafkaBus`` class of ``ref``."""
    source = subprocess.run(
        ["git", "show", f"{ref}:{MODULE}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    name = f"tokenpulse_bench_kafka_{ref.replace('-', '_').replace('.', '_')}"
    path = Path(tempfile.mkdtemp(prefix="tokenpulse-bus-")) / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module.KafkaBus
