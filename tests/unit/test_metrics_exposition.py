"""One /metrics page of the worker and its ingest child: a family both serve (the
decisions) comes out once, with the samples of both, in text Prometheus reads."""

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from streams.metrics import counting, exposition


def test_a_family_of_two_processes_is_served_once_with_both_samples():
    worker, ingest = CollectorRegistry(), CollectorRegistry()
    agent = counting(Counter("smscool_decisions", "Decisions", ["automation", "outcome"],
                             registry=worker))
    normalize = Counter("smscool_decisions", "Decisions", ["automation", "outcome"],
                        registry=ingest)
    read = Counter("smscool_triggers_read", "Read", ["topic"], registry=ingest)
    agent("welcome", "passed")
    agent("welcome", "passed")
    agent("welcome", "suppressed_cooldown", amount=3)
    normalize.labels("welcome", "invalid_number").inc()
    read.labels("sms.triggers").inc(6)

    text = exposition(worker, exposition(ingest).decode()).decode()
    assert text.count("# TYPE smscool_decisions_total counter") == 1
    families = {f.name: f for f in text_string_to_metric_families(text)}
    totals = {(s.labels["outcome"], s.value) for s in families["smscool_decisions"].samples
              if s.name == "smscool_decisions_total"}
    assert totals == {("passed", 2.0), ("suppressed_cooldown", 3.0), ("invalid_number", 1.0)}
    assert [s.value for s in families["smscool_triggers_read"].samples
            if s.name == "smscool_triggers_read_total"] == [6.0]
    # Without the child's text, the worker's own.
    assert "smscool_triggers_read" not in exposition(worker).decode()
