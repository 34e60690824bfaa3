"""The benchmark's input: N trigger events over M Danish mobile numbers, and the
decisions they must get.

- The numbers are valid Danish numbers (+45 2xxxxxxx); how often each is hit follows a
  Zipf law (exponent `ZIPF_EXPONENT`), so a few numbers are hot and most are cold.
- Four automations, all with the window "always" so the time of day does not matter:
  cooldowns of 1 h, 6 h and 24 h, and one without cooldown. Each event type answers
  exactly one automation, so every trigger gets exactly one decision.
- Phones are written the ways people write them (`+45 20 12 34 56`, `004520123456`,
  `20123456`, …): every contender has to normalize with `streams.numbers.to_e164`.
- Kafka timestamps are spread over a simulated period (2 days, ending when the
  workload is made) in time order; every contender decides in event time (the
  trigger's Kafka timestamp is `now`), so passes and suppressions come in the
  proportions of that period, however fast a contender runs.
- Records are keyed by the E.164 number, the canonical form. This is the friendly
  case: the input is already partitioned by number, so a contender does not have to
  re-key it (the shipped worker still does; the others rely on it).

`generate` also runs the pure rule over the events in their order (the order every
partition, and so every number, sees them), which gives the expected decisions.

`UniqueWorkload` is the state run's input: one trigger for each of N new numbers (a
million by default), made on the fly as it is produced, so that neither the numbers nor
the records are ever held in a list. Each must pass: no number has been texted before.
"""

from __future__ import annotations

import bisect
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from itertools import accumulate

import phonenumbers

from streams import codecs
from streams.automations import Automation
from streams.kafka import Outgoing, produce_all, producer
from streams.rule import PASSED, AutomationTerms, NumberState, decide, decision_id_for

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
PERIOD_MS = 2 * DAY_MS
ZIPF_EXPONENT = 0.8

# (automation id, event type, cooldown in ms or 0 for none, share of the events)
AUTOMATION_MIX: tuple[tuple[str, str, int, int], ...] = (
    ("cooldown-1h", "cart_abandoned", HOUR_MS, 40),
    ("cooldown-6h", "back_in_stock", 6 * HOUR_MS, 25),
    ("cooldown-24h", "winback", DAY_MS, 20),
    ("no-cooldown", "appointment_tomorrow", 0, 15),
)

Record = tuple[bytes, bytes, int]  # key (E.164), Avro Trigger, Kafka timestamp (ms)


def bench_automations(updated_at_ms: int = 0) -> list[Automation]:
    return [
        Automation(automation_id, f"Benchmark: {automation_id}", country="DK",
                   event_type=event_type, window="always",
                   message="Hi {name}, something for you.", sender="Bench",
                   cooldown_enabled=cooldown_ms > 0, cooldown_ms=cooldown_ms,
                   updated_at_ms=updated_at_ms)
        for automation_id, event_type, cooldown_ms, _ in AUTOMATION_MIX
    ]


def terms_of(automation: Automation) -> AutomationTerms:
    """The rule's view of an automation whose window is "always"."""
    return AutomationTerms(automation.automation_id, automation.enabled,
                           automation.cooldown_enabled, automation.cooldown_ms, None)


def danish_numbers(rng: random.Random, count: int) -> list[str]:
    """`count` distinct valid Danish numbers in E.164, in random order."""
    numbers: list[str] = []
    seen: set[str] = set()
    while len(numbers) < count:
        e164 = f"+452{rng.randrange(10**7):07d}"
        if e164 not in seen and phonenumbers.is_valid_number(phonenumbers.parse(e164)):
            seen.add(e164)
            numbers.append(e164)
    return numbers


def written(e164: str, rng: random.Random) -> str:
    """One way a person or a system writes a Danish number."""
    n = e164[3:]
    return rng.choice((
        e164, f"+45 {n[:2]} {n[2:4]} {n[4:6]} {n[6:]}", f"0045{n}", n,
        f"{n[:2]} {n[2:4]} {n[4:6]} {n[6:]}", f"+45-{n[:4]}-{n[4:]}", f"(+45) {n}",
    ))


def zipf_cum_weights(count: int, exponent: float = ZIPF_EXPONENT) -> list[float]:
    return list(accumulate(1.0 / (rank + 1) ** exponent for rank in range(count)))


