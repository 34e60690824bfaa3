"""Avro schemas of every record the project writes or reads, one `.avsc` file each,
named by the record's full Avro name."""

from pathlib import Path

SCHEMA_DIR = Path(__file__).parent
