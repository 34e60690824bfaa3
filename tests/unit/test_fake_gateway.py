"""The fake gateway itself: seeded fault shares, GatewayAPI-style validation, the /_fake
endpoints, and `python -m connectors.fake_gateway` as a process."""

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import urllib.request
from functools import partial
from pathlib import Path

import pytest

from connectors.fake_gateway import FakeGateway
from tests.helpers import run_with_fake

TOKEN = "fake-secret"
AUTH = {"Authorization": f"Token {TOKEN}"}
ROOT = Path(__file__).resolve().parents[2]


def mtsms(n=0, **changes):
    body = {"sender": "Shop", "message": "hello", "recipients": [{"msisdn": 4520000000 + n}],
            "userref": f"d-{n}"}
    body.update(changes)
    return body


with_fake = partial(run_with_fake, token=TOKEN)


async def post(session, url, body=None, headers=AUTH, data=None):
    async with session.post(url, json=body, data=data, headers=headers) as response:
        return response.status, dict(response.headers), await response.json(content_type=None)


async def get(session, url):
    async with session.get(url) as response:
        return await response.json()


def test_fault_shares_are_deterministic_for_a_seed():
    faults = {"p500": 0.1, "p429": 0.1, "p400": 0.05, "ptimeout": 0.05, "timeout_delay_s": 0,
              "seed": 42}

    async def scenario(fake, base_url, session):
        sem = asyncio.Semaphore(32)

        async def one(n):
            async with sem:
                return await post(session, f"{base_url}/rest/mtsms", mtsms(n))

        return await asyncio.gather(*(one(n) for n in range(2000))), fake

    answers, fake = with_fake(scenario, **faults)
    statuses = collections.Counter(status for status, _, _ in answers)
    # Exact for seed 42: the draws do not depend on the order requests arrive in.
    assert statuses == {200: 1522, 500: 190, 429: 185, 400: 103}
    slow = sum(1 for r in fake.requests if r.get("slow"))
    assert slow == 103  # ~5 %, as are the 400s; the 500s and 429s ~10 % each
    # A slow answer still accepted the SMS, so accepted = every 200.
    assert len(fake.accepted) == statuses[200]
    assert len({a["message_id"] for a in fake.accepted}) == len(fake.accepted)
    assert len(fake.requests) == 2000
    for status, headers, answer in answers:
        if status == 429:
            assert headers["Retry-After"] == "1"
        if status == 400:
            assert answer["code"] == "0x0216"
        if status == 200:
            assert isinstance(answer["ids"][0], int) and "usage" in answer


@pytest.mark.parametrize("body, why", [
    (mtsms(sender=""), "sender"),
    (mtsms(sender="TwelveLetter"), "sender"),
    (mtsms(sender="Shop!"), "sender"),
    (mtsms(sender=None), "sender"),
    (mtsms(message=""), "message"),
    (mtsms(message=5), "message"),
    (mtsms(recipients=[]), "recipients"),
    (mtsms(recipients=[{"msisdn": "4520000000"}]), "msisdn"),
    (mtsms(recipients=[{"msisdn": True}]), "msisdn"),
    (mtsms(recipients=[4520000000]), "msisdn"),
    (mtsms(userref=17), "userref"),
    ([mtsms()], "object"),
])
def test_invalid_bodies_get_400(body, why):
    async def scenario(fake, base_url, session):
        return await post(session, f"{base_url}/rest/mtsms", body), fake

    (status, _, answer), fake = with_fake(scenario)
    assert status == 400 and why in answer["message"] and answer["code"]
    assert fake.accepted == [] and fake.requests[0]["status"] == 400


def test_valid_sender_forms():
    async def scenario(fake, base_url, session):
        return [(await post(session, f"{base_url}/rest/mtsms", mtsms(sender=s)))[0]
                for s in ("ElevenChars", "451234567890123", "A1")]

    assert with_fake(scenario) == [200, 200, 200]


