"""The chaos harness: the whole pipeline under SIGKILLs and rebalances, every outcome
checked against a single-threaded reference model. `make chaos` runs it; see
`python -m tests.chaos --help`."""
