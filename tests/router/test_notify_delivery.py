"""Webhooks end to end: a real router in front of real sims posting to real local receivers."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from llmops.config.router import WebhookConfig
from llmops.router.app import router_url, running_router
from llmops.router.events import Event
from llmops.router.notify_formats import Digest
from llmops.router.notify_sender import OUTBOX_MESSAGES, WebhookSender
from tests.conftest import StartRouter, StartSim, router_config
from tests.router.notify_receivers import (
    FAST_HEALTH,
    TOKEN_PATH,
    TOKEN_QUERY,
    Delivery,
    Receiver,
    closed_port_url,
    started_receiver,
)

StartReceiver = Callable[..., Awaitable[Receiver]]

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture
async def start_receiver() -> AsyncIterator[StartReceiver]:
    """``receiver = await start_receiver(status=500)``: real receivers, stopped after the test."""
    async with contextlib.AsyncExitStack() as stack:
        yield functools.partial(started_receiver, stack)


def generic_events(deliveries: list[Delivery]) -> list[dict[str, Any]]:
    return [event for d in deliveries for event in d.body["events"]]


def chat_text(fmt: str, body: dict[str, Any]) -> str:
    if fmt == "slack":
        return str(body["text"])
    if fmt == "wecom":
        assert body["msgtype"] == "markdown"
        return str(body["markdown"]["content"])
    assert body["msg_type"] == "text"
    return str(body["content"]["text"])


async def test_each_format_reports_a_real_health_change(
    start_sim: StartSim, start_router: StartRouter, start_receiver: StartReceiver
) -> None:
    sim = await start_sim(model="m")
    formats = ["generic", "slack", "wecom", "feishu"]
    receivers = {fmt: await start_receiver() for fmt in formats}
    webhooks: list[dict[str, Any]] = [
        {"url": receivers[f].url, "format": f, "min_interval": 0} for f in formats
    ]
    webhooks[0] |= {"headers": {"Authorization": "Bearer hook-token"}, "secret": "s3cret"}
    await start_router(
        router_config(
            [("m", sim.url)],
            health_check=FAST_HEALTH,
            notify={"webhooks": webhooks, "batch_window": 0.1},
        )
    )
    backend_id = f"m@{sim.url.removeprefix('http://')}"

    sim.set_mode("hang")
    for fmt in formats:
        await receivers[fmt].wait_for(lambda ds: len(ds) >= 1)
    sim.set_mode("ok")
    for fmt in formats:
        await receivers[fmt].wait_for(lambda ds: len(ds) >= 2)

    for fmt, receiver in receivers.items():
        down, up = receiver.deliveries[:2]
        for delivery in (down, up):
            assert delivery.path_qs == f"{TOKEN_PATH}?{TOKEN_QUERY}"  # the URL as configured
            assert delivery.headers["Content-Type"] == "application/json"
        if fmt == "generic":
            assert down.headers["Authorization"] == "Bearer hook-token"
            stamp = down.headers["X-Llmops-Timestamp"]
            mac = hmac.new(b"s3cret", f"{stamp}.".encode() + down.raw, hashlib.sha256)
            assert down.headers["X-Llmops-Signature"] == f"sha256={mac.hexdigest()}"
            assert down.body["source"] == "llmops"
            [event] = down.body["events"]
            assert (event["kind"], event["level"], event["backend"]) == (
                "unhealthy",
                "error",
                backend_id,
            )
            assert backend_id in event["message"]
            assert [e["kind"] for e in up.body["events"]] == ["recovered"]
            continue
        down_text, up_text = chat_text(fmt, down.body), chat_text(fmt, up.body)
        assert down_text.startswith(
            {"slack": "*llmops router on ", "wecom": "**llmops router on ", "feishu": "llmops"}[fmt]
        )
        assert f"{backend_id} is unhealthy" in down_text
        assert "unhealthy" in down_text and "recovered" not in down_text
        assert f"{backend_id} is healthy again" in up_text


async def test_drains_within_the_window_arrive_in_one_delivery(
    start_sim: StartSim,
    start_router: StartRouter,
    start_receiver: StartReceiver,
    http: aiohttp.ClientSession,
) -> None:
    sims = [await start_sim(model="m") for _ in range(3)]
    receiver = await start_receiver()
    url = await start_router(
        router_config(
            [("m", s.url) for s in sims],
            notify={"webhooks": [{"url": receiver.url}], "batch_window": 1.0},
        )
    )
    ids = [f"m@{s.url.removeprefix('http://')}" for s in sims]
    for backend_id in ids:
        async with http.post(f"{url}/admin/backends/{backend_id}/drain") as response:
            assert response.status == 200

    [delivery] = await receiver.wait_for(lambda ds: len(ds) >= 1)
    events = delivery.body["events"]
    assert [(e["kind"], e["backend"]) for e in events] == [("drained", i) for i in ids]
    await asyncio.sleep(1.2)  # past another window: nothing else was sent
    assert len(receiver.deliveries) == 1


async def test_a_flapping_backend_is_summarized_not_dropped(
    start_sim: StartSim,
    start_router: StartRouter,
    start_receiver: StartReceiver,
    http: aiohttp.ClientSession,
) -> None:
    sim = await start_sim(model="m")
    receiver = await start_receiver()
    url = await start_router(
        router_config(
            [("m", sim.url)],
            health_check=FAST_HEALTH,
            notify={
                "webhooks": [{"url": receiver.url, "min_interval": 3.0, "events": ["unhealthy"]}],
                "batch_window": 0.2,
            },
        )
    )
    flaps = 4
    for _ in range(flaps):  # each flap waits until the router has seen it
        sim.set_mode("hang")
        await wait_for_state(http, url, "unhealthy")
        sim.set_mode("ok")
        await wait_for_state(http, url, "healthy")
    async with http.get(f"{url}/status") as response:
        recorded = [e for e in (await response.json())["events"] if "is unhealthy" in e["message"]]
    assert len(recorded) == flaps

    def reported(deliveries: list[Delivery]) -> int:
        events = generic_events(deliveries)
        return sum(1 for e in events if e["kind"] == "unhealthy") + sum(
            int(e["counts"].get("unhealthy", 0)) for e in events if e["kind"] == "repeated"
        )

    deliveries = await receiver.wait_for(lambda ds: reported(ds) >= flaps)
    events = generic_events(deliveries)
    assert reported(deliveries) == flaps  # every flap accounted for, none twice
    assert [e["kind"] for e in events] == ["unhealthy", "repeated"]
    summary = events[1]
    assert summary["counts"] == {"unhealthy": flaps - 1}
    assert re.search(rf"unhealthy {flaps - 1} more times in the last \d+ s", summary["message"])
    # The summary waited for the cool-down, counted from the first delivery.
    assert deliveries[1].at - deliveries[0].at >= 3.0 - 0.1


async def wait_for_state(http: aiohttp.ClientSession, url: str, state: str) -> None:
    async with asyncio.timeout(10):
        while True:
            async with http.get(f"{url}/status") as response:
                if (await response.json())["backends"][0]["state"] == state:
                    return
            await asyncio.sleep(0.02)


async def test_failing_receivers_are_logged_once_and_never_touch_requests(
    start_sim: StartSim,
    start_router: StartRouter,
    start_receiver: StartReceiver,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="llmops.router.notify")
    sims = [await start_sim(model="m", ttft_ms=1, itl_ms=1) for _ in range(2)]
    failing = await start_receiver(status=500, answer=b"boom")
    hanging = await start_receiver(hang=True)
    dead_url = closed_port_url()
    # Feishu answers some failures with HTTP 200 and an error code in the body.
    refusing = await start_receiver(answer=b'{"code":19021,"msg":"sign match fail"}')
    never_reached = await start_receiver()  # its header cannot be sent
    healthy = await start_receiver()
    url = await start_router(
        router_config(
            [("m", s.url) for s in sims],
            notify={
                "webhooks": [
                    {"url": failing.url, "min_interval": 0},
                    {"url": hanging.url, "format": "slack", "min_interval": 0},
                    {"url": dead_url, "format": "wecom", "min_interval": 0},
                    {"url": refusing.url, "format": "feishu", "min_interval": 0},
                    {
                        "url": never_reached.url,
                        "headers": {"X-Key": "k\r\nX: y"},
                        "min_interval": 0,
                    },
                    {"url": healthy.url, "min_interval": 0},
                ],
                "batch_window": 0,
                "timeout": 0.3,
            },
        )
    )
    backend_id = f"m@{sims[0].url.removeprefix('http://')}"

    async def one_request() -> int:
        async with http.post(f"{url}/v1/chat/completions", json=CHAT) as response:
            await response.read()
            return response.status

    statuses: list[int] = []
    for action in ("drain", "undrain", "drain"):
        attempts_before = failing.attempts
        async with http.post(f"{url}/admin/backends/{backend_id}/{action}") as response:
            assert response.status == 200
        statuses += await asyncio.gather(*(one_request() for _ in range(10)))
        # One failed delivery (tried twice) per event: each event is its own batch.
        await failing.wait_for_attempts(attempts_before + 2)
    assert statuses == [200] * 30
    # Every webhook delivers from its own outbox: the hanging one (1.6 s a message) holds up
    # nobody else.
    await healthy.wait_for(lambda ds: len(ds) == 3)
    assert hanging.attempts < 5

    await hanging.wait_for_attempts(6)  # 3 deliveries, each retried
    failing_host, hanging_host, dead_host, refusing_host, never_host = (
        u.split(TOKEN_PATH)[0]
        for u in (failing.url, hanging.url, dead_url, refusing.url, never_reached.url)
    )
    warnings = await logged(caplog, logging.WARNING, lambda ms: len(ms) >= 5)
    problems = {
        failing_host: "HTTP 500: boom",
        hanging_host: "no answer within 0.3s",
        dead_host: "ClientConnectorError: Cannot connect to host",
        refusing_host: "code 19021: sign match fail",
        never_host: "ValueError: Forbidden control character detected in headers",
    }
    assert len(warnings) == 5
    assert never_reached.attempts == 0
    assert refusing.attempts == 3  # a refusal in the body is not retried
    for host, problem in problems.items():
        [warning] = [w for w in warnings if w.startswith(f"webhook {host}: ")]
        assert warning.startswith(f"webhook {host}: delivery failed ({problem}")
        assert warning.endswith("; further failures are not logged until a delivery succeeds")
    assert all("T0KEN" not in r.getMessage() for r in caplog.records)  # URLs hold tokens

    failing.status = 200
    async with http.post(f"{url}/admin/backends/{backend_id}/undrain") as response:
        assert response.status == 200
    infos = await logged(caplog, logging.INFO, lambda ms: len(ms) >= 1)
    assert infos == [f"webhook {failing_host}: delivered again after 3 failed deliveries"]
    [delivery] = failing.deliveries
    assert [e["kind"] for e in delivery.body["events"]] == ["undrained"]


async def logged(
    caplog: pytest.LogCaptureFixture, level: int, enough: Callable[[list[str]], bool]
) -> list[str]:
    """The notifier's log messages at ``level``, once there are ``enough`` (it logs after I/O)."""
    async with asyncio.timeout(10):
        while True:
            messages = [
                r.getMessage()
                for r in caplog.records
                if r.name == "llmops.router.notify" and r.levelno == level
            ]
            if enough(messages):
                return messages
            await asyncio.sleep(0.05)


