"""The connector's parts that need no Kafka: the rate limiter on a fake clock, the
backoff, the committable offset of a partition, the RocksDB ledger, and the retry
policy of `Connector._deliver` against a scripted stub gateway."""

import asyncio
import time

import pytest

from connectors import connector as connector_module
from connectors.connector import (
    RATE_SPACING,
    Connector,
    Ledger,
    PartitionProgress,
    RateLimiter,
    backoff_s,
)
from connectors.gateways import (
    ACCEPTED,
    AMBIGUOUS,
    RATE_LIMITED,
    REJECTED,
    RETRYABLE,
    GatewayResult,
    OutgoingSms,
)
from streams import codecs
from streams.settings import Settings

REAL_SLEEP = asyncio.sleep


class AsyncioWithSleep:
    """`asyncio` as `connectors.connector` sees it, with `sleep` replaced: patching
    `asyncio.sleep` itself would change it for the event loop as well."""

    def __init__(self, sleep):
        self.sleep = sleep

    def __getattr__(self, name):
        return getattr(asyncio, name)


# --- RateLimiter ------------------------------------------------------------------------


def limiter_starts(monkeypatch, rate, count):
    """Start times of `count` concurrent acquirers, on a clock moved only by sleeps."""
    now = [0.0]

    async def fake_sleep(seconds):
        now[0] += seconds
        await REAL_SLEEP(0)

    monkeypatch.setattr(connector_module, "asyncio", AsyncioWithSleep(fake_sleep))

    async def main():
        limiter = RateLimiter(rate, clock=lambda: now[0])
        starts = []

        async def one():
            await limiter.acquire()
            starts.append(now[0])

        await asyncio.gather(*(one() for _ in range(count)))
        return starts

    return asyncio.run(main())


@pytest.mark.parametrize(("rate", "most_in_a_second"),
                         [(1, 1), (3, 3), (5, 5), (50, 42), (1000, 834)])
def test_rate_limiter_spaces_starts_evenly(monkeypatch, rate, most_in_a_second):
    count = 3 * rate + 3
    starts = limiter_starts(monkeypatch, rate, count)
    interval = RATE_SPACING / rate
    assert starts == pytest.approx([i * interval for i in range(count)])
    # Any second, closed at both ends: the starts from each start up to 1.0 s later.
    in_a_second = [sum(1 for t in starts[i:] if t - start <= 1.0)
                   for i, start in enumerate(starts)]
    assert max(in_a_second) == most_in_a_second
    assert most_in_a_second <= rate


def test_rate_limiter_allows_no_burst_after_a_pause(monkeypatch):
    now = [100.0]
    sleeps = []

    async def fake_sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(connector_module, "asyncio", AsyncioWithSleep(fake_sleep))

    async def main():
        limiter = RateLimiter(10, clock=lambda: now[0])
        await limiter.acquire()
        now[0] += 5.0  # idle: no credit is saved up meanwhile
        for _ in range(3):
            await limiter.acquire()

    asyncio.run(main())
    assert sleeps == pytest.approx([0.12, 0.12])


@pytest.mark.parametrize("rate", [0, -1])
def test_rate_limiter_refuses_a_rate_not_above_zero(rate):
    with pytest.raises(ValueError, match="above zero"):
        RateLimiter(rate)


# --- backoff_s ----------------------------------------------------------------------------

BOUNDS = {1: 0.2, 2: 0.4, 3: 0.8, 4: 1.6, 5: 3.2, 6: 6.4, 7: 10.0, 8: 10.0, 20: 10.0}


def test_backoff_draws_between_zero_and_the_capped_bound(monkeypatch):
    monkeypatch.setattr(connector_module.random, "uniform", lambda low, high: (low, high))
    assert {attempt: backoff_s(attempt) for attempt in BOUNDS} == {
        attempt: (0, bound) for attempt, bound in BOUNDS.items()}
    assert backoff_s(3, base_s=1.0, cap_s=3.0) == (0, 3.0)


