"""The chaos harness at its quick size, as part of the test suite.

A new seed each run, so that CI keeps exploring; a failure names the seed, and
`make chaos ARGS='--quick --seed N'` repeats the run. Broker faults included: at
least one kill of the broker and its outage of 20–40 s.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_the_quick_chaos_run_holds_every_invariant():
    harness = subprocess.Popen([sys.executable, "-m", "tests.chaos", "--quick"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = harness.communicate(timeout=540)
    except subprocess.TimeoutExpired:
        # SIGTERM, not SIGKILL: the harness stops the broker and services it started.
        harness.terminate()
        output, _ = harness.communicate(timeout=60)
        output += "\n(the harness did not finish within 540 s)"
    # The feeder's progress line rewrites itself with carriage returns.
    output = output.replace("\r", "\n")
    assert harness.returncode == 0, f"exit status {harness.returncode}:\n{output[-12_000:]}"
    broker = re.search(r"^broker: (\d+) kills, outages (.*)$", output, re.MULTILINE)
    assert broker is not None and int(broker.group(1)) >= 1, \
        f"the run had no broker restart:\n{output[-3_000:]}"
