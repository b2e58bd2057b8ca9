from llmops.errors import NotBuiltError


def demo() -> None:
    """Simulated engines and a router on localhost, in one command (not built yet)."""
    raise NotBuiltError("`llmops demo` is not built yet")
