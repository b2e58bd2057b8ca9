"""Webhook bodies: one batch of fleet events rendered as generic JSON, Slack, WeCom or Feishu.

Pure functions. The chat formats carry one text each, cut to the platform's size limit
(WeCom markdown: 4,096 bytes; Feishu: a 20 KB body; Slack advises under 4,000 characters)
with a line saying how much was left out. Chat platforms answer some failures with HTTP 200
and an error code in the body; ``delivery_problem`` reads those too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from llmops.config.router import WebhookFormat
from llmops.router.events import Event
from llmops.router.notify_cooldown import Repeats, format_duration
from llmops.router.notify_report import TrafficReport, counted, traffic_summary

SOURCE = "llmops"
# One long event (a rejected config lists every problem) must not crowd out the rest.
_MESSAGE_CHARS = 600
_TEXT_LIMIT_BYTES: dict[WebhookFormat, int] = {"slack": 3900, "wecom": 4096, "feishu": 18000}


@dataclass(frozen=True, slots=True)
class Digest:
    """Everything one delivery to one webhook says."""

    events: tuple[Event, ...] = ()
    repeats: tuple[Repeats, ...] = ()
    report: TrafficReport | None = None
    dropped: int = 0  # events lost to a full queue (the notifier's or this webhook's outbox)

    def __bool__(self) -> bool:
        return bool(self.events or self.repeats or self.report or self.dropped)

    @property
    def size(self) -> int:
        """How many events this message tells of (a summary counts what it folded)."""
        return len(self.events) + sum(r.total for r in self.repeats)

    @property
    def items(self) -> list[Event | Repeats]:
        """Events and summaries, oldest first (the report always comes last)."""
        return sorted((*self.events, *self.repeats), key=lambda item: item.at)


def render_delivery(
    fmt: WebhookFormat,
    digest: Digest,
    host: str,
    secret: str | None = None,
    now: float | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The body and extra headers of one POST; ``secret`` signs it the platform's way."""
    now = time.time() if now is None else now
    headers = {"Content-Type": "application/json"}
    if fmt == "generic":
        body = orjson.dumps(generic_body(digest, host, now))
        if secret:
            # Stripe-style: the timestamp is signed with the body so a capture cannot be replayed.
            stamp = str(int(now))
            mac = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256)
            headers["X-Llmops-Timestamp"] = stamp
            headers["X-Llmops-Signature"] = f"sha256={mac.hexdigest()}"
        return body, headers
    text = fit_lines(chat_lines(digest, host, _STYLES[fmt]), _TEXT_LIMIT_BYTES[fmt])
    payload: dict[str, object]
    if fmt == "slack":
        payload = {"text": text}
    elif fmt == "wecom":
        payload = {"msgtype": "markdown", "markdown": {"content": text}}
    else:
        payload = {"msg_type": "text", "content": {"text": text}}
        if secret:
            payload = {**feishu_signature(secret, int(now)), **payload}
    return orjson.dumps(payload), headers


def generic_body(digest: Digest, host: str, now: float) -> dict[str, object]:
    events: list[dict[str, object]] = [item.as_json() for item in digest.items]
    if digest.report is not None:
        events.append(digest.report.as_json())
    return {
        "source": SOURCE,
        "host": host,
        "sent_at": now,
        "dropped": digest.dropped,
        "events": events,
    }


def feishu_signature(secret: str, timestamp: int) -> dict[str, str]:
    """Feishu's custom-bot signature: HMAC-SHA256 keyed by "timestamp\\nsecret" over nothing."""
    key = f"{timestamp}\n{secret}".encode()
    sign = base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    return {"timestamp": str(timestamp), "sign": sign}


