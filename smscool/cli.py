"""The `smscool` command: run the broker, a worker or the demo; manage automations;
read topics."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from streams import codecs, topics
from streams.kafka import NotDelivered
from streams.settings import Settings


def _settings() -> Settings:
    return Settings.from_env()


def cmd_broker(args: argparse.Namespace) -> int:
    from smscool.processes import Stopped, stop_on_signals
    from streams.broker import EmbeddedBroker
    from streams.local_s3 import LocalS3

    log = None if args.quiet else sys.stderr.buffer
    s3 = LocalS3(log=log) if args.storage == "s3" else None
    broker = EmbeddedBroker(port=args.port, log=log, s3=s3)
    # Ctrl-C and SIGTERM alike stop the broker and its S3 server, each in a session of
    # its own.
    with stop_on_signals():
        try:
            if s3 is not None:
                s3.start()
            broker.start()
            kept = f"in S3 at {s3.endpoint}" if s3 else "in memory"
            print(f"embedded broker listening, topics kept {kept}: KAFKA_BOOTSTRAP_SERVERS="
                  f"{broker.bootstrap_servers}", flush=True)
            if s3 is not None:
                print("its idempotence does not survive a crash of the broker: run the "
                      "workers, the connector and smscool with SMSCOOL_IDEMPOTENCE=false",
                      flush=True)
            while broker.alive():
                time.sleep(0.5)
            print("the embedded broker exited; see its log above", file=sys.stderr)
            return 1
        except Stopped:
            pass
        finally:
            broker.stop()
            if s3 is not None:
                s3.stop()
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from streams.kafka import ensure_topics, partition_counts

    settings = _settings()
    bootstrap = settings.require_bootstrap()
    created = ensure_topics(bootstrap, topics.topic_specs(settings.app_id, settings.partitions))
    counts = partition_counts(bootstrap)
    for spec in topics.topic_specs(settings.app_id, settings.partitions):
        mark = "created" if spec.name in created else "exists"
        print(f"{spec.name:40} {counts.get(spec.name, 0):3} partitions  {mark}")
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from streams.kafka import produce_all, producer

    bootstrap = _settings().require_bootstrap()
    values = [line.rstrip(b"\r\n") for line in sys.stdin.buffer]
    values = [v for v in values if v.strip()]
    key = None if args.key is None else args.key.encode()
    # The same limit for librdkafka, which gives the record up, and for the wait.
    out = producer(bootstrap, **{"message.timeout.ms": int(args.timeout * 1000)})
    produce_all(out, args.topic, [(key, v) for v in values], timeout_s=args.timeout + 5)
    print(f"{len(values)} records written to {args.topic}", file=sys.stderr)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from streams.worker import run

    return run(_settings())


def _automation_fields(args: argparse.Namespace) -> dict[str, Any]:
    from streams.automations import parse_duration_ms

    fields: dict[str, Any] = {}
    for name in ("title", "country", "message", "sender", "event_type", "segment",
                 "timezone", "window"):
        value = getattr(args, name, None)
        if value is not None:
            fields[name] = value or None if name in ("event_type", "segment", "timezone") else value
    if getattr(args, "cooldown", None) is not None:
        fields["cooldown_enabled"] = True
        fields["cooldown_ms"] = parse_duration_ms(args.cooldown)
    if getattr(args, "no_cooldown", False):
        fields["cooldown_enabled"] = False
    for name in ("failed_sends_count", "transactional"):
        if getattr(args, name, None) is not None:
            fields[name] = getattr(args, name)
    for name in ("outside_window", "on_cooldown", "priority"):
        if getattr(args, name, None) is not None:
            fields[name] = getattr(args, name)
    if getattr(args, "max_hold", None) is not None:
        fields["max_hold_ms"] = parse_duration_ms(args.max_hold)
    return fields


def _print_automation(a: Any) -> None:
    from streams.automations import format_duration

    cooldown = (f"cooldown {format_duration(a.cooldown_ms)} ({a.on_cooldown} inside it)"
                if a.cooldown_enabled else "no cooldown")
    state = "enabled" if a.enabled else "DISABLED"
    recipients = f"event {a.event_type}" if a.event_type else "named triggers only"
    if a.segment:
        recipients += f", segment {a.segment}"
    window = "window always" if a.window == "always" else (
        f"window {a.window} (recipient's zone, else {a.zone}; {a.outside_window} outside it)")
    if a.transactional:
        state += " transactional"
    print(f"{a.automation_id:24} {state:8}  {a.title!r}\n"
          f"{'':24} {recipients}; {a.country}; {window}; {cooldown}; "
          f"held at most {format_duration(a.max_hold_ms)}; priority {a.priority}; "
          f"from {a.sender!r}: {a.message!r}\n{'':24} {_message_facts(a.message)}")


def _message_facts(message: str) -> str:
    from streams.validation import attributes_of, sms_length

    length = sms_length(message)
    uses = ", ".join("{" + name + "}" for name in attributes_of(message)) or "no attributes"
    return (f"message uses {uses}; as written, {length.parts} SMS part(s) in "
            f"{length.encoding} ({length.units} units; attributes add their length)")


def cmd_automation(args: argparse.Namespace) -> int:
    from streams.automations import Automation, publish_automation, read_catalog

    settings = _settings()
    bootstrap = settings.require_bootstrap()
    now_ms = int(time.time() * 1000)
    if args.action == "list":
        automations = read_catalog(bootstrap).all()
        if args.json:
            for a in automations:
                print(json.dumps(a.to_record()))
        else:
            for a in automations:
                _print_automation(a)
            print(f"{len(automations)} automation(s)")
        return 0
    if args.action == "create":
        from streams.kafka import ensure_topics

        ensure_topics(bootstrap, topics.topic_specs(settings.app_id, settings.partitions))
        if read_catalog(bootstrap).get(args.automation_id) is not None:
            print(f"automation {args.automation_id} exists; use `update`", file=sys.stderr)
            return 2
        fields = _automation_fields(args)
        missing = [n for n in ("title", "country", "message", "sender") if n not in fields]
        if missing:
            print(f"create needs --{' --'.join(missing)}", file=sys.stderr)
            return 2
        automation = Automation(automation_id=args.automation_id, updated_at_ms=now_ms, **fields)
    else:
        current = read_catalog(bootstrap).get(args.automation_id)
        if current is None:
            print(f"no automation {args.automation_id}", file=sys.stderr)
            return 2
        if args.action == "update":
            automation = current.updated(updated_at_ms=now_ms, **_automation_fields(args))
        else:
            automation = current.updated(updated_at_ms=now_ms, enabled=args.action == "enable")
    if args.action in ("create", "update"):
        from streams.validation import automation_errors

        errors = automation_errors(automation)
        for error in errors:
            print(f"smscool automation {args.action}: --{error.field}: {error.error}",
                  file=sys.stderr)
        if errors:
            return 2
    publish_automation(bootstrap, automation)
    _print_automation(automation)
    if args.action == "disable":
        from streams.held import send_cancel
        from streams.outcomes import AUTOMATION_DISABLED

        # Its held messages must not go out either: each gets `automation_disabled`.
        send_cancel(bootstrap, settings.partitions, automation.automation_id,
                    AUTOMATION_DISABLED, settings.clock.now_ms())
        print("its held messages are cancelled (decision automation_disabled)")
    return 0


def cmd_held(args: argparse.Namespace) -> int:
    from streams.automations import read_catalog
    from streams.held import read_held, send_cancel
    from streams.outcomes import CANCELLED

    settings = _settings()
    bootstrap = settings.require_bootstrap()
    if read_catalog(bootstrap).get(args.automation_id) is None:
        print(f"no automation {args.automation_id}", file=sys.stderr)
        return 2
    held = read_held(bootstrap, args.automation_id)
    if args.action == "cancel":
        send_cancel(bootstrap, settings.partitions, args.automation_id, CANCELLED,
                    settings.clock.now_ms())
        print(f"cancel sent for automation {args.automation_id}: its {len(held)} held "
              f"message(s) get the decision {CANCELLED}")
        return 0
    now = settings.clock.now_ms()
    for m in held:
        row = {"decision_id": m.decision_id, "event_id": m.event_id,
               "number": settings.number_tag(m.e164), "outcome": m.outcome,
               "trigger_at_ms": m.trigger_at_ms, "release_at_ms": m.release_at_ms,
               "deadline_ms": m.deadline_ms, "priority": m.priority}
        if args.json:
            print(json.dumps(row))
        else:
            print(f"{row['number']:12} {m.outcome:18} goes out {_when(m.release_at_ms)} "
                  f"({_until(m.release_at_ms - now)}); deadline {_when(m.deadline_ms)}; "
                  f"event {m.event_id}")
    if not args.json:
        print(f"{len(held)} message(s) of {args.automation_id} held")
    return 0


def cmd_optout(args: argparse.Namespace) -> int:
    from streams.erasure import number_hash
    from streams.optouts import publish_opt_out, read_opt_outs
    from streams.outcomes import OPT_OUT_BY_CLI

    settings = _settings()
    bootstrap = settings.require_bootstrap()
    if args.action == "list":
        opted_out = read_opt_outs(bootstrap)
        for number, mark in sorted(opted_out.items()):
            if args.json:
                print(json.dumps({"number": number, "since_ms": mark.at_ms,
                                  "channel": mark.channel}))
            else:
                shown = f"erased ({number[:20]}…)" if number.startswith("hmac") else number
                print(f"{shown:16} since {_when(mark.at_ms)} by {mark.channel}")
        if not args.json:
            print(f"{len(opted_out)} number(s) opted out")
        return 0
    given = _number_of(args)
    if given is None:
        return 2
    e164 = given
    if args.action == "check":
        opted_out = read_opt_outs(bootstrap)
        found = opted_out.get(e164)
        if found is None and settings.number_secret:
            found = opted_out.get(number_hash(settings.number_secret, e164))  # erased
        if found is None:
            print(f"{e164} is not opted out")
        else:
            print(f"{e164} opted out since {_when(found.at_ms)} by {found.channel}")
        return 0
    from streams.kafka import ensure_topics

    ensure_topics(bootstrap, topics.topic_specs(settings.app_id, settings.partitions))
    opting_out = args.action == "add"
    publish_opt_out(bootstrap, e164, opting_out, OPT_OUT_BY_CLI, settings.clock.now_ms(),
                    args.scope)
    if opting_out:
        print(f"{e164} opted out: its triggers get the decision opted_out (except for "
              f"transactional automations), and so do its held messages")
    else:
        print(f"{e164} opted back in")
    return 0


def _number_of(args: argparse.Namespace) -> str | None:
    """args.number in E.164, or None once the reason it is not a number is printed."""
    from streams.numbers import InvalidNumber, to_e164

    try:
        return to_e164(args.number, args.country)
    except InvalidNumber as exc:
        hint = "" if args.country or args.number.lstrip().startswith(("+", "00")) else \
            " (a number without its +country prefix needs --country)"
        print(f"smscool {args.command}: not a phone number: {exc.reason}{hint}",
              file=sys.stderr)
        return None


def cmd_erase(args: argparse.Namespace) -> int:
    from streams.erasure import erasure_record, hashed_opt_out_record
    from streams.kafka import ensure_topics, produce_all, producer
    from streams.optouts import read_opt_outs_and_keys
    from streams.outcomes import OPT_OUT_BY_CLI

    settings = _settings()
    bootstrap = settings.require_bootstrap()
    e164 = _number_of(args)
    if e164 is None:
        return 2
    ensure_topics(bootstrap, topics.topic_specs(settings.app_id, settings.partitions))
    out = producer(bootstrap, **{"message.timeout.ms": 30_000})
    produce_all(out, topics.ERASURES,
                [erasure_record(e164, settings.clock.now_ms(), OPT_OUT_BY_CLI)], timeout_s=35)
    print(f"erasure of {e164} sent: the cooldown table (a tombstone in its changelog), its "
          f"held messages (tombstones on {topics.HELD}) and the connector's ledger")
    opted_out, keys_by_number = read_opt_outs_and_keys(bootstrap)
    mark, keys = opted_out.get(e164), keys_by_number.get(e164, set())
    if mark is not None and not settings.number_secret:
        print(f"it is opted out, and SMSCOOL_NUMBER_SECRET is not set: its opt-out stays on "
              f"{topics.OPTOUTS} and in the table under the number itself, so that it is "
              f"not texted again (set the secret in every worker and here to keep it as a "
              f"keyed hash instead)")
    else:
        if mark is not None:
            produce_all(out, topics.OPTOUTS,
                        [hashed_opt_out_record(settings.number_secret, e164, mark)],
                        timeout_s=35)
            print("it is opted out: the opt-out stays, as the number's keyed hash only")
        produce_all(out, topics.OPTOUTS, [(key, None) for key in sorted(keys)], timeout_s=35)
        print(f"{len(keys)} key(s) tombstoned on {topics.OPTOUTS}")
    print(f"Kafka still holds the number on {', '.join(RETAINED)} until their retention "
          f"deletes it (Kafka's default: 7 days; see the README)")
    return 0


# The topics that keep what was written about a number until their retention ends.
RETAINED = (topics.TRIGGERS, topics.SENT, topics.BY_NUMBER, topics.OUTBOX,
            topics.DECISIONS, topics.DELIVERY, topics.DEADLETTER, topics.ERASURES)


def _when(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _until(ms: int) -> str:
    if ms <= 0:
        return "due now"
    minutes = ms // 60_000
    if minutes < 1:
        return f"in {ms // 1000} s"
    return f"in {minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"in {minutes} min"


def cmd_tail(args: argparse.Namespace) -> int:
    from streams.kafka import iter_records

    settings = _settings()
    codec = codecs.CODECS.get(args.schema) if args.schema else topics.CODECS.get(args.topic)
    shown = 0
    for record in iter_records(settings.require_bootstrap(), args.topic, idle_s=args.idle,
                               timeout_s=3600 * 24, follow=args.follow):
        row: dict[str, Any] = {"partition": record.partition, "offset": record.offset,
                               "timestamp_ms": record.timestamp_ms,
                               "key": record.key.decode("utf-8", "replace") if record.key else None}
        try:
            row["value"] = codec.decode(record.value) if codec else None
        except codecs.CodecError as exc:
            row["error"] = f"{exc.reason}: {exc.detail}"
        print(json.dumps(row, default=_json_bytes), flush=True)
        shown += 1
        if args.limit and shown >= args.limit:
            break
    return 0


def _json_bytes(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    raise TypeError(type(value).__name__)


def cmd_connector(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from connectors.connector import Connector
    from connectors.gateways import GatewayConfig, build_gateway

    settings = _settings()
    settings.require_bootstrap()
    gateway = build_gateway(GatewayConfig.from_env(gateway=args.gateway))
    logging.getLogger().setLevel(settings.log_level)

    async def run() -> int:
        connector = Connector(settings, gateway)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, connector.stop)
        stats = await connector.run()
        print(f"connector stopped: {stats.line()}", flush=True)
        # A supervisor must see that it stopped on an error, not on request.
        return 1 if connector.failed else 0

    return asyncio.run(run())


def cmd_web(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from smscool.web import serve

    settings = _settings()
    settings.require_bootstrap()
    if not settings.web_token and not settings.web_open_reads:
        print("smscool web: set SMSCOOL_WEB_TOKEN (every write needs it as a bearer token), "
              "or SMSCOOL_WEB_OPEN_READS=true for a read-only API on loopback",
              file=sys.stderr)
        return 2

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(settings, stop)

    asyncio.run(run())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from smscool.demo import run_demo

    return run_demo(triggers=args.triggers, numbers=args.numbers, seed=args.seed,
                    serve=args.serve)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smscool", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("broker", help="run the embedded Kafka-compatible broker")
    b.add_argument("--port", type=int, default=None, help="loopback port (default: a free one)")
    b.add_argument("--storage", choices=("memory", "s3"), default="memory",
                   help="memory (default): a restart loses every topic; s3: topics, records "
                        "and committed offsets survive broker restarts, kept by a local "
                        "moto S3 server this command starts and stops (dev dependency)")
    b.add_argument("--quiet", action="store_true", help="hide the broker's own log")
    b.set_defaults(func=cmd_broker)

    sub.add_parser("topics", help="create missing topics; check partition counts").set_defaults(
        func=cmd_topics)
    pr = sub.add_parser("produce", help="write records to a topic, one per line of standard "
                                        "input (Avro or JSON)")
    pr.add_argument("topic")
    pr.add_argument("--key", help="every record's key (default: none)")
    pr.add_argument("--timeout", type=float, default=30.0,
                    help="seconds Kafka has to acknowledge them (default 30)")
    pr.set_defaults(func=cmd_produce)
    sub.add_parser("worker", help="run a cooldown worker (joins the consumer group)").set_defaults(
        func=cmd_worker)

    a = sub.add_parser("automation", help="create, update, list, enable or disable automations")
    actions = a.add_subparsers(dest="action", required=True)
    ls = actions.add_parser("list")
    ls.add_argument("--json", action="store_true")
    for action in ("create", "update"):
        c = actions.add_parser(action)
        c.add_argument("automation_id")
        c.add_argument("--title")
        c.add_argument("--event-type", dest="event_type",
                       help="recipients: triggers of this event type ('' for named triggers only)")
        c.add_argument("--segment", help="recipients, narrowed to a segment or list ('' for all)")
        c.add_argument("--country", help="ISO region (DK) or calling code (+45)")
        c.add_argument("--timezone", help="IANA zone of the window (default: the country's)")
        c.add_argument("--window", help="sending window, e.g. 'mon-fri 09:00-20:00' or 'always'")
        c.add_argument("--message", help="text; {name} takes the trigger attribute 'name'")
        c.add_argument("--sender")
        cooldown = c.add_mutually_exclusive_group()
        cooldown.add_argument("--cooldown", metavar="INTERVAL",
                              help="switch cooldown on with this interval: 24h, 30m, 7d")
        cooldown.add_argument("--no-cooldown", dest="no_cooldown", action="store_true")
        c.add_argument("--failed-sends-count", dest="failed_sends_count",
                       action=argparse.BooleanOptionalAction, default=None,
                       help="whether a send the gateway refused still holds the cooldown "
                            "(default: no, the reservation is released)")
        c.add_argument("--outside-window", dest="outside_window", choices=["hold", "drop"],
                       help="a trigger outside the window: hold it until the window opens "
                            "(default) or drop it")
        c.add_argument("--on-cooldown", dest="on_cooldown", choices=["drop", "defer"],
                       help="a trigger inside the cooldown: drop it (default) or defer it "
                            "until the cooldown ends")
        c.add_argument("--max-hold", dest="max_hold", metavar="DURATION",
                       help="the longest a message may be held, e.g. 6h (default 7d); "
                            "past it, it expires")
        c.add_argument("--priority", type=int,
                       help="of a number's held messages due together, the highest priority "
                            "goes out (default 0)")
        c.add_argument("--transactional", action=argparse.BooleanOptionalAction, default=None,
                       help="order confirmations, one-time codes: sent to numbers that "
                            "opted out too (default: no)")
    for action in ("enable", "disable"):
        actions.add_parser(action).add_argument("automation_id")
    a.set_defaults(func=cmd_automation)

    h = sub.add_parser("held", help="list or cancel an automation's held messages")
    held_actions = h.add_subparsers(dest="action", required=True)
    held_list = held_actions.add_parser("list", help="what is held and when it goes out")
    held_list.add_argument("automation_id")
    held_list.add_argument("--json", action="store_true")
    held_actions.add_parser(
        "cancel", help="cancel every held message (each gets the decision cancelled)"
    ).add_argument("automation_id")
    h.set_defaults(func=cmd_held)

    o = sub.add_parser("optout", help="opt a number out of SMS or back in; list or check")
    optout_actions = o.add_subparsers(dest="action", required=True)
    for action, what in (("add", "opt the number out"), ("remove", "opt it back in"),
                         ("check", "say whether it is opted out")):
        one = optout_actions.add_parser(action, help=what)
        one.add_argument("number")
        one.add_argument("--country", help="ISO region (DK) or calling code (+45), for a "
                                           "number written without its prefix")
        if action == "add":
            one.add_argument("--scope", help="where the person opted out from (kept for "
                                             "the record)")
        else:
            one.set_defaults(scope=None)
    optout_list = optout_actions.add_parser("list", help="every number opted out now")
    optout_list.add_argument("--json", action="store_true")
    o.set_defaults(func=cmd_optout)

    e = sub.add_parser("erase", help="erase a number from every state the project keeps "
                                     "(an opt-out stays, as a keyed hash)")
    e.add_argument("number")
    e.add_argument("--country", help="ISO region (DK) or calling code (+45), for a number "
                                     "written without its prefix")
    e.set_defaults(func=cmd_erase)

    c = sub.add_parser("connector", help="send sms.outbox through an HTTP SMS gateway")
    c.add_argument("--gateway", choices=["gatewayapi", "webhook"], default=None,
                   help="adapter (default: SMSCOOL_GATEWAY, else gatewayapi)")
    c.set_defaults(func=cmd_connector)

    # Listed for --help only: main() hands its arguments to the fake gateway's own parser.
    sub.add_parser("fake-gateway", add_help=False,
                   help="a fake SMS gateway on loopback, for tests and the demo "
                        "(smscool fake-gateway --help)")

    t = sub.add_parser("tail", help="print a topic's records as JSON lines, decoded")
    t.add_argument("topic")
    t.add_argument("--schema", help="full Avro name, for topics the project does not know")
    t.add_argument("--limit", type=int, default=0)
    t.add_argument("--follow", action="store_true", help="keep waiting for new records")
    t.add_argument("--idle", type=float, default=2.0, help="stop after this many idle seconds")
    t.set_defaults(func=cmd_tail)

    sub.add_parser("web", help="serve the REST API over the automations "
                               "(SMSCOOL_WEB_PORT, SMSCOOL_WEB_TOKEN)").set_defaults(func=cmd_web)

    d = sub.add_parser("demo", help="run the whole pipeline on the embedded broker")
    d.add_argument("--triggers", type=int, default=5000)
    d.add_argument("--numbers", type=int, default=2000)
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--serve", action="store_true",
                   help="after the summary, keep the pipeline and the page up until Ctrl-C")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["fake-gateway"]:
        from connectors.fake_gateway import main as fake_gateway_main

        return fake_gateway_main(argv[1:])
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except ValueError as exc:
        print(f"smscool {args.command}: {exc}", file=sys.stderr)
        return 2
    except (KafkaException, NotDelivered) as exc:
        print(f"smscool {args.command}: Kafka did not answer: {_kafka_reason(exc)}. Is the "
              f"broker at KAFKA_BOOTSTRAP_SERVERS={_settings().bootstrap_servers} running?",
              file=sys.stderr)
        return 1


def _kafka_reason(exc: Exception) -> str:
    if isinstance(exc, KafkaException) and isinstance(exc.args[0], KafkaError):
        return str(exc.args[0].str())
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())
