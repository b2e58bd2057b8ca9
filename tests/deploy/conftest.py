"""Deploy fixtures: the two-node SSH lab of deploy_lab.py, started once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from deploy_lab import SshLab, start_ssh_lab


@pytest.fixture(scope="session")
def ssh_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshLab]:
    yield from start_ssh_lab(tmp_path_factory)
