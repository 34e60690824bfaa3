"""The benchmark of sms-cooldown: `python -m bench` (see `bench/__main__.py`).

Runs the shipped worker, a textbook Faust agent and a plain confluent-kafka loop one
after the other on identical input, checks that they made the same decisions, and
prints (and optionally writes as JSON and draws) throughput, peak RSS, state size,
decision latency at a fixed rate and the time to rebuild the table from its changelog.
"""