def test_backoff_stays_in_bounds_and_grows_with_the_attempt():
    means = []
    for attempt, bound in BOUNDS.items():
        draws = [backoff_s(attempt) for _ in range(2000)]
        assert all(0 <= d <= bound for d in draws)
        assert max(draws) > 0.95 * bound
        means.append(sum(draws) / len(draws))
    # The mean doubles from attempt 1 to 6, then the cap holds it (2000 draws each:
    # these margins are many standard deviations wide).
    for previous, mean in zip(means[:5], means[1:6], strict=True):
        assert 1.8 < mean / previous < 2.2
    assert 4.5 < means[6] < 5.5


# --- PartitionProgress --------------------------------------------------------------------


def test_committable_is_the_lowest_pending_or_past_the_highest_done():
    progress = PartitionProgress()
    assert progress.committable() == 0
    progress.pending.update({10, 11, 12, 13})
    assert progress.committable() == 10

    def done(offset):  # what Connector._finish does
        progress.pending.discard(offset)
        progress.highest_done = max(progress.highest_done, offset)

    done(12)
    assert progress.committable() == 10
    done(10)
    assert progress.committable() == 11
    done(13)
    assert progress.committable() == 11
    done(11)
    assert progress.committable() == 14


# --- Ledger -----------------------------------------------------------------------------

ATTEMPTING = {"state": "attempting", "attempts": 2, "ambiguous": True}
UNREPORTED = {"state": "done", "attempts": 1, "ambiguous": False, "fed_back": False,
              "outcome": {"outcome": "accepted", "message_id": "m-1"}, "sent_from": {"0": 7}}
REPORTED = {**UNREPORTED, "fed_back": True}


def test_ledger_round_trip_and_awaiting_feedback(tmp_path):
    ledger = Ledger(tmp_path)
    assert ledger.get("d-1") is None
    ledger.put("d-1", ATTEMPTING)
    ledger.put("d-2", UNREPORTED)
    ledger.put("d-3", REPORTED)
    ledger.put("d-4", UNREPORTED)
    assert ledger.get("d-1") == ATTEMPTING
    assert ledger.get("d-3") == REPORTED
    assert ledger.awaiting_feedback() == {"d-2": UNREPORTED, "d-4": UNREPORTED}
    ledger.put("d-4", {**UNREPORTED, "fed_back": True})
    ledger.put("d-1", UNREPORTED)
    assert ledger.awaiting_feedback() == {"d-1": UNREPORTED, "d-2": UNREPORTED}
    ledger.close()

    reopened = Ledger(tmp_path)
    assert reopened.get("d-4") == REPORTED
    assert reopened.awaiting_feedback() == {"d-1": UNREPORTED, "d-2": UNREPORTED}
    reopened.close()


# --- Connector._deliver -----------------------------------------------------------------

REQUEST = {"decision_id": "d-42", "event_id": "e-7", "automation_id": "welcome",
           "e164": "+4520123456", "text": "Hi Ann", "sender": "ACME",
           "decided_at_ms": 1_767_225_600_000}
SMS = OutgoingSms("d-42", "+4520123456", "Hi Ann", "ACME")
OK = GatewayResult(ACCEPTED, 200, "m-1", detail='{"ids": [1]}')
ERROR_500 = GatewayResult(RETRYABLE, 500, detail="oops")
TIMEOUT = GatewayResult(AMBIGUOUS, detail="TimeoutError")
BAD_NUMBER = GatewayResult(REJECTED, 400, detail="invalid recipient")


class StubGateway:
    """Answers with `script`, one result per send; `on_send` runs inside each send."""

    name = "stub"

    def __init__(self, script, on_send=None):
        self.script = list(script)
        self.on_send = on_send
        self.calls = []

    async def send(self, session, sms, timeout_s):
        self.calls.append((sms, timeout_s))
        if self.on_send is not None:
            self.on_send()
        return self.script.pop(0)


