"""The stream scorer's health: a TCP connection to a broker of ``MLOPS_STREAM_URL`` is up.

The scorer serves no HTTP endpoint; the container's ``/proc/net/tcp`` (and ``tcp6``) says
whether one of its connections to a broker port is established. Run by the compose health
check and the Kubernetes readiness probe as ``python -m mlops_assets.streaming.health``:
exit 0 when connected, 1 otherwise. Standard library only: it starts in milliseconds.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping

TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
ESTABLISHED = "01"


def broker_ports(url: str) -> set[str]:
    """The ports of ``scheme://host:port[,host:port]`` as ``/proc/net/tcp`` writes them (hex)."""
    hosts = url.split("://", 1)[-1].split(",")
    return {f"{int(host.rsplit(':', 1)[1]):04X}" for host in hosts if ":" in host}


def connected(ports: set[str], tables: Iterable[str] = TCP_TABLES) -> bool:
    """Whether a connection to one of ``ports`` is established."""
    for table in tables:
        if not os.path.exists(table):
            continue
        with open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if fields[3] == ESTABLISHED and fields[2].rsplit(":", 1)[1] in ports:
                    return True
    return False


def main(env: Mapping[str, str] | None = None) -> int:
    """0 when connected to a broker of ``MLOPS_STREAM_URL``, else 1."""
    from mlops_assets.streaming.brokers import URL_VARIABLE

    url = (os.environ if env is None else env).get(URL_VARIABLE, "")
    return 0 if url and connected(broker_ports(url)) else 1


if __name__ == "__main__":
    sys.exit(main())
