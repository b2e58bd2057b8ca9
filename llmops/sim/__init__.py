"""The simulated engine: speaks vLLM's (or SGLang's) HTTP without a GPU."""