def deliver(tmp_path, monkeypatch, script, *, ledger_entry=None, sleeps=None, on_send=None,
            **settings):
    """Run `_deliver(REQUEST, ...)`; returns (record, connector, gateway, backoff calls).
    `ledger_entry` is put in the ledger first and handed over as `_handle_once` does;
    `sleeps`, when given, collects the module's sleeps instead of sleeping."""
    backoffs = []
    monkeypatch.setattr(connector_module, "backoff_s",
                        lambda attempt: backoffs.append(attempt) or 0.0)
    if sleeps is not None:
        async def record_sleep(seconds):
            sleeps.append(seconds)
            await REAL_SLEEP(0)
        monkeypatch.setattr(connector_module, "asyncio", AsyncioWithSleep(record_sleep))
    gateway = StubGateway(script)

    async def main():
        connector = Connector(Settings(connector_data_dir=tmp_path, connector_rate_per_s=1000,
                                       connector_timeout_s=4.0, **settings), gateway)
        connector._session = object()
        if on_send is not None:
            gateway.on_send = lambda: on_send(connector)
        entry = None
        if ledger_entry is not None:
            connector.ledger.put(REQUEST["decision_id"], ledger_entry)
            entry = connector.ledger.get(REQUEST["decision_id"])
        try:
            return await connector._deliver(REQUEST, entry), connector
        finally:
            connector.ledger.close()

    before = time.time_ns() // 1_000_000
    record, connector = asyncio.run(main())
    assert before <= record.pop("at_ms") <= time.time_ns() // 1_000_000
    codecs.DELIVERY_OUTCOME.encode({**record, "at_ms": before})  # fits the schema
    assert gateway.script == []  # every scripted answer was asked for
    assert all(call == (SMS, 4.0) for call in gateway.calls)
    return record, connector, gateway, backoffs


def outcome(**fields):
    return {"decision_id": "d-42", "event_id": "e-7", "automation_id": "welcome",
            "e164": "+4520123456", "gateway": "stub", **fields}


def test_accepted_at_the_first_attempt(tmp_path, monkeypatch):
    record, connector, gateway, backoffs = deliver(tmp_path, monkeypatch, [OK])
    assert record == outcome(outcome="accepted", ambiguous=False, attempts=1,
                             message_id="m-1", status=200, detail='{"ids": [1]}')
    assert (connector.stats.requests, connector.stats.retried) == (1, 0)
    assert backoffs == []


def test_server_errors_are_retried_with_backoff(tmp_path, monkeypatch):
    accepted = GatewayResult(ACCEPTED, 202, "m-9")
    record, connector, gateway, backoffs = deliver(
        tmp_path, monkeypatch, [ERROR_500, ERROR_500, accepted])
    assert record == outcome(outcome="accepted", ambiguous=False, attempts=3,
                             message_id="m-9", status=202, detail="")
    assert (connector.stats.requests, connector.stats.retried) == (3, 2)
    assert backoffs == [1, 2]


def test_rate_limited_waits_as_long_as_the_gateway_said(tmp_path, monkeypatch):
    sleeps = []
    too_fast = GatewayResult(RATE_LIMITED, 429, retry_after_s=2.5, detail="slow down")
    record, connector, gateway, backoffs = deliver(
        tmp_path, monkeypatch, [too_fast, OK], sleeps=sleeps)
    assert record == outcome(outcome="accepted", ambiguous=False, attempts=2,
                             message_id="m-1", status=200, detail='{"ids": [1]}')
    # The rate limiter's own waits are shorter than its interval; the rest is the retry's.
    assert [s for s in sleeps if s > connector.limiter.interval] == [2.5]
    assert backoffs == []
    assert (connector.stats.rate_limited, connector.stats.retried) == (1, 1)


