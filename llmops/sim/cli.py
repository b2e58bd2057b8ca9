"""`llmops sim`: serve a simulated vLLM/SGLang engine until Ctrl-C or SIGTERM.

Only Typer and the standard library at module level: the server loads inside the command.
"""

from __future__ import annotations

import enum

import typer


# Spelled out here (not taken from llmops.sim.options) so this module stays import-light.
class _Engine(enum.StrEnum):
    vllm = "vllm"
    sglang = "sglang"


class _Mode(enum.StrEnum):
    ok = "ok"
    error = "error"
    hang = "hang"
    stall = "stall"


_ENGINE = typer.Option(_Engine.vllm, "--engine", help="Which engine's HTTP to speak.")
_MODE = typer.Option(_Mode.ok, "--mode", help="Start in a failure mode: error, hang or stall.")


def sim(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8001, "--port", help="Port to listen on; 0 picks a free one."),
    model: str = typer.Option("sim-model", "--model", help="The served model name."),
    engine: _Engine = _ENGINE,
    ttft_ms: float = typer.Option(50.0, "--ttft-ms", help="Unloaded time to first token."),
    itl_ms: float = typer.Option(10.0, "--itl-ms", help="Batch step = time between tokens."),
    output_len: int = typer.Option(128, "--output-len", help="Tokens until the simulated EOS."),
    max_num_seqs: int = typer.Option(256, "--max-num-seqs", help="Most sequences running at once."),
    fail_rate: float = typer.Option(0.0, "--fail-rate", help="Fraction of requests answered 500."),
    seed: int = typer.Option(0, "--seed", help="Seed of generated text and injected failures."),
    kv_cache_tokens: int = typer.Option(
        262144, "--kv-cache-tokens", help="KV cache size; a sequence holds prompt + output."
    ),
    prefill_ms_per_token: float = typer.Option(
        0.005, "--prefill-ms-per-token", help="Step time each admitted prompt token adds."
    ),
    max_model_len: int | None = typer.Option(
        None, "--max-model-len", help="Longest prompt + output (default min(32768, KV cache))."
    ),
    embedding_dim: int = typer.Option(256, "--embedding-dim", help="Length of /v1/embeddings."),
    mode: _Mode = _MODE,
    api_key: str | None = typer.Option(
        None, "--api-key", help="Require 'Authorization: Bearer KEY' on /v1/* (like vLLM)."
    ),
    abort_after_tokens: int | None = typer.Option(
        None, "--abort-after-tokens", help="Cut every stream after N tokens (engine crash)."
    ),
) -> None:
    """Run a simulated vLLM/SGLang engine: OpenAI endpoints, token pacing, batching, /metrics.

    Prints one line `llmops sim: serving MODEL (ENGINE) on http://HOST:PORT` once listening.
    Failure modes can be switched while it runs: POST /sim/mode {"mode": "hang"}.

    Example:

        llmops sim --port 8001 --model m --ttft-ms 100 --itl-ms 20 --max-num-seqs 64
    """
    import asyncio

    import uvloop

    from llmops.sim.options import SimOptions
    from llmops.sim.server import RunningSim, serve_until_signalled

    options = SimOptions(
        host=host,
        port=port,
        model=model,
        engine=engine.value,
        ttft_ms=ttft_ms,
        itl_ms=itl_ms,
        output_len=output_len,
        max_num_seqs=max_num_seqs,
        fail_rate=fail_rate,
        seed=seed,
        kv_cache_tokens=kv_cache_tokens,
        prefill_ms_per_token=prefill_ms_per_token,
        max_model_len=max_model_len,
        embedding_dim=embedding_dim,
        mode=mode.value,
        abort_after_tokens=abort_after_tokens,
        api_key=api_key,
    )

    def announce(running: RunningSim) -> None:
        print(f"llmops sim: serving {model} ({engine.value}) on {running.url}", flush=True)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve_until_signalled(options, announce))
