"""Deploy's errors: every one names the node (and the instance when there is one)."""

from __future__ import annotations

from llmops.errors import DeployError


class PlanError(DeployError):
    """The models do not fit the nodes; ``problems`` lists every one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("cannot plan: " + "; ".join(problems))


class NodeError(DeployError):
    """A node cannot be used (SSH refused, host key not trusted, command failed)."""

    def __init__(self, node: str, message: str) -> None:
        self.node = node
        self.reason = message
        super().__init__(f"node {node}: {message}")


class InstanceError(DeployError):
    """One instance failed a step (preflight, start, readiness, stop)."""

    def __init__(self, node: str, instance: str, message: str, log_tail: str = "") -> None:
        self.node = node
        self.instance = instance
        self.log_tail = log_tail
        super().__init__(f"node {node}, instance {instance}: {message}")


class DeployFailed(DeployError):
    """The command finished but some nodes or instances failed (already reported)."""