def test_unreadable_json_and_wrong_token():
    async def scenario(fake, base_url, session):
        url = f"{base_url}/rest/mtsms"
        return [
            await post(session, url, data=b"{not json",
                       headers={**AUTH, "Content-Type": "application/json"}),
            await post(session, url, mtsms(), headers={"Authorization": "Token nope"}),
            await post(session, url, mtsms(), headers={}),
        ], fake

    (bad_json, wrong, missing), fake = with_fake(scenario)
    assert bad_json[0] == 400
    assert wrong[0] == missing[0] == 401 and wrong[2]["code"]
    assert [r["status"] for r in fake.requests] == [400, 401, 401]


def test_validation_failures_draw_no_fault():
    # Only validated requests draw, so a bad request does not shift the seeded sequence.
    async def statuses(base_url, session):
        return [(await post(session, f"{base_url}/rest/mtsms", mtsms(n)))[0] for n in range(20)]

    async def clean(fake, base_url, session):
        return await statuses(base_url, session)

    async def after_a_bad_request(fake, base_url, session):
        await post(session, f"{base_url}/rest/mtsms", mtsms(sender=""))
        return await statuses(base_url, session)

    options = {"p500": 0.5, "seed": 3}
    expected = with_fake(clean, **options)
    assert 500 in expected and 200 in expected
    assert with_fake(after_a_bad_request, **options) == expected


def test_fake_endpoints():
    async def scenario(fake, base_url, session):
        out = {}
        await post(session, f"{base_url}/rest/mtsms", mtsms(1))
        await post(session, f"{base_url}/webhook", {"to": "+4520000002", "from": "Shop",
                                                     "text": "hi", "reference": "d-2"})
        out["accepted"] = await get(session, f"{base_url}/_fake/accepted")
        out["requests"] = await get(session, f"{base_url}/_fake/requests")
        out["faults"] = await post(session, f"{base_url}/_fake/faults",
                                   {"p500": 1.0, "timeout_delay_s": 0.2})
        out["failed"] = await post(session, f"{base_url}/rest/mtsms", mtsms(3))
        out["bad_faults"] = [
            (await post(session, f"{base_url}/_fake/faults", body))[0]
            for body in ({"p500": 0.7, "p429": 0.7}, {"p501": 0.1}, {"p400": -1}, [1],
                         {"seed": [1]})
        ]
        out["faults_after"] = dict(fake.faults)
        out["reset"] = await post(session, f"{base_url}/_fake/reset", {})
        out["after_reset"] = (await get(session, f"{base_url}/_fake/accepted"),
                              await get(session, f"{base_url}/_fake/requests"))
        return out

    out = with_fake(scenario)
    first, second = out["accepted"]
    assert (first["userref"], first["msisdn"], first["sender"], first["message"]) == (
        "d-1", 4520000001, "Shop", "hello")
    assert (second["userref"], second["msisdn"], second["message_id"]) == (
        "d-2", 4520000002, f"wh-{first['message_id'] + 1}")
    assert isinstance(first["accepted_at_ms"], int)
    assert [(r["path"], r["status"], r["userref"]) for r in out["requests"]] == [
        ("/rest/mtsms", 200, "d-1"), ("/webhook", 200, "d-2")]
    assert all(isinstance(r["at"], float) for r in out["requests"])
    status, _, faults = out["faults"]
    assert status == 200 and faults["p500"] == 1.0 and faults["timeout_delay_s"] == 0.2
    assert out["failed"][0] == 500
    assert out["bad_faults"] == [400] * 5
    assert out["faults_after"]["p500"] == 1.0 and out["faults_after"]["p429"] == 0.0
    assert out["reset"][0] == 200 and out["after_reset"] == ([], [])


def test_constructor_refuses_impossible_faults():
    with pytest.raises(ValueError, match="sum"):
        FakeGateway(p500=0.6, p400=0.6)


def test_process_prints_its_url_and_stops_on_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-m", "connectors.fake_gateway", "--port", "0", "--token", TOKEN,
         "--seed", "1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("fake gateway listening: http://127.0.0.1:")
        base_url = line.split(": ", 1)[1].strip()
        request = urllib.request.Request(
            f"{base_url}/rest/mtsms", data=json.dumps(mtsms(7)).encode(), method="POST",
            headers={**AUTH, "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200 and json.load(response)["ids"]
        with urllib.request.urlopen(f"{base_url}/_fake/accepted", timeout=5) as response:
            assert json.load(response)[0]["userref"] == "d-7"
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert "4520000007" not in line + stdout + stderr
