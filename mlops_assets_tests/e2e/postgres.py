"""A throwaway PostgreSQL cluster for end-to-end tests: initdb, start, roles, databases, stop.

The cluster lives in its own temporary folder (data directory, unix socket, server log) and
listens on a free port of 127.0.0.1 only. Every connection authenticates with a password
(``scram-sha-256`` for local and TCP connections): an administrator role creates the role the
tests use, ``mlops``, which owns one database per component (``dagster``, ``mlflow``).

``initdb`` and ``postgres`` refuse to run as root. Under root (containers, CI runners) the
cluster is owned by an unprivileged account, ``postgres`` if it exists (the Debian package
creates it), else ``nobody``, and every server binary runs as that account through
``subprocess`` (``user=``/``group=``/``extra_groups=[]``: a plain setuid in the child, no PAM,
no login shell, unlike ``su``/``runuser``). The temporary folder is then created directly in
``/tmp`` (pytest's folders are private to root) and removed again on stop.

Binaries: ``pg_config --bindir``, then ``/usr/lib/postgresql/<newest>/bin``, then ``PATH``.
Without them a test is skipped with the install command, or fails when ``CI=true``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from mlops_assets.processes import HOST, ServerLog, free_port, wait_for

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; install them with "
    "`sudo apt-get install -y --no-install-recommends postgresql` (Debian/Ubuntu) "
    "or run .ci/ensure-postgres"
)
SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
ADMIN = "pgadmin"  # the cluster's superuser, used only to create the role and databases
ROLE = "mlops"
DATABASES = ("dagster", "mlflow")
UNPRIVILEGED_ACCOUNTS = ("postgres", "nobody")
COMMAND_TIMEOUT = 60.0  # initdb, pg_ctl start (-w), pg_ctl stop (-w)
START_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it
# Durability is irrelevant for a throwaway cluster; these make it several times faster.
SERVER_SETTINGS = {
    "listen_addresses": HOST,
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
}


class PostgresError(RuntimeError):
    """The throwaway cluster could not be created, started or stopped."""


def find_bindir() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``, or ``None``."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10
            )
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(Path(out.stdout.strip()))

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", Path(path).parent.name))

    candidates += [
        Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    ]
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for folder in candidates:
        if all(os.access(folder / name, os.X_OK) for name in SERVER_BINARIES):
            return folder
    return None


def require_bindir() -> Path:
    """The server binaries' folder; skips the test without them (fails it when ``CI=true``)."""
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(f"CI=true: {INSTALL_HINT}", pytrace=False)
        pytest.skip(INSTALL_HINT)
    return bindir


@dataclass(frozen=True)
class Account:
    """The OS account the server runs as (``None`` fields: the current one)."""

    name: str
    uid: int | None = None
    gid: int | None = None

    @classmethod
    def choose(cls) -> Account:
        if os.geteuid() != 0:
            return cls(pwd.getpwuid(os.geteuid()).pw_name)
        for name in UNPRIVILEGED_ACCOUNTS:
            with contextlib.suppress(KeyError):
                entry = pwd.getpwnam(name)
                return cls(name, entry.pw_uid, entry.pw_gid)
        raise PostgresError(
            f"running as root and none of the accounts {UNPRIVILEGED_ACCOUNTS} exists: "
            "initdb refuses to run as root"
        )

    def popen_args(self) -> dict[str, Any]:
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


