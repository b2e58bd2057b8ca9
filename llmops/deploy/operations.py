"""What each ``llmops deploy`` command does, node by node, concurrently.

A node that fails (SSH refused, agent error) fails only its own instances: the others go
on, and the result says what failed so the CLI can exit 1 at the end.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops.deploy.backend_file import entries_on_hosts, write_backend_file
from llmops.deploy.errors import InstanceError, NodeError
from llmops.deploy.plan import Instance, Plan, plan_placement
from llmops.deploy.remote import call_agent
from llmops.deploy.spec import LoadedSpec, NodeSpec
from llmops.deploy.ssh import NodeConnections
from llmops.errors import DeployError

# (instance name, state, detail): how operations tell the progress display what happens.
Report = Callable[[str, str, str], None]
RouterCall = Callable[[str, Instance], Awaitable[None]]


def _quiet(name: str, state: str, detail: str) -> None:
    """The default reporter: say nothing."""


@dataclass
class Outcome:
    instance: Instance
    state: str = "planned"
    error: InstanceError | None = None
    ready: bool = False


@dataclass
class RunResult:
    plan: Plan
    outcomes: dict[str, Outcome]
    node_errors: dict[str, NodeError] = field(default_factory=dict)
    backend_file: Path | None = None
    backends_written: int = 0  # ready instances listed in the backend file
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def errors(self) -> list[DeployError]:
        found: list[DeployError] = list(self.node_errors.values())
        found += [o.error for o in self.outcomes.values() if o.error is not None]
        return found

    @property
    def failed(self) -> bool:
        return bool(self.errors)


class Deployer:
    """Runs deploy operations for one loaded spec over shared SSH connections."""

    def __init__(
        self, loaded: LoadedSpec, connections: NodeConnections, report: Report = _quiet
    ) -> None:
        self.loaded = loaded
        self.spec = loaded.spec
        self.connections = connections
        self.report = report
        self._nodes = {node.host: node for node in self.spec.nodes}
        self._plan: Plan | None = None
        self._node_errors: dict[str, NodeError] = {}

    @property
    def node_errors(self) -> dict[str, NodeError]:
        """Nodes that failed while planning (``gpus: auto`` nodes that could not be asked)."""
        return dict(self._node_errors)

    async def plan(self) -> Plan:
        """The placement; ``gpus: auto`` nodes are asked for their GPUs (read-only)."""
        if self._plan is None:
            auto = [node for node in self.spec.nodes if node.gpus == "auto"]
            found = await asyncio.gather(*(self._inventory(node) for node in auto))
            inventory = {
                node.host: gpus for node, gpus in zip(auto, found, strict=True) if gpus is not None
            }
            self._plan = plan_placement(self.spec, inventory)
        return self._plan

    async def _inventory(self, node: NodeSpec) -> list[int] | None:
        try:
            events = [e async for e in call_agent(self.connections, self.spec, node, "inventory")]
            if not events or "error" in events[0]:
                reason = events[0]["error"] if events else "the agent answered nothing"
                raise NodeError(node.host, f"gpus: auto but {reason}")
        except NodeError as exc:
            self._node_errors[node.host] = exc
            return None
        return [int(gpu["index"]) for gpu in events[0]["gpus"]]

    def _result(self, plan: Plan, instances: Sequence[Instance]) -> RunResult:
        result = RunResult(plan, {i.name: Outcome(i) for i in instances}, dict(self._node_errors))
        for instance in instances:
            if instance.node in result.node_errors:
                self._fail(result, instance, result.node_errors[instance.node].reason)
        return result

    def _fail(
        self, result: RunResult, instance: Instance, message: str, log_tail: str = ""
    ) -> None:
        outcome = result.outcomes[instance.name]
        outcome.state = "failed"
        outcome.error = InstanceError(instance.node, instance.name, message, log_tail)
        self.report(instance.name, "failed", message)

    def _set(self, result: RunResult, name: str, state: str, detail: str = "") -> None:
        if name in result.outcomes:
            result.outcomes[name].state = state
        self.report(name, state, detail)

    async def _each_node(
        self,
        result: RunResult,
        instances: Sequence[Instance],
        work: Callable[[NodeSpec, list[Instance]], Awaitable[None]],
        *,
        every_node: bool = False,
    ) -> None:
        """Run ``work`` for each node of ``instances`` (``every_node``: also the others, with
        none) concurrently; a NodeError fails that node's instances."""

        async def guarded(node: NodeSpec, mine: list[Instance]) -> None:
            try:
                await work(node, mine)
            except NodeError as exc:
                result.node_errors[node.host] = exc
                for instance in mine:
                    if result.outcomes[instance.name].error is None:
                        self._fail(result, instance, exc.reason)

        groups: dict[str, list[Instance]] = {}
        for node in self.spec.nodes if every_node else ():
            if node.host not in result.node_errors:
                groups[node.host] = []
        for instance in instances:
            if instance.node not in result.node_errors:
                groups.setdefault(instance.node, []).append(instance)
        await asyncio.gather(*(guarded(self._nodes[host], mine) for host, mine in groups.items()))

    # -- up -------------------------------------------------------------------------------

    async def up(self, names: Sequence[str] = ()) -> RunResult:
        """Preflight, start what is missing or changed, wait until ready, write the backend file."""
        plan = await self.plan()
        selected = plan.select(names)
        result = self._result(plan, selected)
        await self._each_node(
            result,
            selected,
            lambda node, mine: self._up_node(result, node, mine, prune=not names),
            every_node=not names,  # a node the plan no longer uses may run instances to prune
        )
        await self._write_backends(result)
        return result

    async def _up_node(
        self,
        result: RunResult,
        node: NodeSpec,
        instances: list[Instance],
        *,
        prune: bool,
        restart: bool = False,
    ) -> None:
        """One agent call: preflight, start/restart, wait until ready, events as they happen."""
        by_name = {i.name: i for i in instances}
        self._set_all(result, instances, "preflight")
        request = {"prune": prune, "restart": restart}
        async for event in call_agent(
            self.connections, self.spec, node, "up", instances, **request
        ):
            result.events.append(event)
            name = event["instance"]
            instance = by_name.get(name)
            if instance is None:  # an instance the plan no longer has
                self.report(name, "removed", "not in the plan any more: stopped")
            elif event.get("preflight"):
                self._fail(result, instance, "; ".join(event["preflight"]))
            elif "preflight" in event:
                for warning in event["warnings"]:
                    self.report(name, "preflight", f"warning: {warning}")
            elif "error" in event:
                self._fail(result, instance, event["error"], event.get("log_tail", ""))
            elif event.get("ready"):
                result.outcomes[name].ready = True
                self._set(result, name, "ready", f"{instance.api_base} after {event['after_s']} s")
            else:
                self._set(result, name, event["action"], f"pid {event['pid']}, waiting until ready")

    def _set_all(self, result: RunResult, instances: Sequence[Instance], state: str) -> None:
        for instance in instances:
            self._set(result, instance.name, state)

    async def _write_backends(self, result: RunResult) -> None:
        """Write the router's file with every ready instance (untouched ones probed once)."""
        if self.spec.router_config is None:
            return
        others = [
            i
            for i in result.plan.instances
            if i.name not in result.outcomes and i.node not in result.node_errors
        ]
        probe = RunResult(result.plan, {i.name: Outcome(i) for i in others})
        quick = [dataclasses.replace(i, ready_timeout_s=0.0) for i in others]

        async def probe_node(node: NodeSpec, mine: list[Instance]) -> None:
            async for event in call_agent(self.connections, self.spec, node, "wait", mine):
                probe.outcomes[event["instance"]].ready = bool(event.get("ready"))

        await self._each_node(probe, quick, probe_node)
        ready_names = {n for n, o in result.outcomes.items() if o.ready} | {
            n for n, o in probe.outcomes.items() if o.ready
        }
        ready = [i for i in result.plan.instances if i.name in ready_names]
        path = self.loaded.path.parent / self.spec.router_config
        # A node we could not ask may be serving fine: keep what the file said about it
        # (the router's health checks judge it) rather than drop it on a glitch of ours.
        unknown = {*result.node_errors, *probe.node_errors}
        addresses = {n.address or n.host for n in self.spec.nodes if n.host in unknown}
        kept = entries_on_hosts(path, addresses)
        try:
            write_backend_file(path, ready, self.loaded.raw_api_keys, kept)
        except OSError as exc:
            raise DeployError(
                f"cannot write the router backend file {path}: {exc.strerror or exc}"
            ) from None
        result.backend_file = path
        result.backends_written = len(ready) + len(kept)
        for entry in kept:
            base = entry["litellm_params"]["api_base"]
            self.report(
                str(entry.get("model_name")), "kept", f"{base}: its node could not be asked"
            )

    # -- stop, status, logs -----------------------------------------------------------------

    async def stop(self, names: Sequence[str] = ()) -> RunResult:
        """Stop instances (all of the deployment when no names), then rewrite the backend file."""
        plan = await self.plan()
        selected = plan.select(names)
        result = self._result(plan, selected)
        await self._each_node(
            result,
            selected,
            lambda node, mine: self._stop_node(result, node, mine, every=not names),
            every_node=not names,  # nodes with no planned instance may still run old ones
        )
        await self._write_backends(result)
        return result

    async def _stop_node(
        self, result: RunResult, node: NodeSpec, instances: list[Instance], *, every: bool
    ) -> None:
        by_name = {i.name: i for i in instances}
        async for event in call_agent(
            self.connections, self.spec, node, "stop", instances, all=every
        ):
            result.events.append(event)
            name = event["instance"]
            if "error" in event and name in by_name:
                self._fail(result, by_name[name], event["error"])
            elif "error" in event:
                result.node_errors[node.host] = NodeError(
                    node.host, f"instance {name}: {event['error']}"
                )
            else:
                self._set(
                    result,
                    name,
                    event["action"],
                    "" if event.get("port_free", True) else "port still taken",
                )

    async def status(self, names: Sequence[str] = ()) -> tuple[list[dict[str, Any]], RunResult]:
        """One row per instance: process, readiness, engine metrics, GPU memory."""
        plan = await self.plan()
        selected = plan.select(names)
        result = self._result(plan, selected)
        rows: list[dict[str, Any]] = []

        async def node_status(node: NodeSpec, mine: list[Instance]) -> None:
            async for event in call_agent(self.connections, self.spec, node, "status", mine):
                rows.append({"node": node.host, **event})

        await self._each_node(result, selected, node_status)
        order = {i.name: index for index, i in enumerate(plan.instances)}
        rows.sort(key=lambda row: order.get(row["instance"], len(order)))
        return rows, result

    async def logs(
        self, names: Sequence[str] = (), lines: int = 50
    ) -> tuple[list[dict[str, Any]], RunResult]:
        """The last ``lines`` lines of each instance's log, and where the log is."""
        plan = await self.plan()
        selected = plan.select(names)
        result = self._result(plan, selected)
        found: list[dict[str, Any]] = []

        async def node_logs(node: NodeSpec, mine: list[Instance]) -> None:
            async for event in call_agent(
                self.connections, self.spec, node, "logs", mine, lines=lines
            ):
                found.append({"node": node.host, **event})

        await self._each_node(result, selected, node_logs)
        order = {i.name: index for index, i in enumerate(plan.instances)}
        found.sort(key=lambda entry: order.get(entry["instance"], len(order)))
        return found, result

    async def follow_logs(
        self, names: Sequence[str], lines: int, emit: Callable[[str, str], None]
    ) -> RunResult:
        """Stream new log lines of the instances (``tail -F`` on each node) until cancelled."""
        found, result = await self.logs(names, lines=0)

        async def follow(entry: dict[str, Any]) -> None:
            node = self._nodes[entry["node"]]
            argv = ["tail", "-n", str(lines), "-F", entry["path"]]
            async for line in self.connections.stream(node, argv):
                emit(entry["instance"], line.rstrip("\n"))

        outcomes = await asyncio.gather(*(follow(e) for e in found), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, NodeError):
                result.node_errors[outcome.node] = outcome
            elif isinstance(outcome, BaseException):
                raise outcome
        return result

    # -- restart ----------------------------------------------------------------------------

    async def restart(
        self, names: Sequence[str] = (), *, rolling: bool = False, drain: RouterCall | None = None
    ) -> RunResult:
        """Stop and start instances; rolling = one at a time, drained in the router meanwhile."""
        plan = await self.plan()
        selected = plan.select(names)
        result = self._result(plan, selected)
        if not rolling:
            await self._each_node(
                result, selected, lambda node, mine: self._restart_node(result, node, mine)
            )
        else:
            for instance in selected:
                if result.outcomes[instance.name].error is not None:
                    continue
                await self._each_node(
                    result,
                    [instance],
                    lambda node, mine: self._rolling_one(result, node, mine[0], drain),
                )
                if result.outcomes[instance.name].error is not None:
                    # Taking more instances down while one is broken would lose capacity.
                    for later in selected[selected.index(instance) + 1 :]:
                        self._set(result, later.name, "skipped", "an earlier instance failed")
                    break
        await self._write_backends(result)
        return result

    async def _restart_node(
        self, result: RunResult, node: NodeSpec, instances: list[Instance]
    ) -> None:
        await self._up_node(result, node, instances, prune=False, restart=True)

    async def _rolling_one(
        self, result: RunResult, node: NodeSpec, instance: Instance, drain: RouterCall | None
    ) -> None:
        try:
            if drain is not None:
                self._set(result, instance.name, "draining", instance.backend_id)
                await drain("drain", instance)
            await self._restart_node(result, node, [instance])
            if drain is not None and result.outcomes[instance.name].ready:
                await drain("undrain", instance)
        except NodeError:
            raise
        except DeployError as exc:
            self._fail(result, instance, str(exc))
