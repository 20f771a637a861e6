"""The end-to-end harness: every server a test talks to comes from these fixtures.

- ``isolated`` (every module, automatically): loopback only, no proxies, no inherited MLflow,
  AWS or flavour settings; the environment and MLflow's globals restored afterwards
  (``isolation.py``).
- ``servers``: starts ``mlflow server``, ``bentoml serve``, ``moto_server`` and ``mlops-assets
  dev`` for the module (each on a free port of 127.0.0.1, in a process group of its own,
  ready within a bounded wait) and stops them all when the module is done, failing if one of
  them left a process behind (``servers.py``).
- ``moto_server``: a ready S3 API; ``postgres``: a throwaway PostgreSQL cluster with the
  ``dagster`` and ``mlflow`` databases (skipped without the server binaries, failed when
  ``CI=true``).
- ``nats_broker``, ``fresh_nats_broker``: NATS with JetStream.  # [template:only with_streaming]

The UI check starts its own ``mlops-assets dev`` (``mlops_assets/ui_check.py``, the same code
as ``mlops-assets ui-check``) on the same process helpers, ``mlops_assets/processes.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path  # [template:only with_streaming]

import pytest

from mlops_assets.streaming.nats_server import NatsServer  # [template:only with_streaming]
from mlops_assets_tests.e2e.isolation import LoopbackOnly, isolated_process
from mlops_assets_tests.e2e.nats import running_nats  # [template:only with_streaming]
from mlops_assets_tests.e2e.postgres import PostgresCluster, running_postgres
from mlops_assets_tests.e2e.servers import MotoServer, Servers


@pytest.fixture(scope="module", autouse=True)
def isolated() -> Iterator[LoopbackOnly]:
    """The module's process: loopback only, nothing inherited, everything restored after."""
    with isolated_process() as guard:
        yield guard


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """Starts servers for the module; stops every one of them when the module is done."""
    registry = Servers(tmp_path_factory)
    try:
        yield registry
    finally:
        registry.stop_all()


@pytest.fixture(scope="module")
def moto_server(servers: Servers) -> MotoServer:
    """A ready ``moto_server`` (S3 API) for the module."""
    return servers.moto()


# [template:if with_streaming]
@pytest.fixture(scope="module")
def nats_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A ready NATS server with JetStream for the module (don't restart or stop it)."""
    with running_nats(tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture
def fresh_nats_broker(tmp_path: Path) -> Iterator[NatsServer]:
    """A ready NATS server with JetStream of the test's own: restart or stop it at will."""
    with running_nats(tmp_path / "nats") as server:
        yield server


# [template:end]
@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresCluster]:
    """A throwaway cluster with the ``dagster`` and ``mlflow`` databases (skips without it)."""
    with running_postgres() as cluster:
        yield cluster
