"""What every part shares about the OpenAI wire format: error bodies, SSE framing, usage."""

from llmops.openai._errors import ERROR_TYPES, error_json
from llmops.openai._sse import DONE_EVENT, SSEParser, sse_event
from llmops.openai._usage import Usage, usage_from_body

__all__ = [
    "DONE_EVENT",
    "ERROR_TYPES",
    "SSEParser",
    "Usage",
    "error_json",
    "sse_event",
    "usage_from_body",
]