class TriggerMaker:
    """Draws triggers: a number by its Zipf weight, an automation by its share."""

    def __init__(self, numbers: list[str], seed: int) -> None:
        self.numbers = numbers
        self.rng = random.Random(seed)
        self._cum = zipf_cum_weights(len(numbers))
        self._event_cum = list(accumulate(share for *_, share in AUTOMATION_MIX))

    def draw(self) -> tuple[int, int]:
        """(number rank, index into AUTOMATION_MIX)"""
        rng = self.rng
        rank = bisect.bisect(self._cum, rng.random() * self._cum[-1])
        kind = bisect.bisect(self._event_cum, rng.random() * self._event_cum[-1])
        return min(rank, len(self.numbers) - 1), kind

    def trigger(self, event_id: str, rank: int, kind: int, occurred_at_ms: int) -> bytes:
        return codecs.TRIGGER.encode({
            "event_id": event_id,
            "automation_id": None,
            "event_type": AUTOMATION_MIX[kind][1],
            "segment": None,
            "phone": written(self.numbers[rank], self.rng),
            "occurred_at_ms": occurred_at_ms,
            "attributes": {"name": f"Kunde {rank}"},
        })


@dataclass
class Workload:
    seed: int
    events: int
    numbers: list[str]
    start_ms: int
    end_ms: int
    automations: list[Automation]
    records: list[Record]
    distinct_numbers: int = 0
    expected_outcomes: Counter[str] = field(default_factory=Counter)
    expected_passed: set[str] = field(default_factory=set)  # event ids
    final_state: dict[str, NumberState] = field(default_factory=dict)


def generate(events: int, numbers: int, seed: int, end_ms: int,
             progress: Callable[[int], None] | None = None) -> Workload:
    """The trigger records (in time order) and the decisions the rule gives them."""
    rng = random.Random(seed)
    maker = TriggerMaker(danish_numbers(rng, numbers), seed + 1)
    start_ms = end_ms - PERIOD_MS
    times = sorted(rng.randrange(start_ms, end_ms) for _ in range(events))
    automations = bench_automations(start_ms)
    terms = [terms_of(a) for a in automations]
    work = Workload(seed, events, maker.numbers, start_ms, end_ms, automations, [])
    states = work.final_state
    for i, at in enumerate(times):
        rank, kind = maker.draw()
        event_id = f"b{seed}-{i:07d}"
        value = maker.trigger(event_id, rank, kind, at - rng.randrange(0, 2000))
        e164 = maker.numbers[rank]
        work.records.append((e164.encode(), value, at))
        rule_terms = terms[kind]
        decision, new_state = decide(decision_id_for(event_id, rule_terms.automation_id),
                                     rule_terms, states.get(e164), at)
        if new_state is not None:
            states[e164] = new_state
        work.expected_outcomes[decision.outcome] += 1
        if decision.outcome == PASSED:
            work.expected_passed.add(event_id)
        if progress is not None and i % 10_000 == 0:
            progress(i)
    work.distinct_numbers = len({key for key, _, _ in work.records})
    return work


BLOCK = 10_000  # the numbers of one 4-digit prefix: +45 2abc 0000 to +45 2abc 9999


@cache
def danish_blocks() -> tuple[int, ...]:
    """The prefixes 2000 to 2999 whose 10,000 numbers are valid Danish numbers (in
    libphonenumber's metadata validity goes by these four digits: 930 of them are
    valid, +45 200x, 210x, ... 250x and 290x are not)."""
    return tuple(prefix for prefix in range(2000, 3000) if all(
        phonenumbers.is_valid_number(phonenumbers.parse(f"+45{prefix}{rest:04d}"))
        for rest in (0, BLOCK - 1)))


