"""The bench's processes: started (on a CPU when pinned) and stopped, metered (CPU seconds, RSS), profiled."""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from redis.asyncio import Redis

from gateway.core.local_servers import free_port, server_binary, server_command
from gateway.core.redis import init_epoch
from loadtest.pinning import on_cpu

PUSHGW = [sys.executable, "-c", "from gateway.cli import main; main()"]


def rss_mib(pid: int) -> float:
    """Resident set size of a process in MiB (Linux /proc), nan where it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc), nan where it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuUse:
    """CPU seconds spent inside a `with` block by named server processes and by the load generator: the
    children of this process that finished and were waited for in the block (wrk, or the Python generator),
    counted under `children`. `per_event_us` divides them by the events."""

    def __init__(self, pids: dict[str, int], children: str = "loadgen") -> None:
        self._pids = pids
        self._children = children
        self._spent: dict[str, float] = {}

    def __enter__(self) -> CpuUse:
        self._spent = {name: -cpu_seconds(pid) for name, pid in self._pids.items()}
        self._spent[self._children] = -_children_cpu_s()
        return self

    def __exit__(self, *_: object) -> None:
        for name, pid in self._pids.items():
            self._spent[name] += cpu_seconds(pid)
        self._spent[self._children] += _children_cpu_s()

    def per_event_us(self, events: float) -> dict[str, float]:
        spent = {name: s for name, s in self._spent.items() if name != self._children or s > 0}
        return {name: 1e6 * s / events if events else float("nan") for name, s in spent.items()}


@asynccontextmanager
async def server_process(
    args: Sequence[str], env: dict[str, str], ready_url: str, cpu: int | None = None
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A server process (on `cpu` when given), ready once `ready_url` answers; stopped (SIGTERM) on exit."""
    command = on_cpu(cpu, list(args))
    process = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(ready_url) as response:
                        if response.status < 500:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


@asynccontextmanager
async def redis_server(
    directory: Path,
    cpu: int | None = None,
    *,
    binary: str | None = None,
    extra: Sequence[str] = (),
    epoch: bool = True,
) -> AsyncIterator[str]:
    """A private redis-server (`binary`, else server_binary(); on `cpu` when given; `extra` arguments after
    the production ones) with its data epoch initialised unless `epoch` is False; its URL."""
    port = free_port()
    command = on_cpu(cpu, [*server_command(binary or server_binary(), port, directory), *extra])
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = Redis.from_url(url)
        for _ in range(200):
            try:
                await client.ping()
                break
            except Exception:  # not up yet
                await asyncio.sleep(0.05)
        if epoch:  # a new deployment: without its data epoch nothing is accepted
            await init_epoch(client, 1)
        await client.aclose()
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@dataclass(frozen=True)
class Profiles:
    """Where py-spy writes: `raw_dir` collapsed stacks (NAME.txt, for `python -m loadtest.report`),
    `svg_dir` flame graphs (NAME.svg); either may be None."""

    raw_dir: Path | None = None
    svg_dir: Path | None = None

    def outputs(self, name: str) -> list[tuple[str, Path]]:
        """(py-spy format, file) of each profile asked for."""
        wanted = [("raw", self.raw_dir, "txt"), ("flamegraph", self.svg_dir, "svg")]
        return [(fmt, folder / f"{name}.{ext}") for fmt, folder, ext in wanted if folder is not None]


@asynccontextmanager
async def profiled(profiles: Profiles, process: subprocess.Popen[bytes], name: str) -> AsyncIterator[None]:
    """py-spy samples the process (250 Hz, without stopping it) while the block runs, once per output."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    recorders = []
    for fmt, out in profiles.outputs(name):
        out.parent.mkdir(parents=True, exist_ok=True)
        command = [spy, "record", "-f", fmt, "-r", "250", "--nonblocking", "-p", str(process.pid)]
        recorders.append(
            subprocess.Popen([*command, "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    try:
        yield
    finally:
        for recorder in recorders:
            recorder.send_signal(2)  # SIGINT: py-spy writes what it sampled
        for recorder in recorders:
            recorder.wait(timeout=30)
