"""A throwaway PostgreSQL server for the tests: Debian's `postgresql` package, a fresh data
folder, a free loopback port and a socket folder of its own; stopped and removed at the end.

As root the server runs as the `postgres` user (PostgreSQL refuses to run as root).
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from gunicorn_support import free_port


def _binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise AssertionError("PostgreSQL is not installed: apt-get install postgresql (.ci/run does)")
    return Path(found[-1]).parent


@dataclass
class PostgresServer:
    folder: Path
    port: int
    bin: Path
    user: str | None          # the user the server runs as, when we are root

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        return subprocess.run([*prefix, *command], capture_output=True, text=True, check=check, timeout=120)

    @classmethod
    def start(cls) -> "PostgresServer":
        folder = Path(tempfile.mkdtemp(prefix="ad-purchase-pg-"))
        user = "postgres" if os.geteuid() == 0 else None
        if user:
            entry = pwd.getpwnam(user)
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        server = cls(folder, free_port(), _binaries(), user)
        server._run(str(server.bin / "initdb"), "-D", str(folder / "data"), "-U", "postgres", "--auth=trust",
                    "-E", "UTF8", "--no-sync")
        server._run(str(server.bin / "pg_ctl"), "-D", str(folder / "data"), "-l", str(folder / "server.log"),
                    "-w", "-t", "60", "-o",
                    f"-p {server.port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=200", "start")
        return server

    def new_database(self) -> str:
        """A URL of a fresh, empty database on this server."""
        import psycopg
        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def pg_ctl(self, action: str) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-l", str(self.folder / "server.log"),
                  "-w", "-t", "60", "-m", "fast", "-o",
                  f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=200", action)

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop",
                  check=False)
        shutil.rmtree(self.folder, ignore_errors=True)