class UniqueNumbers:
    """`count` distinct valid Danish numbers (+45 2xxxxxxx), the i-th computed from i
    and none kept in memory: a seeded affine permutation of the 9.3 million valid ones,
    so that consecutive numbers lie far apart. `index` is its inverse."""

    def __init__(self, count: int, seed: int) -> None:
        self.blocks = danish_blocks()
        self.space = len(self.blocks) * BLOCK
        if not 0 < count <= self.space:
            raise ValueError(f"between 1 and {self.space:,} distinct numbers, not {count:,}")
        self.count = count
        rng = random.Random(seed)
        multiplier = int(self.space * 0.6180339887) + rng.randrange(self.space // 100)
        while math.gcd(multiplier, self.space) != 1:
            multiplier += 1
        self._multiplier = multiplier
        self._inverse = pow(multiplier, -1, self.space)
        self._offset = rng.randrange(self.space)
        self._block_index = {prefix: i for i, prefix in enumerate(self.blocks)}

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> str:
        if not 0 <= i < self.count:
            raise IndexError(i)
        block, rest = divmod((self._multiplier * i + self._offset) % self.space, BLOCK)
        return f"+45{self.blocks[block]}{rest:04d}"

    def index(self, e164: str) -> int | None:
        """Which of the numbers this is, or None when it is not one of them."""
        if len(e164) != 11 or not e164.startswith("+45") or not e164[3:].isdigit():
            return None
        block = self._block_index.get(int(e164[3:7]))
        if block is None:
            return None
        i = (block * BLOCK + int(e164[7:]) - self._offset) * self._inverse % self.space
        return i if i < self.count else None


@dataclass
class UniqueWorkload:
    """The state run's input: trigger i goes to number i, which nothing else targets,
    so every trigger passes and each number ends with the state of one pass. The
    triggers' Kafka timestamps rise evenly over `PERIOD_MS` up to `end_ms`; the
    automation of each follows `AUTOMATION_MIX` (a function of i, not of a draw, so that
    `state_of` needs no replay). Nothing is stored: `records` makes them as it goes."""

    seed: int
    numbers: UniqueNumbers
    start_ms: int
    end_ms: int
    automations: list[Automation]

    @classmethod
    def make(cls, count: int, seed: int, end_ms: int) -> UniqueWorkload:
        start_ms = end_ms - PERIOD_MS
        return cls(seed, UniqueNumbers(count, seed), start_ms, end_ms,
                   bench_automations(start_ms))

    @property
    def count(self) -> int:
        return len(self.numbers)

    @property
    def prefix(self) -> str:
        return f"s{self.seed}-"

    @property
    def expected_outcomes(self) -> Counter[str]:
        return Counter({PASSED: self.count})

    def event_id(self, i: int) -> str:
        return f"{self.prefix}{i:07d}"

    def index_of_event(self, event_id: str) -> int | None:
        if not event_id.startswith(self.prefix):
            return None
        try:
            i = int(event_id[len(self.prefix):])
        except ValueError:
            return None
        return i if 0 <= i < self.count else None

    def timestamp(self, i: int) -> int:
        return self.start_ms + i * (self.end_ms - self.start_ms) // self.count

    def kind(self, i: int) -> int:
        """Index into AUTOMATION_MIX, in its shares (a multiplicative hash of i)."""
        total = sum(share for *_, share in AUTOMATION_MIX)
        point = (i * 2_654_435_761 + self.seed) % (2**32) * total >> 32
        for kind, (*_, share) in enumerate(AUTOMATION_MIX):
            if point < share:
                return kind
            point -= share
        raise AssertionError("unreachable")

    def records(self, start: int = 0, stop: int | None = None) -> Iterator[Record]:
        """Triggers start..stop-1 in order: (E.164 key, Avro Trigger, Kafka timestamp)."""
        stop = self.count if stop is None else min(stop, self.count)
        rng = random.Random(self.seed * 1_000_003 + start)
        encode, mix = codecs.TRIGGER.encode, AUTOMATION_MIX
        for i in range(start, stop):
            e164 = self.numbers[i]
            at = self.timestamp(i)
            value = encode({
                "event_id": self.event_id(i), "automation_id": None,
                "event_type": mix[self.kind(i)][1], "segment": None,
                "phone": written(e164, rng), "occurred_at_ms": at - rng.randrange(0, 2000),
                "attributes": {"name": f"Kunde {i}"},
            })
            yield e164.encode(), value, at

    def state_of(self, i: int) -> NumberState | None:
        """Number i's state once its trigger passed, by the rule."""
        terms = terms_of(self.automations[self.kind(i)])
        _, state = decide(decision_id_for(self.event_id(i), terms.automation_id), terms,
                          None, self.timestamp(i))
        return state


def paced_triggers(work: Workload, count: int, seed: int, occurred_at_ms: int,
                   prefix: str = "p") -> list[tuple[bytes, bytes]]:
    """Triggers for the paced run, drawn like the workload's; their Kafka timestamp
    is set when they are produced."""
    maker = TriggerMaker(work.numbers, seed)
    out = []
    for i in range(count):
        rank, kind = maker.draw()
        out.append((work.numbers[rank].encode(),
                    maker.trigger(f"{prefix}{seed}-{i:07d}", rank, kind, occurred_at_ms)))
    return out


def sentinel_trigger(e164: str, event_id: str, automation_index: int,
                     occurred_at_ms: int) -> tuple[bytes, bytes]:
    """One trigger for a given number and automation (recovery and warm-up probes)."""
    maker = TriggerMaker([e164], 0)
    return e164.encode(), maker.trigger(event_id, 0, automation_index, occurred_at_ms)


def produce_records(bootstrap: str, topic: str, records: Iterable[tuple],
                    progress: Callable[[int], None] | None = None) -> int:
    """Write records (key, value[, timestamp]) with the murmur2 partitioner, as the
    project's producers do; raises when not every one was acknowledged. `records` may
    be a generator; returns how many were written."""
    out = producer(bootstrap, **{"linger.ms": 20, "queue.buffering.max.messages": 500_000,
                                 "queue.buffering.max.kbytes": 512 * 1024})
    written = 0

    def reported() -> Iterator[Outgoing]:
        nonlocal written
        for record in records:
            if progress is not None and written % 1000 == 0:
                progress(written)
            written += 1
            yield record

    produce_all(out, topic, reported(), timeout_s=120)
    if progress is not None:
        progress(written)
    return written
