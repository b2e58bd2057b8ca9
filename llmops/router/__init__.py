"""The gateway: an OpenAI-compatible router over vLLM/SGLang engines."""