def delivery_problem(fmt: WebhookFormat, status: int, body: bytes) -> str | None:
    """Why a webhook's answer means the message did not land, or None if it did."""
    if not 200 <= status < 300:
        return f"HTTP {status}{_short(body)}"
    if fmt not in ("wecom", "feishu"):
        return None
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(answer, dict):
        return None
    # WeCom: {"errcode": 0, "errmsg": "ok"}; Feishu: {"code": 0, "msg": "success"}
    # (older Feishu endpoints answer {"StatusCode": 0, "StatusMessage": "success"}).
    for code_key, message_key in (
        ("errcode", "errmsg"),
        ("code", "msg"),
        ("StatusCode", "StatusMessage"),
    ):
        code = answer.get(code_key)
        if isinstance(code, int) and code != 0:
            return f"{code_key} {code}: {answer.get(message_key, '')}"
    return None


def _short(body: bytes) -> str:
    text = body[:200].decode("utf-8", "replace").strip()
    return f": {text}" if text else ""


@dataclass(frozen=True)
class _Style:
    bold: Callable[[str], str]
    code: Callable[[str], str]
    escape: Callable[[str], str]
    marks: dict[str, str]  # level -> what starts its line


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn reserves exactly these three characters.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(text: str) -> str:
    return text


_STYLES: dict[WebhookFormat, _Style] = {
    "slack": _Style(
        bold=lambda t: f"*{t}*",
        code=lambda t: f"`{t}`",
        escape=_slack_escape,
        marks={"error": ":red_circle:", "warning": ":warning:", "info": ":large_blue_circle:"},
    ),
    "wecom": _Style(
        bold=lambda t: f"**{t}**",
        code=lambda t: f"`{t}`",
        escape=_plain,
        marks={
            "error": '<font color="warning">ERROR</font>',
            "warning": '<font color="comment">WARN</font>',
            "info": '<font color="info">INFO</font>',
        },
    ),
    "feishu": _Style(
        bold=_plain,
        code=_plain,
        escape=_plain,
        marks={"error": "[ERROR]", "warning": "[WARN]", "info": "[INFO]"},
    ),
}


def chat_lines(digest: Digest, host: str, style: _Style) -> list[str]:
    """The message as lines, most important first: title, events in order, then the report."""
    items = digest.items
    counted = f"{len(items)} event{'s' * (len(items) != 1)}" if items else "traffic report"
    lines = [style.bold(style.escape(f"llmops router on {host}: {counted}"))]
    for item in items:
        kind = item.kind if isinstance(item, Event) else "repeated"
        lines.append(
            f"{style.marks[item.level if isinstance(item, Event) else item.latest.level]} "
            f"{style.bold(kind)} {style.escape(_cap(item.message))} ({_clock(item.at)})"
        )
    if digest.dropped:
        lines.append(
            f"{style.marks['warning']} {digest.dropped} more event(s) were dropped: "
            "the notification queue was full"
        )
    if digest.report is not None:
        lines.extend(report_lines(digest.report, style))
    return lines


def report_lines(report: TrafficReport, style: _Style) -> list[str]:
    period = format_duration(report.period_s)
    lines = [
        style.bold(f"Traffic report, last {period} (until {_clock(report.until)})"),
        style.escape(report.message),
    ]
    for model in report.models:
        lines.append(
            f"{style.bold(style.escape(model.model))}: "
            f"{traffic_summary(model.requests, model.errors, model.in_flight, report.period_s)}, "
            f"{model.healthy}/{model.backends} backends healthy"
        )
        for row in report.rows:
            if row.model == model.model:
                lines.append(
                    f"  - {style.code(style.escape(row.backend))} {row.state}: "
                    f"{counted(row.requests, 'request')}, {counted(row.errors, 'error')}, "
                    f"{row.in_flight} in flight"
                )
    return lines


def fit_lines(lines: list[str], limit_bytes: int) -> str:
    """Whole lines up to ``limit_bytes`` (UTF-8), then one line saying how many were cut."""
    kept: list[str] = []
    used = 0
    for index, line in enumerate(lines):
        size = len(line.encode()) + 1
        tail = f"... {len(lines) - index} more line(s) not shown"
        room_for_tail = 0 if index == len(lines) - 1 else len(tail) + 1
        if used + size + room_for_tail > limit_bytes:
            kept.append(tail)
            break
        kept.append(line)
        used += size
    return "\n".join(kept)


def _cap(message: str, limit: int = _MESSAGE_CHARS) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(at))
