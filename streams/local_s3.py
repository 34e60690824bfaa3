"""A local S3 server for the embedded broker's S3 storage: moto's, with ListObjectsV2
made fast, and S3 its only service.

The broker's S3 engine writes one object per record batch and lists a partition's
objects on every fetch that has records to return. moto answers a listing by walking
every key of the bucket and sorting what matches, for each page of 1,000, and renders
each listed key through its generic AWS serializer (about 0.4 ms a key on a 2-core
machine); and it finds the service of every request by matching its host against the
URL patterns of every AWS service it knows. Under the chaos harness that was half of
the server's time, growing with the bucket. `python -m streams.local_s3` runs moto's
server with those three replaced: a sorted index of each bucket's key names (kept in
step with every write and delete moto makes) serves a page by bisection, the answer
is written directly, and every request but moto's own API goes to S3. It answers
one request at a time, which makes moto's conditional writes (`If-None-Match`,
`If-Match`) atomic (`install_s3_dispatch`). And it keeps a partition's listing from
running ahead of a batch that has its offsets but is not written yet
(`BatchesAwaited`); the rest is moto's own.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading
import time
import urllib.request
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable
from typing import IO, Any
from xml.sax.saxutils import escape

MOTO_VERSION = "5.2.5"
log = logging.getLogger("streams.local_s3")  # run as __main__


class LocalS3:
    """The server on a loopback port, with the bucket the broker writes to. It keeps
    its objects in memory, so they last as long as this process. A development
    dependency (moto: `pip install -e '.[dev]'`)."""

    BUCKET = "tansu"

    def __init__(self, port: int | None = None, log: IO[bytes] | int | None = None) -> None:
        from streams.broker import free_port

        self.port = port or free_port()
        self._log = subprocess.DEVNULL if log is None else log
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def broker_env(self) -> dict[str, str]:
        """What the broker's S3 engine needs to find the bucket (moto takes any key)."""
        return {"AWS_ENDPOINT": self.endpoint, "AWS_ALLOW_HTTP": "true",
                "AWS_ACCESS_KEY_ID": "sms-cooldown", "AWS_SECRET_ACCESS_KEY": "sms-cooldown",
                "AWS_DEFAULT_REGION": "us-east-1"}

    def start(self, timeout_s: float = 60.0) -> LocalS3:
        from streams.broker import wait_for_listener

        _require_moto()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "streams.local_s3", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log, stderr=self._log, start_new_session=True)
        try:
            wait_for_listener(self._process, self.port, "the local S3 server", timeout_s)
            # Creating a bucket that exists already is no error in us-east-1.
            request = urllib.request.Request(f"{self.endpoint}/{self.BUCKET}", method="PUT")
            with urllib.request.urlopen(request, timeout=10):
                pass
        except BaseException:
            self.stop()
            raise
        return self

    def broker_starting(self) -> None:
        """Tell the server that the broker starts: offsets its previous run took for a
        batch it never wrote are holes from now on (`BatchesAwaited`)."""
        request = urllib.request.Request(self.endpoint + BROKER_STARTING_PATH, method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def stop(self) -> None:
        from streams.broker import stop_process

        stop_process(self._process)


def _require_moto() -> None:
    try:
        import moto
    except ImportError:
        raise SystemExit("The embedded broker's S3 storage needs moto's S3 server "
                         "(pip install 'moto[server]==5.2.5'; it comes with "
                         "pip install -e '.[dev]').") from None
    if moto.__version__ != MOTO_VERSION:
        raise SystemExit(f"streams.local_s3 patches moto {MOTO_VERSION}, found "
                         f"{moto.__version__}: pip install 'moto[server]=={MOTO_VERSION}'")


def _xml(name: str, value: Any) -> str:
    """One element; a list is the element repeated (S3's lists are flattened)."""
    if isinstance(value, list):
        return "".join(_xml(name, item) for item in value)
    if isinstance(value, dict):
        inner = "".join(_xml(k, v) for k, v in value.items() if v is not None)
    elif isinstance(value, bool):
        inner = "true" if value else "false"
    else:
        inner = escape(str(value))
    return f"<{name}>{inner}</{name}>"


def list_objects_v2_xml(result: dict[str, Any]) -> str:
    """moto's ListObjectsV2 result as S3 writes it."""
    return ('<?xml version="1.0" encoding="UTF-8"?>'
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            + "".join(_xml(k, v) for k, v in result.items() if v is not None)
            + "</ListBucketResult>")


def install_fast_listing() -> None:
    from moto.s3.responses import S3Response

    serialized = S3Response.serialized

    def fast_serialized(self: Any, action_result: Any) -> Any:
        result = getattr(action_result, "result", None)
        if self.data.get("Action") != "ListObjectsV2" or not isinstance(result, dict):
            return serialized(self, action_result)
        headers = {"Content-Type": "application/xml", **self.response_headers}
        return 200, headers, list_objects_v2_xml(result)

    S3Response.serialized = fast_serialized  # type: ignore[method-assign]


# Guards the building of a bucket's name index against the writes it must not miss.
_INDEX_LOCK = threading.Lock()


def _sorted_names(store: Any) -> list[str]:
    """The store's key names, sorted: built on first use, then kept in step by the
    store's own writes and deletes (`install_sorted_names`)."""
    names: list[str] | None = store.__dict__.get("_sorted_names")
    if names is None:
        with _INDEX_LOCK:
            names = store.__dict__.get("_sorted_names")
            if names is None:
                names = sorted(dict.keys(store))
                store.__dict__["_sorted_names"] = names
    return names


def install_sorted_names() -> None:
    """Every way moto 5.2.5 adds or removes a key name of a bucket (a key store's
    `__setitem__`, `setlist` and `pop`) updates the store's sorted names as well."""
    from moto.s3.utils import _VersionedKeyStore as Store

    def adding(method: Any) -> Any:
        def add(self: Any, key: str, value: Any) -> Any:
            with _INDEX_LOCK:
                new = not dict.__contains__(self, key)
                result = method(self, key, value)
                names = self.__dict__.get("_sorted_names")
                if new and names is not None:
                    insort(names, key)
            return result
        return add

    pop = Store.pop

    def removing(self: Any, key: str) -> None:
        with _INDEX_LOCK:
            pop(self, key)
            names = self.__dict__.get("_sorted_names")
            if names is not None:
                at = bisect_left(names, key)
                if at < len(names) and names[at] == key:
                    del names[at]

    Store.__setitem__ = adding(Store.__setitem__)  # type: ignore[method-assign]
    Store.setlist = adding(Store.setlist)  # type: ignore[method-assign]
    Store.pop = removing  # type: ignore[method-assign,assignment]


def install_indexed_listing() -> None:
    """ListObjectsV2 without a delimiter (all the broker asks) read from the sorted
    names: the page's first name by bisection, then at most a page and one more. The
    same keys, order, truncation and continuation tokens as moto's own."""
    from moto.s3.models import FakeDeleteMarker, FakeTableStorageBucket, S3Backend

    install_sorted_names()
    original = S3Backend.list_objects_v2

    def list_objects_v2(self: Any, bucket: Any, prefix: str | None, delimiter: str | None,
                        continuation_token: str | None, start_after: str | None,
                        max_keys: int) -> Any:
        if delimiter or isinstance(bucket, FakeTableStorageBucket):
            return original(self, bucket, prefix, delimiter, continuation_token,
                            start_after, max_keys)
        after = self._pagination_tokens.get(continuation_token) \
            if continuation_token else start_after
        names = _sorted_names(bucket.keys)
        start = bisect_left(names, prefix or "")
        # Names from here on wait for the batch before them to be written.
        held_from = AWAITED.listing_stop(prefix or "")
        if after:
            start = max(start, bisect_right(names, after))
        keys: list[Any] = []
        while len(keys) <= max_keys:
            # A slice is taken whole, while moto's threads may write meanwhile.
            page = names[start:start + max_keys + 1 - len(keys)]
            if not page:
                break
            start += len(page)
            for name in page:
                if prefix and not name.startswith(prefix):
                    return self._truncate_result(keys, max_keys)
                if held_from is not None and name >= held_from:
                    AWAITED.overtaken(held_from, name)
                    return self._truncate_result(keys, max_keys)
                key = bucket.keys.get(name)
                if key is not None and not isinstance(key, FakeDeleteMarker):
                    keys.append(key)
        return self._truncate_result(keys, max_keys)

    S3Backend.list_objects_v2 = list_objects_v2  # type: ignore[method-assign]


_PARTITION = r"clusters/[^/]+/topics/.+/partitions/\d{10}/"
_WATERMARK = re.compile(f"({_PARTITION})watermark\\.json")
_BATCH = re.compile(f"({_PARTITION})records/(\\d{{20}})\\.batch")
_RECORDS = re.compile(f"({_PARTITION})records/")


class BatchesAwaited:
    """The batches whose offsets the broker has taken but whose objects it has not
    written yet, by partition, and how long a listing waits for them.

    The broker's S3 engine (Tansu 0.6.0) produces a batch in two writes: its
    partition's watermark, which takes the batch's offsets, then the batch object at
    the first of them; nothing keeps a second produce to the partition out in between.
    Its fetch lists the partition's batch objects and returns those from the fetch
    offset on. So when a later batch is written first, a reader at the earlier batch's
    offset is given the later batch alone, moves past the earlier one and never reads
    it (the bundle topic, written by every ingest, is where it happens). A listing
    that stops before the first batch awaited keeps the partition's order. A broker
    killed between the two writes never writes the batch, and its offsets stay a hole,
    which readers pass over: the broker's next start says so (`broker_starting`), and a
    batch a running broker failed to write is waited for `WAIT_S` at most."""

    WAIT_S = 60.0
    SLOW_S = 5.0  # a batch written this long after its offsets is logged

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._awaited: dict[str, dict[int, float]] = {}
        self._reported: set[str] = set()
        self._given_up: set[str] = set()

    def written(self, key: str, before: bytes | None, after: bytes) -> None:
        """Note a write of `key` (`before`: the object it replaced, if any)."""
        if watermark := _WATERMARK.fullmatch(key):
            taken_from, up_to = _high(before), _high(after)
            if up_to is not None and up_to > (taken_from or 0):
                self._awaited.setdefault(watermark[1], {})[taken_from or 0] = self._clock()
        elif batch := _BATCH.fullmatch(key):
            since = self._awaited.get(batch[1], {}).pop(int(batch[2]), None)
            if since is None and key in self._given_up:
                log.warning("%s is written after listings stopped waiting for it: "
                            "readers may have passed over it", key)
            elif since is not None and self._clock() - since > self.SLOW_S:
                log.warning("%s is written %.1f s after its offsets were taken", key,
                            self._clock() - since)

    def broker_starting(self) -> None:
        """The broker (re)starts: what its last run left awaited it will never write."""
        holes = sum(len(awaited) for awaited in self._awaited.values())
        self._awaited.clear()
        if holes:
            log.warning("broker starting: %d batches its last run took offsets for and "
                        "never wrote are holes", holes)

    def listing_stop(self, prefix: str) -> str | None:
        """The first key name a listing of `prefix` leaves out, if any: a partition's
        batch objects from the first batch awaited on."""
        records = _RECORDS.fullmatch(prefix)
        awaited = self._awaited.get(records[1]) if records else None
        if not awaited:
            return None
        now = self._clock()
        for offset in [o for o, since in awaited.items() if now - since > self.WAIT_S]:
            del awaited[offset]
            self._given_up.add(f"{prefix}{offset:020}.batch")
            log.warning("listings wait no longer for %s%020d.batch, not written in %.0f s",
                        prefix, offset, self.WAIT_S)
        return f"{prefix}{min(awaited):020}.batch" if awaited else None

    def overtaken(self, awaited: str, written: str) -> None:
        """Say, once for each batch awaited, that a later one was written before it:
        the order a listing would have got wrong."""
        if awaited not in self._reported:
            self._reported.add(awaited)
            log.warning("listing held at %s: %s is written before it", awaited, written)


def _high(watermark: bytes | None) -> int | None:
    """A watermark object's high offset (None: no object, or no offset yet)."""
    if watermark is None:
        return None
    try:
        high = json.loads(watermark).get("high")
    except (ValueError, AttributeError):
        return None
    return high if isinstance(high, int) else None


AWAITED = BatchesAwaited()


def install_batch_order() -> None:
    """Every object moto 5.2.5 writes (`S3Backend.put_object`) is told to `AWAITED`,
    with the object it replaces; the listing (`install_indexed_listing`) asks it where
    to stop. Atomic with the rest because requests are answered one at a time."""
    from moto.s3.models import S3Backend

    put_object = S3Backend.put_object

    def put_and_note(self: Any, bucket_name: str, key_name: str, value: bytes,
                     *args: Any, **kwargs: Any) -> Any:
        old = self.get_bucket(bucket_name).keys.get(key_name) \
            if _WATERMARK.fullmatch(key_name) else None
        before = old.value if old is not None and hasattr(old, "value") else None
        written = put_object(self, bucket_name, key_name, value, *args, **kwargs)
        AWAITED.written(key_name, before, value)
        return written

    S3Backend.put_object = put_and_note  # type: ignore[method-assign]


class _TurnLock:
    """A lock taken in the order it was asked for. A plain lock lets a request wait
    behind any number of later ones, and a batch write held back that way is one
    that listings stop waiting for."""

    def __init__(self) -> None:
        self._turns = threading.Condition()
        self._next = self._serving = 0

    def __enter__(self) -> None:
        with self._turns:
            turn, self._next = self._next, self._next + 1
            self._turns.wait_for(lambda: self._serving == turn)

    def __exit__(self, *exc: object) -> None:
        with self._turns:
            self._serving += 1
            self._turns.notify_all()


# Where the broker's start is told (`LocalS3.broker_starting`), beside the S3 API.
BROKER_STARTING_PATH = "/_smscool/broker-starting"


def install_s3_dispatch() -> None:
    """Requests answered one at a time, and every one but moto's own API an S3 request.

    One at a time: moto's threaded server lets two requests on one key interleave. Its
    check of a conditional write (`If-Match`, `If-None-Match`) and the write are then
    not atomic, so two of the broker's writes of a partition's watermark could both
    succeed and two batches take the same offset; and a write disposes of the object
    that a concurrent read or write is still answering from ("I/O operation on closed
    file", an error 500). The broker's engine rests on conditional writes being atomic.
    S3 only: no matching of each request's host against every AWS service's URL
    patterns."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    one_at_a_time = _TurnLock()

    def dispatch(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == BROKER_STARTING_PATH:
            with one_at_a_time:
                AWAITED.broker_starting()
            start_response("204 No Content", [])
            return [b""]
        app = self.get_application(environ)
        with one_at_a_time:
            return app(environ, start_response)

    original = DomainDispatcherApplication.get_application

    def get_application(self: Any, environ: dict[str, Any]) -> Any:
        if str(environ.get("PATH_INFO", "")).startswith("/moto-api"):
            return original(self, environ)
        app = self.app_instances.get("s3")
        if app is None:
            with self.lock:
                app = self.app_instances.get("s3") or self.create_app("s3")
                self.app_instances["s3"] = app
        return app

    DomainDispatcherApplication.get_application = get_application  # type: ignore[method-assign]
    DomainDispatcherApplication.__call__ = dispatch  # type: ignore[method-assign]


def main() -> None:
    _require_moto()
    from moto.server import main as moto_main

    install_fast_listing()
    install_indexed_listing()
    install_batch_order()
    install_s3_dispatch()
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # A line per request (thousands a second) cost the server a tenth of its time;
    # errors are still logged.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    moto_main(sys.argv[1:])


if __name__ == "__main__":
    main()
