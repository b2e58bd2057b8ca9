"""llmops: deploy, route, measure and watch self-hosted vLLM/SGLang fleets."""

__version__ = "0.1.0"
__all__ = ["__version__"]
