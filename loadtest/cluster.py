"""A real Redis Cluster on loopback (the cluster tests and `pushgw bench --scaling`): three primaries with one
replica each, every node with AOF (appendfsync always) and noeviction, each with its own cluster bus port,
created by the `--cluster create` of the cli that goes with the server binary."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from redis import Redis

from gateway.core.local_servers import free_port, server_command

NODE_TIMEOUT_MS = 1000
"""How long a primary may be unreachable before its replica takes over (Redis's default is 15000)."""


def cli_binary(server: str) -> str:
    """The cli that goes with a server binary: valkey-cli beside the embedded valkey-server, else redis-cli
    (or valkey-cli) from PATH. Raises FileNotFoundError."""
    beside = Path(server).with_name(Path(server).name.replace("-server", "-cli"))
    found = str(beside) if beside.exists() else shutil.which("redis-cli") or shutil.which("valkey-cli")
    if not found:
        raise FileNotFoundError(f"no redis-cli or valkey-cli for {server}")
    return found


class LocalCluster:
    """Nodes on free loopback ports (each with its own cluster bus port) in `directory`."""

    def __init__(self, directory: Path, binary: str, primaries: int = 3, replicas: int = 1) -> None:
        self.binary = binary
        self.cli = cli_binary(self.binary)
        self.directory = directory
        self.primaries = primaries
        self.replicas = replicas
        self.ports = [free_port() for _ in range(primaries * (1 + replicas))]
        self._bus_ports = {port: free_port() for port in self.ports}
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """Two seeds, as an operator would write it: the client finds the other nodes itself."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports[:2])

    def start(self) -> None:
        for port in self.ports:
            self.start_node(port)
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            [
                self.cli,
                "--cluster",
                "create",
                *nodes,
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.wait_healthy()

    def start_node(self, port: int) -> None:
        directory = self.directory / str(port)
        directory.mkdir(exist_ok=True)
        command = [
            *server_command(self.binary, port, directory),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(directory / "nodes.conf"),
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
            "--cluster-port",
            str(self._bus_ports[port]),
        ]
        self.processes[port] = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        _wait_for_ping(port)

    def kill(self, port: int) -> None:
        """SIGKILL one node (no shutdown, no last fsync beyond what appendfsync always did)."""
        process = self.processes.pop(port)
        process.kill()
        process.wait(timeout=10)

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            process.wait(timeout=10)
        self.processes.clear()

    def roles(self) -> dict[int, str]:
        """port -> "master" | "slave" of every running node, as the nodes themselves say."""
        found = {}
        for port in self.processes:
            with Redis(port=port, socket_timeout=2) as node:
                found[port] = str(node.execute_command("ROLE")[0], "ascii")
        return found

    def primary_ports(self) -> list[int]:
        return [port for port, role in self.roles().items() if role == "master"]

    def healthy_state(self) -> bool:
        """Every running node says cluster_state:ok (all slots served). Raises OSError when one is down."""
        for port in self.processes:
            with Redis(port=port, socket_timeout=2, decode_responses=True) as node:
                state = node.execute_command("CLUSTER INFO")  # parsed into a dict by redis-py
                if state.get("cluster_state") != "ok":
                    return False
        return True

    def healthy(self) -> bool:
        """Every running node says cluster_state:ok and every primary has its replicas online."""
        try:
            if not self.healthy_state():
                return False
            for port in self.processes:
                with Redis(port=port, socket_timeout=2, decode_responses=True) as node:
                    info = node.info("replication")
                    online = [
                        v
                        for k, v in info.items()
                        if k[5:].isdigit() and k.startswith("slave") and v.get("state") == "online"
                    ]
                    if info["role"] == "master" and len(online) < self.replicas:
                        return False
        except OSError:
            return False
        return True

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.healthy():
            if time.monotonic() > deadline:
                raise RuntimeError("the local cluster did not become healthy")
            time.sleep(0.1)


def _wait_for_ping(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"cluster node on port {port} did not start")