async def test_periodic_report_counts_traffic_since_the_last_report(
    start_sim: StartSim,
    start_router: StartRouter,
    start_receiver: StartReceiver,
    http: aiohttp.ClientSession,
) -> None:
    sim_a = await start_sim(model="a", ttft_ms=1, itl_ms=1)
    sim_b = await start_sim(model="b", ttft_ms=1, itl_ms=1, fail_rate=1.0)
    generic, slack = await start_receiver(), await start_receiver()
    url = await start_router(
        router_config(
            [("a", sim_a.url), ("b", sim_b.url)],
            routing={"num_retries": 0},
            circuit_breaker={"failure_threshold": 100},
            notify={
                "webhooks": [
                    {"url": generic.url, "events": ["report"]},
                    {"url": slack.url, "format": "slack", "events": ["report"]},
                ],
                "report_interval": 1.0,
            },
        )
    )
    await generic.wait_for(lambda ds: len(ds) >= 1)  # a period boundary

    async def one_request(model: str) -> int:
        async with http.post(f"{url}/v1/chat/completions", json={**CHAT, "model": model}) as r:
            await r.read()
            return r.status

    statuses = await asyncio.gather(
        *(one_request("a") for _ in range(5)), *(one_request("b") for _ in range(2))
    )
    assert sorted(statuses) == [200] * 5 + [500] * 2
    deliveries = await generic.wait_for(lambda ds: len(ds) >= 3)

    def numbers(delivery: Delivery) -> dict[str, tuple[int, int, int, str]]:
        [report] = delivery.body["events"]
        assert report["kind"] == "report"
        return {
            row["model"]: (row["requests"], row["errors"], row["in_flight"], row["state"])
            for row in report["backends"]
        }

    assert numbers(deliveries[1]) == {"a": (5, 0, 0, "healthy"), "b": (2, 2, 0, "healthy")}
    assert numbers(deliveries[2]) == {"a": (0, 0, 0, "healthy"), "b": (0, 0, 0, "healthy")}
    models = {m["model"]: m for m in deliveries[1].body["events"][0]["models"]}
    assert (models["b"]["requests"], models["b"]["errors"], models["b"]["healthy"]) == (2, 2, 1)

    slack_deliveries = await slack.wait_for(lambda ds: len(ds) >= 2)
    text = slack_deliveries[1].body["text"]
    assert "*Traffic report, last 1 s" in text
    assert "*b*: 2 requests" in text and "2 errors (100.0%)" in text


