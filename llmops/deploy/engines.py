"""The exact command line and environment of one engine instance (pure)."""

from __future__ import annotations

import posixpath

from llmops.deploy.spec import ModelSpec

# The engine binds every interface; the router reaches it at the node's address.
ENGINE_BIND_HOST = "0.0.0.0"


def engine_argv(model: ModelSpec, port: int, internal_port: int) -> tuple[str, ...]:
    """``vllm serve ...`` or ``python -m sglang.launch_server ...`` for one instance."""
    if model.engine == "vllm":
        return _vllm_argv(model, port)
    return _sglang_argv(model, port, internal_port)


def engine_env(model: ModelSpec, gpus: tuple[int, ...], internal_port: int) -> dict[str, str]:
    """The variables the engine runs with: the model's ``env`` plus what placement decided."""
    env = dict(model.env)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu) for gpu in gpus)
    if model.engine == "vllm":
        # vLLM's distributed setup takes ports counting up from VLLM_PORT.
        env["VLLM_PORT"] = str(internal_port)
        if model.api_key is not None:
            env["VLLM_API_KEY"] = model.api_key
    return env


def _command(model: ModelSpec, default: str) -> str:
    command = model.command or default
    if model.venv and "/" not in command:
        return posixpath.join(model.venv, "bin", command)
    return command


def _vllm_argv(model: ModelSpec, port: int) -> tuple[str, ...]:
    argv = [_command(model, "vllm"), "serve", model.model, "--served-model-name", model.name]
    argv += [
        "--host",
        ENGINE_BIND_HOST,
        "--port",
        str(port),
        "--tensor-parallel-size",
        str(model.tp),
    ]
    if model.gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", str(model.gpu_memory_utilization)]
    if model.max_model_len is not None:
        argv += ["--max-model-len", str(model.max_model_len)]
    if model.max_num_seqs is not None:
        argv += ["--max-num-seqs", str(model.max_num_seqs)]
    return (*argv, *model.extra_args)


def _sglang_argv(model: ModelSpec, port: int, nccl_port: int) -> tuple[str, ...]:
    argv = [_command(model, "python"), "-m", "sglang.launch_server", "--model-path", model.model]
    argv += ["--served-model-name", model.name, "--host", ENGINE_BIND_HOST, "--port", str(port)]
    argv += ["--tp", str(model.tp)]
    if model.gpu_memory_utilization is not None:
        argv += ["--mem-fraction-static", str(model.gpu_memory_utilization)]
    if model.max_model_len is not None:
        argv += ["--context-length", str(model.max_model_len)]
    if model.max_num_seqs is not None:
        argv += ["--max-running-requests", str(model.max_num_seqs)]
    argv += ["--nccl-port", str(nccl_port), "--enable-metrics"]
    return (*argv, *model.extra_args)
