"""The package layout: each floor imports only what is below it.

`streams/` (the pipeline) imports neither `connectors/` nor `smscool/`; `connectors/`
takes from `streams/` only what the topics' contracts are made of (codecs, topic names,
outcome names, numbers, opt-out records), settings and Kafka helpers, and never imports
`smscool/`. Imports inside functions count as much as those at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# What connectors/ may use of streams/.
STREAMS_FOR_CONNECTORS = {"streams.codecs", "streams.settings", "streams.topics",
                          "streams.kafka", "streams.outcomes", "streams.numbers",
                          "streams.optouts", "streams.metrics"}


def imported_modules(package: str, root: Path = REPO) -> dict[str, set[str]]:
    """What each .py file of `package` imports, by path. `from a import b` gives both
    `a` and `a.b`, since b may be a module; relative imports are made absolute."""
    found: dict[str, set[str]] = {}
    for path in sorted((root / package).rglob("*.py")):
        # The package the file's relative imports start from (for __init__.py, its own).
        here = list(path.relative_to(root).parts[:-1])
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                parts = here[:len(here) - node.level + 1] if node.level else []
                base = ".".join([*parts, node.module] if node.module else parts)
                if base:
                    names.add(base)
                names.update(f"{base}.{alias.name}".lstrip(".") for alias in node.names)
        found[path.relative_to(root).as_posix()] = names
    return found


def top(name: str) -> str:
    return name.split(".")[0]


def test_streams_imports_neither_connectors_nor_smscool():
    found = imported_modules("streams")
    assert "streams.settings" in found["streams/agents.py"], "the walk found no imports"
    wrong = {path: sorted(n for n in names if top(n) in ("connectors", "smscool"))
             for path, names in found.items()}
    assert not {path: names for path, names in wrong.items() if names}


def test_connectors_use_only_codecs_settings_topics_and_kafka_of_streams():
    found = imported_modules("connectors")
    assert "streams.codecs" in found["connectors/connector.py"], "the walk found no imports"
    wrong = {}
    for path, names in found.items():
        bad = {n for n in names if top(n) == "smscool"}
        # `from streams.kafka import producer` gives streams.kafka and streams.kafka.producer.
        bad |= {n for n in names if top(n) == "streams" and n != "streams"
                and ".".join(n.split(".")[:2]) not in STREAMS_FOR_CONNECTORS}
        if bad:
            wrong[path] = sorted(bad)
    assert not wrong


def test_the_walk_sees_imports_in_functions_and_relative_ones(tmp_path: Path):
    package = tmp_path / "streams"
    package.mkdir()
    (package / "__init__.py").write_text("from . import late\n")
    (package / "late.py").write_text(
        "import json\n\n"
        "def f():\n"
        "    from connectors.connector import Connector\n"
        "    from .. import smscool\n"
        "    from .codecs import AVRO\n")
    found = imported_modules("streams", root=tmp_path)
    assert found["streams/__init__.py"] == {"streams", "streams.late"}
    assert found["streams/late.py"] == {
        "json", "connectors.connector", "connectors.connector.Connector", "smscool",
        "streams.codecs", "streams.codecs.AVRO"}
