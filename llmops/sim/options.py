"""Every knob of the simulated engine, with the defaults ``llmops sim`` uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from llmops.errors import SimError

EngineFlavour = Literal["vllm", "sglang"]
#: ``ok`` serves normally; ``error`` answers every inference request 500; ``hang`` accepts
#: inference, ``/health`` and ``/v1/models`` requests and answers none of them until the mode
#: changes (then they are served); ``stall`` keeps ``/health`` at 200 but the engine stops
#: producing tokens (streams get their headers and then nothing) until the mode changes.
SimMode = Literal["ok", "error", "hang", "stall"]

ENGINE_FLAVOURS: tuple[str, ...] = get_args(EngineFlavour)
SIM_MODES: tuple[str, ...] = get_args(SimMode)

DEFAULT_MAX_MODEL_LEN = 32768


@dataclass(frozen=True, slots=True)
class SimOptions:
    """Settings of one simulated engine; the CLI flags map one to one onto these fields."""

    host: str = "127.0.0.1"
    port: int = 8001  # 0 = any free port
    model: str = "sim-model"
    engine: EngineFlavour = "vllm"
    ttft_ms: float = 50.0  # unloaded time from admission to the first token
    itl_ms: float = 10.0  # one batch step: every running sequence gets one token
    output_len: int = 128  # where the simulated EOS comes
    max_num_seqs: int = 256
    fail_rate: float = 0.0  # fraction of inference requests answered with HTTP 500
    seed: int = 0
    kv_cache_tokens: int = 262144  # a running sequence holds its prompt + output tokens
    prefill_ms_per_token: float = 0.005  # added to the step in which a prompt is admitted
    max_model_len: int | None = None  # None = min(32768, kv_cache_tokens)
    embedding_dim: int = 256
    mode: SimMode = "ok"
    abort_after_tokens: int | None = None  # cut every stream after N tokens
    api_key: str | None = None  # like vLLM's --api-key: /v1/* needs "Authorization: Bearer KEY"

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise SimError("invalid sim options: " + "; ".join(problems))

    @property
    def context_len(self) -> int:
        """The longest sequence (prompt + output) a request may ask for."""
        if self.max_model_len is not None:
            return self.max_model_len
        return min(DEFAULT_MAX_MODEL_LEN, self.kv_cache_tokens)


def _problems(options: SimOptions) -> list[str]:
    checks = [
        (0 <= options.port <= 65535, "port must be 0..65535"),
        (bool(options.model.strip()), "model must not be empty"),
        (options.engine in ENGINE_FLAVOURS, f"engine must be one of {', '.join(ENGINE_FLAVOURS)}"),
        (options.ttft_ms >= 0, "ttft_ms must be >= 0"),
        (options.itl_ms > 0, "itl_ms must be > 0"),
        (options.output_len >= 1, "output_len must be >= 1"),
        (options.max_num_seqs >= 1, "max_num_seqs must be >= 1"),
        (0.0 <= options.fail_rate <= 1.0, "fail_rate must be between 0 and 1"),
        (options.kv_cache_tokens >= 1, "kv_cache_tokens must be >= 1"),
        (options.prefill_ms_per_token >= 0, "prefill_ms_per_token must be >= 0"),
        (options.embedding_dim >= 1, "embedding_dim must be >= 1"),
        (options.mode in SIM_MODES, f"mode must be one of {', '.join(SIM_MODES)}"),
        (
            options.abort_after_tokens is None or options.abort_after_tokens >= 0,
            "abort_after_tokens must be >= 0",
        ),
        (options.api_key is None or bool(options.api_key), "api_key must not be empty"),
    ]
    problems = [message for ok, message in checks if not ok]
    if options.max_model_len is not None and not (
        1 <= options.max_model_len <= options.kv_cache_tokens
    ):
        # A sequence longer than the KV cache could never be admitted: it would wait forever.
        problems.append("max_model_len must be between 1 and kv_cache_tokens")
    return problems
