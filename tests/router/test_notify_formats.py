"""Webhook bodies as pure functions: shapes, escaping, size limits, signatures, answers."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any, get_args

import orjson
import pytest

from llmops.config import build
from llmops.config.router import NotifyKind, RouterConfig, WebhookConfig
from llmops.router.events import Event
from llmops.router.notify_cooldown import Repeats
from llmops.router.notify_formats import Digest, delivery_problem, render_delivery
from llmops.router.notify_report import TrafficReport, TrafficRow
from llmops.router.notify_sender import _scrub, redact_url

T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
DOWN = Event(T0, "unhealthy", "error", "m@h:1", "backend m@h:1 is unhealthy: <timeout> & more")
RELOAD = Event(T0 + 1, "config_reloaded", "info", None, "config reloaded (generation 2)")
FLAP = Event(T0 + 5, "unhealthy", "error", "m@h:2", "backend m@h:2 is unhealthy: HTTP 500")
FLAPS = Repeats("m@h:2", (("unhealthy", 3), ("recovered", 2)), T0 - 100, FLAP, T0 + 20)
REPORT = TrafficReport(
    T0 - 300,
    T0,
    (
        TrafficRow("m", "m@h:1", "unhealthy", 40, 10, 0),
        TrafficRow("m", "m@h:2", "healthy", 560, 0, 3),
    ),
)


def render(fmt: Any, digest: Digest, secret: str | None = None) -> tuple[Any, dict[str, str]]:
    body, headers = render_delivery(fmt, digest, "gw-1", secret, now=T0 + 30)
    return orjson.loads(body), headers


def text_of(fmt: str, body: dict[str, Any]) -> str:
    return str(
        {"slack": lambda: body["text"], "wecom": lambda: body["markdown"]["content"]}.get(
            fmt, lambda: body["content"]["text"]
        )()
    )


def test_generic_body_lists_events_summaries_and_the_report_in_order() -> None:
    body, headers = render("generic", Digest((RELOAD, DOWN), (FLAPS,), REPORT, dropped=2))
    assert headers == {"Content-Type": "application/json"}
    assert {k: body[k] for k in ("source", "host", "sent_at", "dropped")} == {
        "source": "llmops",
        "host": "gw-1",
        "sent_at": T0 + 30,
        "dropped": 2,
    }
    assert [e["kind"] for e in body["events"]] == [
        "unhealthy",
        "config_reloaded",
        "repeated",
        "report",
    ]
    assert body["events"][0] == {
        "at": T0,
        "kind": "unhealthy",
        "level": "error",
        "backend": "m@h:1",
        "message": DOWN.message,
    }
    repeated = body["events"][2]
    assert repeated["counts"] == {"unhealthy": 3, "recovered": 2}
    assert repeated["since"] == T0 - 100 and repeated["latest"]["message"] == FLAP.message
    assert repeated["message"] == (
        "backend m@h:2: unhealthy 3 more times, recovered 2 more times in the last 2 min; "
        f"latest: {FLAP.message}"
    )
    report = body["events"][3]
    assert report["period_s"] == 300
    assert report["models"] == [
        {"model": "m", "backends": 2, "healthy": 1, "requests": 600, "errors": 10, "in_flight": 3}
    ]
    assert report["backends"][0] == {
        "model": "m",
        "backend": "m@h:1",
        "state": "unhealthy",
        "requests": 40,
        "errors": 10,
        "in_flight": 0,
    }


def test_generic_signature_covers_timestamp_and_body() -> None:
    raw, headers = render_delivery("generic", Digest((DOWN,)), "gw-1", "s3cret", now=T0)
    assert headers["X-Llmops-Timestamp"] == str(int(T0))
    expected = hmac.new(b"s3cret", f"{int(T0)}.".encode() + raw, hashlib.sha256).hexdigest()
    assert headers["X-Llmops-Signature"] == f"sha256={expected}"


def test_chat_formats_have_their_platform_shapes() -> None:
    digest = Digest((DOWN, RELOAD), (), REPORT)
    slack, _ = render("slack", digest)
    assert list(slack) == ["text"]
    assert slack["text"].splitlines()[:3] == [
        "*llmops router on gw-1: 2 events*",
        ":red_circle: *unhealthy* backend m@h:1 is unhealthy: &lt;timeout&gt; &amp; more "
        "(08:00:00 UTC)",
        ":large_blue_circle: *config_reloaded* config reloaded (generation 2) (08:00:01 UTC)",
    ]
    assert (
        "*m*: 600 requests (2.00/s), 10 errors (1.7%), 3 in flight, 1/2 backends healthy"
        in (slack["text"])
    )
    assert "  - `m@h:1` unhealthy: 40 requests, 10 errors, 0 in flight" in slack["text"]

    wecom, _ = render("wecom", digest)
    assert wecom["msgtype"] == "markdown" and list(wecom["markdown"]) == ["content"]
    assert (
        wecom["markdown"]["content"]
        .splitlines()[1]
        .startswith(
            '<font color="warning">ERROR</font> **unhealthy** backend m@h:1 is unhealthy: <timeout>'
        )
    )

    feishu, _ = render("feishu", digest)
    assert feishu["msg_type"] == "text" and list(feishu["content"]) == ["text"]
    assert feishu["content"]["text"].splitlines()[:2] == [
        "llmops router on gw-1: 2 events",
        "[ERROR] unhealthy backend m@h:1 is unhealthy: <timeout> & more (08:00:00 UTC)",
    ]
    assert "timestamp" not in feishu  # unsigned without a secret


def test_feishu_signature_is_hmac_of_timestamp_and_secret() -> None:
    body, _ = render("feishu", Digest((DOWN,)), secret="s3cret")
    assert body["timestamp"] == str(int(T0 + 30))
    key = f"{int(T0 + 30)}\ns3cret".encode()
    assert body["sign"] == base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    assert body["msg_type"] == "text"


@pytest.mark.parametrize(("fmt", "limit"), [("slack", 3900), ("wecom", 4096), ("feishu", 18000)])
def test_long_batches_are_cut_to_the_platform_limit_with_a_count(fmt: str, limit: int) -> None:
    # Multi-byte text: the limits are in bytes.
    events = tuple(
        Event(T0 + i, "drained", "info", f"模型@h:{i}", f"backend 模型@h:{i} drained " + "注" * 50)
        for i in range(400)
    )
    body, _ = render(fmt, Digest(events))
    text = text_of(fmt, body)
    lines = text.splitlines()
    assert len(text.encode()) <= limit
    assert lines[-1].startswith("... ") and lines[-1].endswith(" more line(s) not shown")
    shown_events = len(lines) - 2  # the title and the cut line
    assert int(lines[-1].split()[1]) == 400 - shown_events
    assert len(orjson.dumps(body)) < 20 * 1024


def test_one_huge_event_is_capped_so_the_others_still_fit() -> None:
    rejected = Event(T0, "config_rejected", "error", None, "config reload rejected: " + "x" * 9000)
    body, _ = render("wecom", Digest((rejected, DOWN)))
    lines = text_of("wecom", body).splitlines()
    assert len(lines) == 3 and lines[1].endswith("... (08:00:00 UTC)") and len(lines[1]) < 800
    assert "m@h:1" in lines[2]


@pytest.mark.parametrize(
    ("fmt", "status", "answer", "problem"),
    [
        ("generic", 204, b"", None),
        ("generic", 500, b"boom", "HTTP 500: boom"),
        ("slack", 200, b"ok", None),
        ("slack", 404, b"no_service", "HTTP 404: no_service"),
        ("slack", 403, b"", "HTTP 403"),
        ("wecom", 200, b'{"errcode":0,"errmsg":"ok"}', None),
        (
            "wecom",
            200,
            b'{"errcode":93000,"errmsg":"invalid webhook url"}',
            "errcode 93000: invalid webhook url",
        ),
        ("feishu", 200, b'{"code":0,"msg":"success","data":{}}', None),
        ("feishu", 200, b'{"code":19021,"msg":"sign match fail"}', "code 19021: sign match fail"),
        ("feishu", 200, b'{"StatusCode":0,"StatusMessage":"success"}', None),
        ("feishu", 200, b"not json", None),
    ],
)
def test_delivery_problems_include_errors_sent_with_http_200(
    fmt: Any, status: int, answer: bytes, problem: str | None
) -> None:
    assert delivery_problem(fmt, status, answer) == problem


def test_webhook_urls_are_shown_without_their_tokens() -> None:
    url = "https://bot:pw@qyapi.weixin.qq.com:8443/cgi-bin/webhook/send?key=SECRET-KEY"
    assert redact_url(url) == "https://qyapi.weixin.qq.com:8443"
    scrubbed = _scrub(f"InvalidURL: {url}; path /cgi-bin/webhook/send key=SECRET-KEY", url)
    assert "SECRET" not in scrubbed and "webhook/send" not in scrubbed and "pw" not in scrubbed


def test_notify_config_defaults_and_validation() -> None:
    problems: list[str] = []
    config = build(
        RouterConfig,
        {"notify": {"webhooks": [{"url": "https://hooks.slack.com/services/T/B/X"}]}},
        problems,
    )
    assert problems == [] and config is not None
    [hook] = config.notify.webhooks
    assert (hook.format, hook.min_interval, hook.events) == ("generic", 60.0, get_args(NotifyKind))
    assert (config.notify.batch_window, config.notify.report_interval) == (2.0, None)
    assert "hooks.slack.com" not in repr(hook)  # the URL holds a token

    problems = []
    bad = {
        "webhooks": [
            {
                "url": "ftp://x",
                "format": "teams",
                "events": ["unhealthy", "boom"],
                "min_interval": -1,
            },
            {"url": "http://ok", "hedaers": {}},
        ],
        "report_interval": 0,
    }
    assert build(RouterConfig, {"notify": bad}, problems) is None
    assert sorted(problems) == [
        "notify.report_interval: must be > 0",
        "notify.webhooks[0].events[1]: must be one of "
        + ", ".join(get_args(NotifyKind))
        + " (got 'boom')",
        "notify.webhooks[0].format: must be one of generic, slack, wecom, feishu (got 'teams')",
        "notify.webhooks[0].min_interval: must be >= 0",
        "notify.webhooks[0].url: must be an http:// or https:// URL",
        "notify.webhooks[1].hedaers: unknown key",
    ]
    assert WebhookConfig(url="http://x").headers == {}
