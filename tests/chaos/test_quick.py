"""The chaos harness at its quick size, as part of the test suite.

A new seed each run, so that CI keeps exploring; a failure names the seed, and
`make chaos ARGS='--quick --seed N'` repeats the run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_the_quick_chaos_run_holds_every_invariant():
    run = subprocess.run([sys.executable, "-m", "tests.chaos", "--quick"],
                         cwd=REPO, capture_output=True, text=True, timeout=540)
    # The feeder's progress line rewrites itself with carriage returns.
    output = run.stdout.replace("\r", "\n") + run.stderr
    assert run.returncode == 0, f"exit status {run.returncode}:\n{output[-12_000:]}"