@dataclass
class PostgresCluster(ServerLog):
    """A running throwaway cluster on 127.0.0.1 (see the module docstring)."""

    NAME = "PostgreSQL"

    bindir: Path
    root: Path
    account: Account
    port: int = 0
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18), repr=False)
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(18), repr=False)
    started: bool = False

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    # -- addresses ------------------------------------------------------------------------

    def url(self, database: str, *, password: str | None = None, scheme: str = "postgresql") -> str:
        """A SQLAlchemy/libpq URL for the ``mlops`` role (``password`` overrides the real one)."""
        secret = quote(self.password if password is None else password, safe="")
        return f"{scheme}://{ROLE}:{secret}@{HOST}:{self.port}/{database}"

    def connect(self, database: str, *, admin: bool = False) -> Any:
        """A psycopg2 connection (autocommit) over TCP with password authentication."""
        import psycopg2

        connection = psycopg2.connect(
            host=HOST,
            port=self.port,
            dbname=database,
            user=ADMIN if admin else ROLE,
            password=self.admin_password if admin else self.password,
            connect_timeout=10,
        )
        connection.autocommit = True
        return connection

    def query(self, database: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Rows of one statement, on a fresh connection."""
        connection = self.connect(database)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return list(cursor.fetchall())
        finally:
            connection.close()

    # -- processes ------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        return {
            "PATH": f"{self.bindir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self.root),
            "LANG": "C",
            "LC_ALL": "C",
            "TZ": "UTC",
        }

    def _run(
        self, *args: str, timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Runs a server binary as the cluster's account; raises with its output on failure."""
        command = [str(self.bindir / args[0]), *args[1:]]
        try:
            done = subprocess.run(
                command,
                cwd=self.root,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                **self.account.popen_args(),
            )
        except subprocess.TimeoutExpired as error:
            raise PostgresError(
                f"{args[0]} did not finish within {timeout:.0f} s\n{self.log_tail()}"
            ) from error
        if done.returncode != 0:
            raise PostgresError(
                f"{shlex.join(command)} exited with {done.returncode}\n"
                f"{done.stdout}{done.stderr}\nserver log tail:\n{self.log_tail()}"
            )
        return done

    def _own(self, path: Path) -> None:
        if self.account.uid is not None:
            os.chown(path, self.account.uid, self.account.gid or 0)

    def init(self) -> None:
        """``initdb`` with password authentication for every connection."""
        self.socket_dir.mkdir()
        self._own(self.socket_dir)
        pwfile = self.root / "admin.pw"
        pwfile.write_text(self.admin_password + "\n")
        pwfile.chmod(0o600)
        self._own(pwfile)
        try:
            self._run(
                "initdb",
                "--pgdata",
                str(self.data_dir),
                "--username",
                ADMIN,
                "--pwfile",
                str(pwfile),
                "--auth",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
                "--no-instructions",
            )
        finally:
            pwfile.unlink()

    def _start_once(self) -> None:
        self.port = free_port()
        settings = {**SERVER_SETTINGS, "port": str(self.port)}
        options = " ".join(f"-c {key}={shlex.quote(value)}" for key, value in settings.items())
        options += f" -k {shlex.quote(str(self.socket_dir))}"
        self._run(
            "pg_ctl",
            "start",
            "--pgdata",
            str(self.data_dir),
            "--log",
            str(self.log_path),
            "--options",
            options,
            "--wait",
            "--timeout",
            str(int(COMMAND_TIMEOUT)),
            timeout=COMMAND_TIMEOUT + 10,
        )

    def start(self) -> None:
        """Starts the server on a free port (retried if the port was taken meanwhile)."""
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self._start_once()
                break
            except PostgresError as error:
                taken = "could not bind" in str(error) or "already in use" in str(error)
                if not taken or attempt == START_ATTEMPTS:
                    raise
        self.started = True
        wait_for(
            self._accepts,
            timeout=COMMAND_TIMEOUT,
            interval=0.2,
            what=f"PostgreSQL on {HOST}:{self.port}",
            diagnose=self.log_tail,
        )

    def _accepts(self) -> bool:
        import psycopg2

        try:
            self.connect("postgres", admin=True).close()
        except psycopg2.OperationalError:
            return False
        return True

    def create_databases(self) -> None:
        """The ``mlops`` role (password, no superuser) owning one database per component."""
        from psycopg2 import sql

        connection = self.connect("postgres", admin=True)
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(ROLE)),
                    (self.password,),
                )
                for database in DATABASES:
                    cursor.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(
                            sql.Identifier(database), sql.Identifier(ROLE)
                        )
                    )
        finally:
            connection.close()

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """``pg_ctl stop -m fast``; ``immediate`` and then SIGKILL of the postmaster if needed."""
        if not self.started:
            return
        pid = self.postmaster_pid()
        for mode in ("fast", "immediate"):
            try:
                self._run(
                    "pg_ctl",
                    "stop",
                    "--pgdata",
                    str(self.data_dir),
                    "--mode",
                    mode,
                    "--wait",
                    "--timeout",
                    "30",
                    timeout=40,
                )
                self.started = False
                return
            except PostgresError as error:
                print(f"pg_ctl stop -m {mode} failed: {error}")
        if pid is not None:  # the postmaster this cluster started, by its pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                time.sleep(0.2)
        self.started = False


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresCluster]:
    """A started cluster with the ``mlops`` role and its databases; always stopped and removed.

    Skips the test when the server binaries are missing (fails it when ``CI=true``).
    """
    bindir = require_bindir()
    account = Account.choose()
    # Under root the account must reach the folder: pytest's tmp folders are private to root.
    parent = "/tmp" if account.uid is not None and os.path.isdir("/tmp") else None
    root = Path(tempfile.mkdtemp(prefix="mlops-pg-", dir=parent))
    cluster = PostgresCluster(bindir, root, account)
    try:
        cluster._own(root)
        with cluster.report_on_failure():
            cluster.init()
            cluster.start()
            cluster.create_databases()
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)