async def test_a_reload_changes_the_webhooks_and_a_stopping_router_flushes(
    start_sim: StartSim,
    start_receiver: StartReceiver,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim = await start_sim(model="m")
    old, new = await start_receiver(), await start_receiver()
    monkeypatch.setenv("LLMOPS_TEST_WEBHOOK", new.url)  # a URL with a token comes from a secret
    config_path = tmp_path / "router.yaml"

    def write_config(*webhooks: dict[str, Any]) -> None:
        config = router_config(
            [("m", sim.url)], notify={"webhooks": list(webhooks), "batch_window": 5}
        )
        config_path.write_text(yaml.safe_dump(config))

    write_config({"url": old.url, "events": ["config_reloaded"]})
    async with running_router(config_path, "127.0.0.1", 0) as runner:
        url = router_url(runner)
        write_config({"url": "${env:LLMOPS_TEST_WEBHOOK}", "format": "slack"})
        async with http.post(f"{url}/admin/reload") as response:
            assert response.status == 200
        async with http.post(f"{url}/admin/backends/m@{sim.url[7:]}/drain") as response:
            assert response.status == 200
        # The batch window (5 s) has not ended: stopping the router sends what it holds.
    assert old.deliveries == []  # removed by the reload before the batch went out
    [delivery] = new.deliveries
    lines = delivery.body["text"].splitlines()
    assert lines[0].endswith(": 2 events*")
    assert "*config_reloaded* config reloaded (generation 2" in lines[1]
    assert f"*drained* backend m@{sim.url[7:]} drained by an operator" in lines[2]


async def test_a_full_outbox_gives_up_the_oldest_messages_and_says_so(
    start_receiver: StartReceiver,
) -> None:
    receiver = await start_receiver()
    config = WebhookConfig(url=receiver.url)
    async with aiohttp.ClientSession() as session:
        sender = WebhookSender(config, session, "gw-1", lambda: 2.0)
        try:
            # Posted before the sender's task first runs: more than its outbox holds.
            for i in range(OUTBOX_MESSAGES + 5):
                sender.post(Digest((Event(float(i), "drained", "info", f"b{i}", f"b{i} drained"),)))
            deliveries = await receiver.wait_for(lambda ds: len(ds) >= OUTBOX_MESSAGES)
        finally:
            await sender.stop()
    first = deliveries[0].body
    assert first["dropped"] == 5
    assert [e["backend"] for d in deliveries for e in d.body["events"]] == [
        f"b{i}" for i in range(5, OUTBOX_MESSAGES + 5)
    ]
    assert all(d.body["dropped"] == 0 for d in deliveries[1:])
