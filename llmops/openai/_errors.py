"""OpenAI-shaped error bodies: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import orjson

#: The ``type`` OpenAI (and vLLM) put in an error body for each HTTP status.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


def error_json(status: int, message: str, code: str | None = None) -> bytes:
    """The JSON body of an OpenAI error response for ``status``."""
    error_type = ERROR_TYPES.get(
        status, "server_error" if status >= 500 else "invalid_request_error"
    )
    return orjson.dumps(
        {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    )
