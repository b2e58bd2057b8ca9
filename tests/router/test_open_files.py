"""The router raises its own open-file limit and says clearly when it stays too low."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import router_config


def test_the_soft_limit_is_raised_to_the_hard_one_and_a_low_one_is_reported(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump(router_config([("m", "http://127.0.0.1:9")])))

    def low_limits() -> None:  # soft 1024, hard 4096: what a default shell often has
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 4096))

    router = subprocess.Popen(
        [sys.executable, "-m", "llmops", "router", "serve", "--config", str(config), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=low_limits,
    )
    try:
        assert router.stdout is not None
        assert " serving " in router.stdout.readline()
        limits = Path(f"/proc/{router.pid}/limits").read_text()
        open_files = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        assert open_files.split()[3:5] == ["4096", "4096"]  # soft raised to the hard limit
    finally:
        router.terminate()
        _, stderr = router.communicate(timeout=30)
    assert "open-file limit is 4096" in stderr
    assert "ulimit -n 65536" in stderr
    assert "Traceback" not in stderr
