"""The program deploy runs on a node: ``python3 -c <this file's source>``, request on stdin.

Self-contained (stdlib only, Python 3.8+) because the node has no llmops installed. The
request is one JSON line on stdin (it may hold secrets, so it never touches the command
line); stdin then stays open until the deployer goes away. The answer is JSON lines on
stdout, one per instance as each finishes, so the deployer shows progress during a wait.

Remote state of an instance lives in ``<state_dir>/<deployment>/<instance key>/``:
``state.json`` (pid, pgid, process start time, spec hash, argv, port), ``env.json`` (0600:
the environment, which may hold an API key) and ``engine.log`` (stdin, stdout and stderr).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Dict  # noqa: UP035

PROBE_TIMEOUT_S = 2.0
POLL_INTERVAL_S = 0.25
LOG_TAIL_LINES = 30
LOG_ROTATE_BYTES = 64 * 1024 * 1024  # at start, a bigger engine.log moves to engine.log.1
# Every process of an instance inherits this variable; stop signals only processes that carry
# it, so a recycled pid or process group id never makes us kill a stranger.
MARKER = "LLMOPS_INSTANCE"

# typing.Dict: the node's Python may predate subscriptable builtins (3.9).
Request = Dict[str, Any]  # noqa: UP006


# "stop": the deployer went away (our stdin reached end-of-file: Ctrl-C, lost connection);
# "gone": nobody reads our output any more. Either way, finish what cannot be left half
# done (a start and its state.json), then stop waiting.
STATE = {"stop": False, "gone": False}


def watch_deployer() -> None:
    """Runs in a thread: the deployer keeps our stdin open while it listens."""
    sys.stdin.read()
    STATE["stop"] = True


def emit(event: dict[str, Any]) -> None:
    if STATE["gone"]:
        return
    try:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        STATE["gone"] = True


def instance_dir(request: Request, key: str) -> str:
    return os.path.join(os.path.expanduser(request["state_dir"]), request["deployment"], key)


def read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def write_json(path: str, data: Any, mode: int = 0o644) -> None:
    """Write atomically with ``mode`` set before any byte lands (env.json holds secrets)."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def marker(request: Request, key: str) -> str:
    return f"{request['deployment']}/{key}"


