"""``llmops deploy``: vLLM/SGLang engines on GPU nodes over SSH, and the router's backend file.

Only Typer and the stdlib are imported here; asyncssh, rich and the rest load inside the
commands so ``llmops --help`` stays fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    from rich.console import Console

    from llmops.deploy.operations import Deployer, RunResult


class _UpByDefault(TyperGroup):
    """``llmops deploy nodes.yaml`` means ``llmops deploy up nodes.yaml``, and options may come
    before the command (``llmops deploy --insecure-host-keys status nodes.yaml``)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        position = next((i for i, a in enumerate(args) if not a.startswith("-")), None)
        if position is not None and not {"-h", "--help"} & set(args[:position]):
            command = args[position]
            if command in self.commands:
                args = [command, *args[:position], *args[position + 1 :]]
            else:
                args = ["up", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_UpByDefault,
    help="Start vLLM/SGLang engines on GPU nodes over SSH and write the router's backend file.\n\n"
    "Example: llmops deploy nodes.yaml   (same as: llmops deploy up nodes.yaml)",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

SPEC = typer.Argument(..., help="The nodes.yaml file.", exists=False, dir_okay=False)
INSTANCES = typer.Argument(None, help="Instance names (<model>-<node host>-<index>); default: all.")
INSECURE = typer.Option(
    False, "--insecure-host-keys", help="Accept any SSH host key (default: check known_hosts)."
)


def _run(
    spec_path: Path, insecure: bool, work: Any, *, until_interrupted: bool = False
) -> tuple[Any, Console]:
    """Load the spec, run ``work(deployer, console)`` over SSH opened lazily, always close SSH."""
    from rich.console import Console

    from llmops.deploy.operations import Deployer
    from llmops.deploy.spec import load_spec
    from llmops.deploy.ssh import NodeConnections

    console = Console(soft_wrap=True)  # long errors stay on one line when piped to a file
    if insecure:
        typer.echo(
            "llmops: warning: SSH host keys are not checked (--insecure-host-keys)", err=True
        )
    loaded = load_spec(spec_path)

    async def main() -> Any:
        async with NodeConnections(loaded.spec, insecure_host_keys=insecure) as connections:
            return await work(Deployer(loaded, connections), console)

    try:
        return asyncio.run(main()), console
    except KeyboardInterrupt:
        if until_interrupted:  # Ctrl-C is how `logs --follow` ends
            raise typer.Exit(0) from None
        # The node agents see the connection close and stop waiting; engines keep running.
        message = "interrupted; engines already started keep running (llmops deploy status)"
        typer.echo(f"llmops: {message}", err=True)
        raise typer.Exit(130) from None


def _finish(result: RunResult, console: Console, verb: str) -> None:
    """Print every failure (with its log tail) and exit 1 if there was one."""
    from rich.markup import escape

    from llmops.deploy.errors import DeployFailed, InstanceError

    reported_nodes = set()
    for error in result.errors:
        if isinstance(error, InstanceError):
            reported_nodes.add(error.node)
    for error in result.errors:
        if isinstance(error, InstanceError):
            console.print(f"[bold red]error[/]: {escape(str(error))}", highlight=False)
            if error.log_tail:
                console.print(f"  last lines of the log of {error.instance}:", markup=False)
                for line in error.log_tail.splitlines():
                    console.print(f"  | {line}", highlight=False, markup=False)
        elif getattr(error, "node", None) not in reported_nodes:
            console.print(f"[bold red]error[/]: {escape(str(error))}", highlight=False)
    if result.backend_file is not None:
        console.print(
            f"router backend file: {result.backend_file} ({result.backends_written} ready)",
            highlight=False,
            markup=False,
        )
    failed = sum(1 for o in result.outcomes.values() if o.error is not None)
    if result.failed:
        raise DeployFailed(f"{verb}: {failed} of {len(result.outcomes)} instances failed")


def _run_with_progress(
    spec_path: Path,
    insecure: bool,
    instances: list[str],
    verb: str,
    action: Callable[[Deployer], Awaitable[RunResult]],
) -> None:
    """Run one change of the deployment with a live progress table, then report and exit."""
    from llmops.deploy.progress import Progress

    async def work(deployer: Deployer, console: Console) -> RunResult:
        placed = await deployer.plan()
        with Progress(console, placed.select(instances)) as progress:
            deployer.report = progress
            return await action(deployer)

    result, console = _run(spec_path, insecure, work)
    _finish(result, console, verb)


@app.command()
def plan(spec: Path = SPEC, insecure_host_keys: bool = INSECURE) -> None:
    """Print where each instance would run and its exact command line; changes nothing.

    Example: llmops deploy plan nodes.yaml
    """
    from rich.markup import escape

    from llmops.deploy.progress import plan_table

    async def work(deployer: Deployer, console: Console) -> None:
        placed = await deployer.plan()
        console.print(plan_table(placed))
        for host in placed.unavailable_nodes:
            reason = escape(str(deployer.node_errors.get(host)))
            console.print(f"[yellow]GPUs unknown, nothing planned there: {reason}")

    _run(spec, insecure_host_keys, work)


@app.command()
def up(
    spec: Path = SPEC, instances: list[str] | None = INSTANCES, insecure_host_keys: bool = INSECURE
) -> None:
    """Start what is missing or changed, wait until ready, write the router's backend file.

    Running instances whose spec did not change are left alone; instances no longer in the
    plan are stopped (unless instance names are given).

    Example: llmops deploy up nodes.yaml
    """
    names = instances or []
    _run_with_progress(spec, insecure_host_keys, names, "up", lambda d: d.up(names))


@app.command()
def status(
    spec: Path = SPEC, instances: list[str] | None = INSTANCES, insecure_host_keys: bool = INSECURE
) -> None:
    """Process, health, served model, engine load and GPU memory of each instance.

    Example: llmops deploy status nodes.yaml
    """
    from rich.table import Table
    from rich.text import Text

    async def work(deployer: Deployer, console: Console) -> RunResult:
        rows, result = await deployer.status(instances or [])
        table = Table()
        for column in (
            "instance",
            "node",
            "pid",
            "state",
            "spec",
            "running",
            "waiting",
            "kv",
            "gpu MiB",
            "up",
        ):
            table.add_column(column)
        for row in rows:
            metrics = row.get("metrics", {})
            state = "ready" if row.get("ready") else "up" if row["running"] else "stopped"
            if row.get("orphan"):
                state += " (not in plan)"
            spec_state = "" if "current" not in row else "current" if row["current"] else "changed"
            table.add_row(
                Text(row["instance"]), Text(row["node"]), str(row.get("pid", "")),
                state, spec_state,
                _num(metrics.get("running")), _num(metrics.get("waiting")),
                _num(metrics.get("kv_cache_usage"), "{:.0%}"), _num(row.get("gpu_mib")),
                _num(row.get("uptime_s"), "{:.0f}s"),
            )  # fmt: skip
        console.print(table)
        return result

    result, console = _run(spec, insecure_host_keys, work)
    _finish(result, console, "status")


def _num(value: Any, fmt: str = "{:g}") -> str:
    return "" if value is None else fmt.format(value)


@app.command()
def stop(
    spec: Path = SPEC, instances: list[str] | None = INSTANCES, insecure_host_keys: bool = INSECURE
) -> None:
    """SIGTERM each instance's process group, SIGKILL what is left, check nothing remains.

    Without instance names, every instance of the deployment on the nodes is stopped.

    Example: llmops deploy stop nodes.yaml qwen3-30b-10.0.0.1-0
    """
    names = instances or []
    _run_with_progress(spec, insecure_host_keys, names, "stop", lambda d: d.stop(names))


@app.command()
def logs(
    spec: Path = SPEC,
    instances: list[str] | None = INSTANCES,
    lines: int = typer.Option(50, "--lines", "-n", help="How many of the last lines to show."),
    follow: bool = typer.Option(
        False, "--follow", "-f", help="Keep printing new lines (Ctrl-C to stop)."
    ),
    insecure_host_keys: bool = INSECURE,
) -> None:
    """The end of each instance's engine log, or a live follow of it.

    Example: llmops deploy logs nodes.yaml --follow qwen3-30b-10.0.0.1-0
    """

    from rich.text import Text

    async def work(deployer: Deployer, console: Console) -> RunResult:
        if follow:

            def emit(name: str, line: str) -> None:
                console.print(Text(f"{name} | ", style="cyan"), end="")
                console.print(line, markup=False, highlight=False)

            return await deployer.follow_logs(instances or [], lines, emit)
        found, result = await deployer.logs(instances or [], lines)
        for entry in found:
            console.rule(Text(f"{entry['instance']} ({entry['node']}:{entry['path']})"))
            console.print(entry["log"], markup=False, highlight=False)
        return result

    result, console = _run(spec, insecure_host_keys, work, until_interrupted=follow)
    _finish(result, console, "logs")


@app.command()
def restart(
    spec: Path = SPEC,
    instances: list[str] | None = INSTANCES,
    rolling: bool = typer.Option(
        False, "--rolling", help="One instance at a time, waiting until each is ready."
    ),
    router_url: str | None = typer.Option(
        None,
        "--router-url",
        help="Drain each instance in this router meanwhile (implies --rolling).",
    ),
    router_token: str | None = typer.Option(
        None, "--router-token", envvar="LLMOPS_ADMIN_TOKEN", help="The router's admin token."
    ),
    insecure_host_keys: bool = INSECURE,
) -> None:
    """Stop and start instances (all of them by default, all at once unless --rolling).

    Rolling: one instance at a time; with --router-url it is drained in the router first
    (POST /admin/backends/<model>@<host>:<port>/drain), and undrained once ready again.

    Example: llmops deploy restart nodes.yaml --rolling --router-url http://10.0.0.9:8000
    """
    names = instances or []

    async def restart_all(deployer: Deployer) -> RunResult:
        if router_url is None:
            return await deployer.restart(names, rolling=rolling)
        from llmops.deploy.router_admin import RouterAdmin

        async with RouterAdmin(router_url, router_token) as admin:
            return await deployer.restart(names, rolling=True, drain=admin)

    _run_with_progress(spec, insecure_host_keys, names, "restart", restart_all)
