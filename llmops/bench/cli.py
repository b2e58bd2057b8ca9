"""`llmops bench [options]` runs a load; `llmops bench compare A.json B.json` compares two runs.

Only Typer and the standard library at module level: the load generator loads inside the command.
"""

from __future__ import annotations

import enum
import os
import sys

import typer


class _Endpoint(enum.StrEnum):
    chat = "chat"
    completions = "completions"


class _Arrival(enum.StrEnum):
    poisson = "poisson"
    gamma = "gamma"
    constant = "constant"


class _Ui(enum.StrEnum):
    live = "live"
    plain = "plain"
    none = "none"


# No help= here: the callback's docstring (with its examples) is the help of `llmops bench`.
app = typer.Typer(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_URL = typer.Option(
    ["http://127.0.0.1:8000"], "--url", help="Base URL of the endpoint; repeat to spread requests."
)
_ENDPOINT = typer.Option(_Endpoint.chat, "--endpoint", help="chat or completions.")
_ARRIVAL = typer.Option(_Arrival.poisson, "--arrival", help="Open-loop arrivals.")
_GOODPUT = typer.Option(
    [], "--goodput", help="SLO for goodput, e.g. --goodput ttft:500 --goodput tpot:50."
)
_HEADER = typer.Option([], "--header", help="Extra request header NAME=VALUE; repeatable.")
_UI = typer.Option(None, "--ui", help="live (default on a terminal), plain or none.")

#: Requests in a run given neither --num-requests nor --duration (vLLM's --num-prompts default).
DEFAULT_NUM_REQUESTS = 1000


@app.callback()
def bench(
    ctx: typer.Context,
    url: list[str] = _URL,
    model: str | None = typer.Option(
        None, "--model", help="Model name (default: first of GET /v1/models)."
    ),
    endpoint: _Endpoint = _ENDPOINT,
    concurrency: int | None = typer.Option(
        None,
        "--concurrency",
        help="Closed loop: keep N in flight. With --rate: cap in flight at N.",
    ),
    rate: float | None = typer.Option(None, "--rate", help="Open loop: requests per second."),
    arrival: _Arrival = _ARRIVAL,
    burstiness: float = typer.Option(
        1.0, "--burstiness", help="Gamma shape (1 = Poisson, <1 burstier); implies --arrival gamma."
    ),
    num_requests: int | None = typer.Option(
        None, "--num-requests", "-n", help=f"Requests to send (default {DEFAULT_NUM_REQUESTS})."
    ),
    duration: float | None = typer.Option(
        None, "--duration", help="Send for this many seconds instead."
    ),
    warmup: int = typer.Option(0, "--warmup", help="First N requests are excluded from results."),
    ramp_up: float = typer.Option(
        0.0, "--ramp-up", help="Seconds to grow from 0 to the full load."
    ),
    dataset: str = typer.Option("random", "--dataset", help="random, sharegpt:PATH or jsonl:PATH."),
    input_len: int = typer.Option(
        128, "--input-len", help="Random dataset: prompt words (tokens)."
    ),
    output_len: int = typer.Option(
        128, "--output-len", help="Random dataset: max_tokens (ignore_eos)."
    ),
    shared_prefix_len: int = typer.Option(
        0, "--shared-prefix-len", help="Same N words before every prompt."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of prompts and arrivals."),
    no_stream: bool = typer.Option(False, "--no-stream", help="Ask for whole responses."),
    workers: int | None = typer.Option(
        None, "--workers", help="Worker processes (default: CPU count)."
    ),
    timeout: float = typer.Option(600.0, "--timeout", help="Per-request timeout in seconds."),
    percentiles: str = typer.Option(
        "99", "--percentiles", help="Percentiles to report, e.g. 50,90,99."
    ),
    goodput: list[str] = _GOODPUT,
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="OPENAI_API_KEY", help="Bearer token."
    ),
    header: list[str] = _HEADER,
    ui: _Ui | None = _UI,
    output: str | None = typer.Option(None, "--output", "-o", help="Write the result JSON here."),
    save_requests: str | None = typer.Option(
        None, "--save-requests", help="Write per-request JSONL here."
    ),
    label: str | None = typer.Option(None, "--label", help="A name recorded in the result."),
) -> None:
    """Send load to an OpenAI-compatible endpoint and report vLLM-compatible metrics.

    Example: llmops bench --url http://127.0.0.1:8000 --concurrency 64 -n 2000 --output run.json

    Example: llmops bench --rate 50 --duration 30 --percentiles 50,90,99 --goodput ttft:500
    """
    if ctx.invoked_subcommand is not None:
        return
    from llmops.bench.options import (
        BenchOptions,
        check_options,
        parse_goodput,
        parse_headers,
        parse_percentiles,
    )

    if num_requests is None and duration is None:
        num_requests = DEFAULT_NUM_REQUESTS
    if rate is None and concurrency is None:
        concurrency = 1
    options = check_options(
        BenchOptions(
            urls=tuple(url),
            model=model,
            endpoint=endpoint.value,
            concurrency=concurrency,
            rate=rate,
            arrival="gamma" if burstiness != 1.0 and arrival == _Arrival.poisson else arrival.value,
            burstiness=burstiness,
            num_requests=num_requests,
            duration_s=duration,
            warmup=warmup,
            ramp_up_s=ramp_up,
            dataset=dataset,
            input_len=input_len,
            output_len=output_len,
            shared_prefix_len=shared_prefix_len,
            seed=seed,
            stream=not no_stream,
            workers=workers or os.cpu_count() or 1,
            timeout_s=timeout,
            percentiles=parse_percentiles(percentiles),
            goodput=parse_goodput(goodput),
            api_key=api_key,
            headers=parse_headers(header),
            ui=(ui.value if ui else ("live" if sys.stdout.isatty() else "none")),
            output=output,
            save_requests=save_requests,
            label=label,
        )
    )
    from llmops.bench.runner import run_and_report

    run_and_report(options)


@app.command()
def compare(
    a: str = typer.Argument(..., help="The baseline result JSON."),
    b: str = typer.Argument(..., help="The result JSON to compare with it."),
) -> None:
    """Show two results side by side with the relative change of every metric.

    Example: llmops bench compare before.json after.json
    """
    from llmops.bench.compare import compare_text

    typer.echo(compare_text(a, b))
