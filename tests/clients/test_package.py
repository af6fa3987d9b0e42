"""``pip install ./clients/python`` in a fresh virtual environment, from a copy outside the repository (so
nothing of the workspace can help), then the README's quick start, as written, against a real server; and
the notebook-style example in docs/examples run as a script."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.security.conftest import UpServer

pytestmark = pytest.mark.e2e  # a real tokenpulse up

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "python"


def quick_start() -> str:
    readme = (CLIENT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def test_the_quick_start_is_five_lines_of_code() -> None:
    lines = [line for line in quick_start().splitlines() if line.strip() and not line.startswith("from ")]
    assert len(lines) <= 5, lines


@pytest.mark.timeout(600)
def test_a_fresh_venv_installs_the_client_alone_and_runs_the_quick_start(sdk_server: UpServer, tmp_path: Path) -> None:
    source = shutil.copytree(CLIENT, tmp_path / "tokenpulse-client", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    installed = subprocess.run([str(venv / "bin" / "pip"), "list", "--format=freeze"], capture_output=True, text=True)
    assert "tokenpulse-client==" in installed.stdout
    assert not re.search(r"^tokenpulse(-shared|-gateway|-ingest)?==", installed.stdout, re.M)  # the services stay out
    code = quick_start().replace("http://127.0.0.1:8000", sdk_server.base)
    run = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr[-3000:]
    first, *days = run.stdout.strip().splitlines()
    assert float(first.split()[0]) > 0 and "price=" in first  # the price, then the key support level
    assert [d.split()[0] for d in days] == ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]


def test_the_notebook_example_runs_as_a_script(sdk_server: UpServer, free_key: str, tmp_path: Path) -> None:
    plot = tmp_path / "grades.png"
    env = {"TOKENPULSE_BASE_URL": sdk_server.base, "TOKENPULSE_API_KEY": free_key, "TOKENPULSE_PLOT": str(plot)}
    run = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "examples" / "candles_and_grades.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "MPLCONFIGDIR": str(tmp_path), **env},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert re.search(r"^\d+ daily candles of BTC since 2024-01-01", run.stdout, re.M)
    assert re.search(r"^grades on \d{4}-\d{2}-\d{2}: trader [\d.]+, investor [\d.]+", run.stdout, re.M)
    assert plot.stat().st_size > 20_000 and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