def has_marker(pid: int, value: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return f"{MARKER}={value}".encode() in handle.read().split(b"\0")
    except OSError:
        return False


def group_members(pgid: int, value: str) -> list[int]:
    """Live processes of the instance's group. Zombies do not count: nobody reaps orphans
    in some containers."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = proc_stat(int(entry))
            if (
                fields
                and fields[0] != "Z"
                and int(fields[2]) == pgid
                and has_marker(int(entry), value)
            ):
                members.append(int(entry))
    return members


def is_running(record: Any) -> bool:
    """The recorded leader is alive and is the same process (its start time matches)."""
    if not isinstance(record, dict):
        return False
    fields = proc_stat(int(record.get("pid", 0)))
    return fields is not None and fields[0] != "Z" and fields[19] == record.get("start_time")


def records(request: Request) -> dict[str, dict[str, Any]]:
    """State of this node's instances of the deployment, by instance key."""
    root = os.path.join(os.path.expanduser(request["state_dir"]), request["deployment"])
    found = {}
    for key in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        record = read_json(os.path.join(root, key, "state.json"))
        if isinstance(record, dict) and record.get("node") == request["node"]:
            found[key] = record
    return found


def port_taken(address: str, port: int) -> bool:
    """Whether an engine could not bind ``port`` (tried on its address, else on all)."""
    for host in (address, "0.0.0.0"):
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do
        try:
            sock.bind((host, port))
            return False
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
        except socket.gaierror:
            pass
        finally:
            sock.close()
    return False


def engine_env(instance: dict[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(instance["env"])
    return env


def gpu_inventory() -> list[dict[str, int]] | None:
    if shutil.which("nvidia-smi") is None:
        return None
    query = [
        "nvidia-smi",
        "--query-gpu=index,memory.total,memory.used",
        "--format=csv,noheader,nounits",
    ]
    out = subprocess.run(
        query, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=30, check=False
    )
    gpus = []
    for line in out.stdout.decode(errors="replace").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            gpus.append(
                {"index": int(parts[0]), "total_mib": int(parts[1]), "used_mib": int(parts[2])}
            )
    return gpus


def gpu_memory_by_pid() -> dict[int, int]:
    if shutil.which("nvidia-smi") is None:
        return {}
    query = ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
    out = subprocess.run(
        query, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=30, check=False
    )
    used: dict[int, int] = {}
    for line in out.stdout.decode(errors="replace").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            used[int(parts[0])] = used.get(int(parts[0]), 0) + int(parts[1])
    return used


def log_tail(path: str, lines: int) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            data = handle.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def do_inventory(request: Request) -> None:
    gpus = gpu_inventory()
    emit({"gpus": gpus} if gpus is not None else {"error": "nvidia-smi not found on PATH"})


def preflight(request: Request, existing: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Read-only checks of each instance; returns those that passed.

    Ports held by this deployment's own running instances are fine: up replaces them.
    """
    mine = {r["port"] for r in existing.values() if is_running(r)}
    gpus = gpu_inventory()
    present = {g["index"]: g for g in gpus} if gpus is not None else None
    passed = []
    for instance in request["instances"]:
        problems, warnings = [], []
        command = instance["argv"][0]
        if shutil.which(command, path=engine_env(instance).get("PATH")) is None:
            problems.append(f"engine command not found: {command}")
        if instance["port"] not in mine and port_taken(instance["address"], instance["port"]):
            problems.append(f"port {instance['port']} is already taken on the node")
        for gpu in instance["gpus"]:
            if present is None:  # no nvidia-smi: nothing to check against
                break
            if gpu not in present:
                problems.append(f"GPU {gpu} not present (node has {sorted(present)})")
            elif present[gpu]["used_mib"] > 1024 and instance["port"] not in mine:
                warnings.append(f"GPU {gpu} already has {present[gpu]['used_mib']} MiB in use")
        emit({"instance": instance["name"], "preflight": problems, "warnings": warnings})
        if not problems:
            passed.append(instance)
    return passed


def stop_groups(request: Request, targets: dict[str, dict[str, Any]]) -> dict[str, list[int]]:
    """SIGTERM the processes of every target instance (key -> record) at once, wait, SIGKILL
    what is left; returns the pids still alive per key (should be all empty). Also ends
    workers that outlived a crashed engine (they hold GPU memory)."""

    def members() -> dict[str, list[int]]:
        return {k: group_members(int(r["pgid"]), marker(request, k)) for k, r in targets.items()}

    for sig, wait_s in ((signal.SIGTERM, request["stop_timeout_s"]), (signal.SIGKILL, 5.0)):
        alive = members()
        for pids in alive.values():
            for pid in pids:  # one by one: only the marked members of the group
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while any(alive.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = members()
    return members()


def start(request: Request, instance: dict[str, Any]) -> dict[str, Any]:
    directory = instance_dir(request, instance["key"])
    os.makedirs(directory, mode=0o700, exist_ok=True)
    env_path = os.path.join(directory, "env.json")
    write_json(env_path, instance["env"], mode=0o600)
    log_path = os.path.join(directory, "engine.log")
    if os.path.exists(log_path) and os.path.getsize(log_path) > LOG_ROTATE_BYTES:
        os.replace(log_path, log_path + ".1")
    with open(log_path, "ab") as log:
        log.write(
            f"=== llmops: starting {instance['name']} (spec {instance['spec_hash']})\n".encode()
        )
        log.flush()
        env = dict(os.environ)
        env.update(read_json(env_path))
        env[MARKER] = marker(request, instance["key"])
        # start_new_session = setsid(): the engine outlives this SSH channel and owns a process
        # group that stop can signal as a whole.
        child = subprocess.Popen(
            instance["argv"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    fields = proc_stat(child.pid)
    record = {
        "name": instance["name"],
        "node": request["node"],
        "model": instance["model"],
        "pid": child.pid,
        "pgid": child.pid,
        "start_time": fields[19] if fields else "",
        "spec_hash": instance["spec_hash"],
        "argv": instance["argv"],
        "port": instance["port"],
        "address": instance["address"],
        "started_at": time.time(),
    }
    write_json(os.path.join(directory, "state.json"), record)
    return record


def do_up(request: Request) -> None:
    """Preflight; leave unchanged instances alone (unless ``restart``); stop changed ones,
    leftovers of dead ones and (``prune``) those no longer planned, all before starting
    anything, so ports and GPUs that move between instances are free; start; wait ready."""
    existing = records(request)
    passed = preflight(request, existing)
    planned = {i["key"] for i in request["instances"]}
    unchanged, to_start = [], []
    for instance in passed:
        record = existing.get(instance["key"], {})
        same = record.get("spec_hash") == instance["spec_hash"]
        if same and is_running(record) and not request.get("restart"):
            emit({"instance": instance["name"], "action": "unchanged", "pid": record["pid"]})
            unchanged.append(instance)
        else:
            to_start.append(instance)
    replaced = {i["key"]: existing[i["key"]] for i in to_start if i["key"] in existing}
    pruned = {k: r for k, r in existing.items() if request.get("prune") and k not in planned}
    was_running = {key for key, record in replaced.items() if is_running(record)}
    left = stop_groups(request, {**replaced, **pruned})
    for key, record in pruned.items():
        if not left[key]:
            os.remove(os.path.join(instance_dir(request, key), "state.json"))
        emit({"instance": record.get("name", key), "action": "removed", "left": left[key]})
    started = []
    for instance in to_start:
        key, name = instance["key"], instance["name"]
        if left.get(key):
            emit({"instance": name, "error": f"old processes did not stop: {left[key]}"})
            continue
        try:
            new = start(request, instance)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            emit({"instance": name, "error": f"cannot start {instance['argv'][0]}: {reason}"})
            continue
        action = "restarted" if key in was_running else "started"
        emit({"instance": name, "action": action, "pid": new["pid"]})
        started.append(instance)
    wait_ready(request, unchanged + started)


def http_get(url: str, token: str | None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (OSError, ValueError):
        return 0, b""


def probe_url(instance: dict[str, Any]) -> str:
    host = instance["address"]
    return (
        f"http://[{host}]:{instance['port']}"
        if ":" in host
        else f"http://{host}:{instance['port']}"
    )


def probe_ready(instance: dict[str, Any]) -> bool:
    """``/health`` answers 200 and ``/v1/models`` lists the served model."""
    base = probe_url(instance)
    if http_get(base + "/health", None)[0] != 200:
        return False
    status, body = http_get(base + "/v1/models", instance["env"].get("VLLM_API_KEY"))
    if status != 200:
        return False
    try:
        served = [m.get("id") for m in json.loads(body).get("data", [])]
    except (ValueError, AttributeError):
        return False
    return instance["model"] in served


def do_wait(request: Request) -> None:
    wait_ready(request, request["instances"])


def wait_ready(request: Request, instances: list[dict[str, Any]]) -> None:
    """Report each instance as ready, dead or timed out, as soon as it is one of them."""
    started = time.monotonic()
    pending = {i["key"]: i for i in instances}
    while pending and not (STATE["stop"] or STATE["gone"]):
        for key, instance in list(pending.items()):
            record = read_json(os.path.join(instance_dir(request, key), "state.json"))
            log_path = os.path.join(instance_dir(request, key), "engine.log")
            if not is_running(record):
                tail = log_tail(log_path, LOG_TAIL_LINES)
                emit(
                    {
                        "instance": instance["name"],
                        "error": "engine exited before it was ready",
                        "log_tail": tail,
                    }
                )
            elif probe_ready(instance):
                emit(
                    {
                        "instance": instance["name"],
                        "ready": True,
                        "after_s": round(time.monotonic() - started, 2),
                    }
                )
            elif time.monotonic() - started > instance["ready_timeout_s"]:
                tail = log_tail(log_path, LOG_TAIL_LINES)
                limit = instance["ready_timeout_s"]
                emit(
                    {
                        "instance": instance["name"],
                        "error": f"not ready after {limit:g} s",
                        "log_tail": tail,
                    }
                )
            else:
                continue
            del pending[key]
        if pending:
            time.sleep(POLL_INTERVAL_S)


def engine_metrics(instance: dict[str, Any]) -> dict[str, float]:
    names = {
        "vllm:num_requests_running": "running",
        "vllm:num_requests_waiting": "waiting",
        "vllm:kv_cache_usage_perc": "kv_cache_usage",
        "sglang:num_running_reqs": "running",
        "sglang:num_queue_reqs": "waiting",
        "sglang:token_usage": "kv_cache_usage",
    }
    status, body = http_get(probe_url(instance) + "/metrics", instance["env"].get("VLLM_API_KEY"))
    found: dict[str, float] = {}
    for line in body.decode(errors="replace").splitlines() if status == 200 else []:
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in names:
            try:
                found[names[name]] = found.get(names[name], 0.0) + float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
    return found


def do_status(request: Request) -> None:
    existing = records(request)
    gpu_used = gpu_memory_by_pid()
    for instance in request["instances"]:
        record = existing.pop(instance["key"], None)
        running = is_running(record)
        event: dict[str, Any] = {"instance": instance["name"], "running": running}
        if record is not None and running:
            members = group_members(int(record["pgid"]), marker(request, instance["key"]))
            status, _ = http_get(probe_url(instance) + "/health", None)
            event.update(
                pid=record["pid"],
                current=record.get("spec_hash") == instance["spec_hash"],
                health=status,
                ready=probe_ready(instance),
                metrics=engine_metrics(instance),
                gpu_mib=sum(gpu_used.get(pid, 0) for pid in members),
                uptime_s=round(time.time() - float(record.get("started_at", time.time()))),
            )
        emit(event)
    for key, record in existing.items():
        emit({"instance": record.get("name", key), "running": is_running(record), "orphan": True})


def do_stop(request: Request) -> None:
    """Stop the given instances; with ``all``, also those of the deployment the plan lost."""
    existing = records(request)
    targets = [(i["key"], i["name"]) for i in request["instances"]]
    if request.get("all"):
        planned = {key for key, _ in targets}
        targets += [(key, r.get("name", key)) for key, r in existing.items() if key not in planned]
    found = {key: existing[key] for key, _ in targets if key in existing}
    alive = {k for k, r in found.items() if group_members(int(r["pgid"]), marker(request, k))}
    left = stop_groups(request, found)  # even where the leader died: its workers may not have
    for key, name in targets:
        record = found.get(key)
        if record is None:
            emit({"instance": name, "action": "not running"})
        elif left[key]:
            emit({"instance": name, "error": f"processes still alive after SIGKILL: {left[key]}"})
        else:
            os.remove(os.path.join(instance_dir(request, key), "state.json"))
            taken = port_taken(record.get("address", "127.0.0.1"), int(record["port"]))
            action = "stopped" if key in alive else "not running"
            emit({"instance": name, "action": action, "port_free": not taken})


def do_logs(request: Request) -> None:
    for instance in request["instances"]:
        path = os.path.join(instance_dir(request, instance["key"]), "engine.log")
        emit(
            {
                "instance": instance["name"],
                "log": log_tail(path, int(request.get("lines", 50))),
                "path": path,
            }
        )


OPERATIONS = {
    "inventory": do_inventory,
    "up": do_up,
    "wait": do_wait,
    "status": do_status,
    "stop": do_stop,
    "logs": do_logs,
}


# Operations that change processes hold the deployment's lock on the node for their duration.
LOCKED_OPERATIONS = {"up", "stop"}


def main() -> None:
    request = json.loads(sys.stdin.readline())
    threading.Thread(target=watch_deployer, daemon=True).start()
    if request["op"] not in LOCKED_OPERATIONS:
        OPERATIONS[request["op"]](request)
        return
    root = os.path.join(os.path.expanduser(request["state_dir"]), request["deployment"])
    os.makedirs(root, mode=0o700, exist_ok=True)
    # One lock per node: home directories shared between nodes (NFS) must not serialize them.
    lock_name = ".lock-" + "".join(c if c.isalnum() or c in ".-" else "_" for c in request["node"])
    with open(os.path.join(root, lock_name), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            emit({"node_error": "another llmops deploy is changing this deployment on the node"})
            return
        OPERATIONS[request["op"]](request)


if __name__ == "__main__":
    main()
