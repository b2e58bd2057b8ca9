"""Shared pieces of the proxy benchmarks: a static nginx backend, wrk runs, CPU accounting.

Everything listens on 127.0.0.1. The load generator and the backend share core 0; the proxy
under test gets core 1 to itself (taskset), so its CPU per request is measured alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MODEL = "bench-model"
CHAT_BODY = json.dumps(
    {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
        "max_tokens": 16,
    }
)
RESPONSE_BODY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello benchmark!"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9},
    }
)


def sse_body(chunks: int) -> str:
    """A chat stream of ``chunks`` content events, a usage event and ``[DONE]``."""
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": MODEL}
    events = [
        {**chunk, "choices": [{"index": 0, "delta": {"content": f"t{i} "}}]} for i in range(chunks)
    ]
    events.append(
        {**chunk, "choices": [], "usage": {"prompt_tokens": 16, "completion_tokens": chunks}}
    )
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def need(binary: str) -> str:
    path = shutil.which(binary) or (
        f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None
    )
    if path is None:
        sys.exit(f"benchmark needs {binary}: apt-get install {binary}")
    return path


def wait_port(port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def nginx_conf(workdir: Path, http: str) -> Path:
    """An nginx.conf for one foreground nginx process working in ``workdir``, with ``http``
    inside its http block."""
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
user root;
worker_processes 1;
master_process off;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 65536; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/body;
  proxy_temp_path {workdir}/proxy;
  fastcgi_temp_path {workdir}/fcgi;
  uwsgi_temp_path {workdir}/uwsgi;
  scgi_temp_path {workdir}/scgi;
  keepalive_requests 1000000;
{http}
}}
""")
    return conf


def start_nginx(conf: Path, cpu: int | None) -> subprocess.Popen[bytes]:
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    return subprocess.Popen(
        [*pin, need("nginx"), "-c", str(conf), "-p", str(conf.parent)], stderr=subprocess.DEVNULL
    )


class Nginx:
    """A static OpenAI-shaped backend: JSON answers, an SSE body (for requests with an
    ``X-Bench-Stream`` header, or all of them with ``always_stream``), health and models."""

    def __init__(
        self, cpu: int | None = 0, sse_chunks: int = 64, always_stream: bool = False
    ) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="llmops-bench-nginx-"))
        models = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        (self.dir / "stream").write_text(sse_body(sse_chunks))
        conf = nginx_conf(
            self.dir,
            f"""
  server {{
    listen 127.0.0.1:{self.port} reuseport backlog=4096;
    location = /health {{ return 200 ""; }}
    location = /v1/models {{ default_type application/json; return 200 '{models}'; }}
    location = /v1/chat/completions {{
      {"rewrite ^ /stream last;" if always_stream else "if ($http_x_bench_stream) { rewrite ^ /stream last; }"}
      default_type application/json;
      return 200 '{RESPONSE_BODY}';
    }}
    location = /stream {{ root {self.dir}; default_type text/event-stream; error_page 405 =200 $uri; }}
  }}""",
        )
        self.process = start_nginx(conf, cpu)
        wait_port(self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


def wrk(
    url: str, connections: int, seconds: float, body: str, stream: bool = False, cpu: int = 0
) -> WrkResult:
    """Run wrk with a POST of ``body``; --latency gives the percentiles."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        + ('wrk.headers["X-Bench-Stream"] = "1"\n' if stream else "")
    )
    try:
        out = subprocess.run(
            [
                "taskset",
                "-c",
                str(cpu),
                need("wrk"),
                "-t",
                "1",
                "-c",
                str(connections),
                "-d",
                f"{max(1, round(seconds))}s",
                "--latency",
                "-s",
                str(script),
                f"{url}/v1/chat/completions",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        script.unlink()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = sum(
        int(n)
        for n in re.findall(r"(?:Non-2xx or 3xx responses|Socket errors:.*?timeout) (\d+)", out)
    )
    errors += (
        sum(
            int(n)
            for n in re.findall(r"(?:connect|read|write) (\d+)", out.split("Socket errors:")[1])
        )
        if "Socket errors:" in out
        else 0
    )
    return WrkResult(rps, _percentile(out, "50%"), _percentile(out, "99%"), total, errors)


def _percentile(out: str, label: str) -> float:
    match = re.search(rf"^\s+{re.escape(label)}\s+([\d.]+)(us|ms|s)$", out, re.M)
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


ROOT = Path(__file__).resolve().parents[1]


def pinned(cpu: int, *args: str) -> list[str]:
    """A Python command (``-m llmops ...`` or a script) pinned to one core."""
    return ["taskset", "-c", str(cpu), sys.executable, *args]


def start_llmops_router(
    upstream: str, model: str, workdir: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """``llmops router serve`` on core 1 with its default features, one backend."""
    port = free_port()
    config = workdir / "router.yaml"
    entry = {"model_name": model, "litellm_params": {"api_base": f"{upstream}/v1"}}
    config.write_text(json.dumps({"model_list": [entry]}))  # JSON is YAML
    argv = pinned(
        1,
        "-m",
        "llmops",
        "router",
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
        "--log-level",
        "error",
    )
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    wait_port(port)
    return process, f"http://127.0.0.1:{port}"


def start_minimal_proxy(upstream: str) -> tuple[subprocess.Popen[bytes], str]:
    """The naive aiohttp proxy of ``minimal_proxy.py`` on core 1: the Python ceiling."""
    port = free_port()
    process = subprocess.Popen(  # its stderr: tracebacks of clients that left at a run's end
        pinned(1, str(ROOT / "benchmarks" / "minimal_proxy.py"), str(port), upstream),
        stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    return process, f"http://127.0.0.1:{port}"


def start_nginx_proxy(upstream: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """nginx ``proxy_pass`` on core 1, one process, pooled upstream connections and no
    buffering (each read relayed at once, as a stream needs): the C reference."""
    port = free_port()
    here = workdir / "nginx-proxy"
    here.mkdir(exist_ok=True)
    conf = nginx_conf(
        here,
        f"""
  upstream backend {{ server {upstream.removeprefix("http://")}; keepalive 1024; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}""",
    )
    process = start_nginx(conf, 1)
    wait_port(port)
    return process, f"http://127.0.0.1:{port}"


#: What each benchmark compares, in the order the runs interleave them.
TARGETS = ("direct", "nginx proxy_pass", "minimal aiohttp proxy", "llmops router")


def start_target(
    name: str, upstream: str, model: str, workdir: Path
) -> tuple[subprocess.Popen[bytes] | None, str]:
    """The proxy called ``name`` in front of ``upstream`` (none for "direct"), and its URL."""
    if name == "direct":
        return None, upstream
    if name == "nginx proxy_pass":
        return start_nginx_proxy(upstream, workdir)
    if name == "minimal aiohttp proxy":
        return start_minimal_proxy(upstream)
    return start_llmops_router(upstream, model, workdir)


def write_section(title: str, body: str) -> None:
    """Replace (or append) the ``## title`` section of BENCHMARKS.md."""
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    header = f"## {title}"
    section = f"{header}\n\nRecorded {time.strftime('%Y-%m-%d')}.\n\n{body}\n"
    if header in text:
        start = text.index(header)
        end = text.find("\n## ", start + len(header))
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
