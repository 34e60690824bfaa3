"""A local S3 server for the embedded broker's S3 storage: moto's, with a faster answer
to ListObjectsV2.

The broker's S3 engine writes one object per record batch and lists a partition's
objects on every fetch that has records to return. moto renders each listed key
through its generic AWS serializer, about 0.4 ms a key on a 2-core machine: a partition
of a few thousand batches made every fetch take a second or more. `python -m
streams.local_s3` runs moto's server with that one answer written directly; everything
else, conditional writes (`If-None-Match`, `If-Match`) among them, is moto's own.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from typing import IO, Any
from xml.sax.saxutils import escape

MOTO_VERSION = "5.2.5"


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


def main() -> None:
    _require_moto()
    from moto.server import main as moto_main

    install_fast_listing()
    moto_main(sys.argv[1:])


if __name__ == "__main__":
    main()