def test_a_permanent_rejection_is_not_retried(tmp_path, monkeypatch):
    record, connector, gateway, backoffs = deliver(tmp_path, monkeypatch, [BAD_NUMBER])
    assert record == outcome(outcome="failed", ambiguous=False, attempts=1,
                             message_id=None, status=400, detail="invalid recipient")
    assert len(gateway.calls) == 1
    assert backoffs == []


def test_timeouts_until_the_attempts_run_out(tmp_path, monkeypatch):
    record, connector, gateway, backoffs = deliver(
        tmp_path, monkeypatch, [TIMEOUT] * 3, connector_max_attempts=3,
        connector_retry_ambiguous=True)
    assert record == outcome(outcome="given_up", ambiguous=True, attempts=3,
                             message_id=None, status=None, detail="TimeoutError")
    assert backoffs == [1, 2]  # no wait after the last attempt
    assert (connector.stats.requests, connector.stats.ambiguous) == (3, 1)


def test_accepted_after_an_ambiguous_attempt_stays_ambiguous(tmp_path, monkeypatch):
    record, connector, gateway, backoffs = deliver(tmp_path, monkeypatch, [TIMEOUT, OK],
                                                   connector_retry_ambiguous=True)
    assert record == outcome(outcome="accepted", ambiguous=True, attempts=2,
                             message_id="m-1", status=200, detail='{"ids": [1]}')


def test_an_attempt_left_in_flight_by_a_crash_makes_it_ambiguous(tmp_path, monkeypatch):
    crashed = {"state": "attempting", "attempts": 1, "ambiguous": False}
    record, connector, gateway, backoffs = deliver(
        tmp_path, monkeypatch, [OK], ledger_entry=crashed, connector_retry_ambiguous=True)
    assert record == outcome(outcome="accepted", ambiguous=True, attempts=2,
                             message_id="m-1", status=200, detail='{"ids": [1]}')


def test_no_attempts_left_after_a_crash(tmp_path, monkeypatch):
    crashed = {"state": "attempting", "attempts": 3, "ambiguous": False}
    record, connector, gateway, backoffs = deliver(
        tmp_path, monkeypatch, [], ledger_entry=crashed, connector_max_attempts=3)
    assert record == outcome(outcome="given_up", ambiguous=True, attempts=3,
                             message_id=None, status=None,
                             detail="no attempt left after an unanswered one")


def test_without_retry_ambiguous_a_timeout_is_final(tmp_path, monkeypatch):
    record, connector, gateway, backoffs = deliver(
        tmp_path, monkeypatch, [TIMEOUT], connector_retry_ambiguous=False)
    assert record == outcome(outcome="given_up", ambiguous=True, attempts=1,
                             message_id=None, status=None, detail="TimeoutError")
    assert len(gateway.calls) == 1


def test_without_retry_ambiguous_a_crashed_attempt_is_not_sent_again(tmp_path, monkeypatch):
    crashed = {"state": "attempting", "attempts": 1, "ambiguous": False}
    record, connector, gateway, backoffs = deliver(
        tmp_path, monkeypatch, [], ledger_entry=crashed, connector_retry_ambiguous=False)
    assert record == outcome(outcome="given_up", ambiguous=True, attempts=1,
                             message_id=None, status=None,
                             detail="not retried after an unanswered attempt")
    assert gateway.calls == []


def test_the_ledger_notes_each_attempt_before_it_is_made(tmp_path, monkeypatch):
    seen = []
    deliver(tmp_path, monkeypatch, [ERROR_500, TIMEOUT, OK], connector_retry_ambiguous=True,
            on_send=lambda connector: seen.append(connector.ledger.get("d-42")))
    assert seen == [
        {"state": "attempting", "attempts": 1, "ambiguous": False},
        {"state": "attempting", "attempts": 2, "ambiguous": False},
        {"state": "attempting", "attempts": 3, "ambiguous": True},
    ]
