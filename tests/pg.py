"""A throwaway PostgreSQL cluster for the hub tests, and the ``hub_url`` fixture over both engines.

Test modules load this as a plugin (``pytest_plugins = ("pg",)``). ``pg_cluster`` (session)
runs ``initdb`` and ``pg_ctl`` from ``/usr/lib/postgresql/<version>/bin`` (Debian's
``postgresql`` package; the newest version present) in a temporary directory: trust auth,
127.0.0.1 on a free port, the unix socket in the same directory. As root it runs them as the
``postgres`` user (PostgreSQL refuses to run as root). At the end of the session the cluster
is stopped with ``pg_ctl stop -m immediate`` and its directory removed. Without the binaries,
every PostgreSQL test SKIPS with the reason; CI installs them (scripts/test.sh).

``hub_url`` is parametrised over ``sqlite`` and ``postgresql``: each test gets an empty
database of its own (a new SQLite file, or a new PostgreSQL database in the cluster).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin/initdb"
START_TIMEOUT_S = 60


def pg_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with initdb, or None."""
    found = [Path(p).parent for p in glob.glob(PG_BIN_GLOB)]
    if not found:
        return None
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """One running PostgreSQL cluster in a temporary directory."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="kiosk-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        self._names = itertools.count(1)
        if self.as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root}"
        self.run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "start",
        )

    def command(self, tool: str, *args: str) -> list[str]:
        argv = [str(self.bindir / tool), *args]
        return ["runuser", "-u", "postgres", "--", *argv] if self.as_postgres else argv

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.command(tool, *args), capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed: {done.stderr or done.stdout}\n{tail}")
        return done

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "hub") -> str:
        """A new empty database; returns its URL."""
        name = f"{prefix}_{next(self._names)}"
        self.run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def stop(self) -> None:
        try:
            self.run("pg_ctl", "-D", str(self.data), "stop", "-m", "immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    bindir = pg_bindir()
    if bindir is None:
        pytest.skip(
            f"PostgreSQL binaries absent (no {PG_BIN_GLOB}): install Debian's postgresql "
            "package (scripts/test.sh does) to run the hub tests on PostgreSQL"
        )
    cluster = PgCluster(bindir)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def hub_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty hub database on each engine."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub' / 'hub.db'}"
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """An empty PostgreSQL database (for tests that are about PostgreSQL only)."""
    return pg_cluster.create_database()
