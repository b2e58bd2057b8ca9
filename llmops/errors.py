"""The one error tree of llmops.

    LlmopsError                 anything the user can fix; the CLI prints it on one line, exit 1
    ├── ConfigError             a config file is missing, unreadable or invalid (all problems)
    ├── NotBuiltError           a command whose part is not implemented yet
    ├── RouterError             the gateway cannot start (port taken, bad TLS files, ...)
    ├── SimError                the simulated engine cannot start
    ├── DeployError             a node or instance failed during deploy
    ├── BenchError              a load run cannot start or its input is invalid
    └── DashboardError          the dashboard cannot reach the router or read its /status

Boundaries (CLI commands, servers) translate library errors into these.
"""

from __future__ import annotations


class LlmopsError(Exception):
    """Root of every error llmops raises on purpose."""


class ConfigError(LlmopsError):
    """A configuration problem; ``problems`` holds every `path: message` found."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        if len(problems) == 1:
            message = f"{where}{problems[0]}"
        else:
            message = f"{where}{len(problems)} problems\n" + "\n".join(f"  {p}" for p in problems)
        super().__init__(message)


class NotBuiltError(LlmopsError):
    """A command that exists in the CLI but whose part is not built yet."""


class RouterError(LlmopsError):
    """The router cannot start or run."""


class SimError(LlmopsError):
    """The simulated engine cannot start or run."""


class DeployError(LlmopsError):
    """A deploy step failed."""


class BenchError(LlmopsError):
    """A benchmark run cannot start or its input is invalid."""


class DashboardError(LlmopsError):
    """The dashboard cannot reach the router, is refused, or cannot read its ``/status``."""
