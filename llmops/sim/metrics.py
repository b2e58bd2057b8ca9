"""``/metrics`` in Prometheus text format, with vLLM's or SGLang's real metric names.

Pure: an engine snapshot in, exposition text out. Names and labels follow the engines' own
exporters (vLLM v1: ``model_name`` and ``engine`` labels, ``finished_reason`` on
``vllm:request_success_total``; SGLang: ``model_name``), so scrapers written against a real
engine read the sim unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable

from llmops.sim.engine import FINISH_REASONS, EngineSnapshot
from llmops.sim.histogram import HistogramSnapshot
from llmops.sim.options import EngineFlavour

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = dict[str, str]


def render_metrics(flavour: EngineFlavour, model: str, snapshot: EngineSnapshot) -> str:
    """The text a scrape of ``/metrics`` returns."""
    if flavour == "sglang":
        return _sglang(model, snapshot)
    return _vllm(model, snapshot)


def _vllm(model: str, snap: EngineSnapshot) -> str:
    labels = {"engine": "0", "model_name": model}
    out: list[str] = []
    for name, help_text, value in [
        ("vllm:num_requests_running", "Number of requests in model execution batches.",
         snap.running),
        ("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
         snap.waiting),
        ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.",
         snap.kv_usage),
    ]:  # fmt: skip
        _gauge(out, name, help_text, labels, value)
    _counter(out, "vllm:prompt_tokens_total", "Number of prefill tokens processed.",
             [(labels, snap.prompt_tokens_total)])  # fmt: skip
    _counter(out, "vllm:generation_tokens_total", "Number of generation tokens processed.",
             [(labels, snap.generation_tokens_total)])  # fmt: skip
    # Aborted requests are "successes" with finished_reason="abort", exactly as vLLM counts them.
    by_reason = [({**labels, "finished_reason": r}, snap.finished[r]) for r in FINISH_REASONS]
    _counter(out, "vllm:request_success_total", "Count of successfully processed requests.",
             by_reason)  # fmt: skip
    _histogram(out, "vllm:time_to_first_token_seconds",
               "Histogram of time to first token in seconds.", labels, snap.ttft)  # fmt: skip
    _histogram(out, "vllm:e2e_request_latency_seconds",
               "Histogram of e2e request latency in seconds.", labels, snap.e2e)  # fmt: skip
    return "".join(out)


def _sglang(model: str, snap: EngineSnapshot) -> str:
    labels = {"model_name": model}
    out: list[str] = []
    for name, help_text, value in [
        ("sglang:num_running_reqs", "The number of running requests.", snap.running),
        ("sglang:num_queue_reqs", "The number of requests in the waiting queue.", snap.waiting),
        ("sglang:token_usage", "The token usage.", snap.kv_usage),
    ]:
        _gauge(out, name, help_text, labels, value)
    aborted = snap.finished["abort"]
    for name, help_text, count in [
        ("sglang:prompt_tokens_total", "Number of prefill tokens processed.",
         snap.prompt_tokens_total),
        ("sglang:generation_tokens_total", "Number of generation tokens processed.",
         snap.generation_tokens_total),
        ("sglang:num_requests_total", "Number of requests processed.",
         snap.finished["stop"] + snap.finished["length"] + aborted),
        ("sglang:num_aborted_requests_total", "Number of requests aborted.", aborted),
    ]:  # fmt: skip
        _counter(out, name, help_text, [(labels, count)])
    _histogram(out, "sglang:time_to_first_token_seconds",
               "Histogram of time to first token in seconds.", labels, snap.ttft)  # fmt: skip
    _histogram(out, "sglang:e2e_request_latency_seconds",
               "Histogram of End-to-end request latency in seconds", labels, snap.e2e)  # fmt: skip
    return "".join(out)


def _gauge(out: list[str], name: str, help_text: str, labels: Labels, value: float) -> None:
    out.append(f"# HELP {name} {help_text}\n# TYPE {name} gauge\n")
    out.append(f"{name}{_labels(labels)} {_number(value)}\n")


def _counter(
    out: list[str], name: str, help_text: str, samples: Iterable[tuple[Labels, float]]
) -> None:
    out.append(f"# HELP {name} {help_text}\n# TYPE {name} counter\n")
    out.extend(f"{name}{_labels(labels)} {_number(value)}\n" for labels, value in samples)


def _histogram(
    out: list[str], name: str, help_text: str, labels: Labels, hist: HistogramSnapshot
) -> None:
    out.append(f"# HELP {name} {help_text}\n# TYPE {name} histogram\n")
    bounds = [_number(bound) for bound in hist.bounds] + ["+Inf"]
    for bound, count in zip(bounds, hist.cumulative_counts, strict=True):
        out.append(f"{name}_bucket{_labels({**labels, 'le': bound})} {_number(count)}\n")
    out.append(f"{name}_count{_labels(labels)} {_number(hist.count)}\n")
    out.append(f"{name}_sum{_labels(labels)} {_number(hist.total)}\n")


def _labels(labels: Labels) -> str:
    pairs = ",".join(f'{key}="{_escape(value)}"' for key, value in sorted(labels.items()))
    return "{" + pairs + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value))
