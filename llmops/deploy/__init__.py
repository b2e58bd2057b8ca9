"""Engines on GPU nodes over SSH: ``llmops deploy``.

    spec.py          nodes.yaml schema and loader
    plan.py          plan_placement: pure GPU/port placement, exact argv and env, spec hash
    engines.py       vLLM / SGLang command lines
    ssh.py           asyncssh connections: one per node, channel and connect caps, quoting
    agent.py         the stdlib-only program run on each node (state, setsid, stop, probes)
    remote.py        calls to the agent over SSH
    operations.py    up, status, stop, logs, restart across nodes
    backend_file.py  the router's LiteLLM model_list, written atomically
    router_admin.py  drain/undrain during rolling restarts
    progress.py      live progress and tables
    cli.py           the Typer commands

Nothing is re-exported here: importing ``llmops.deploy.cli`` must not pull in asyncssh.
"""
