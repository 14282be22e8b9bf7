"""The `pushgw` command: gateway, worker, sim, dev, dlq, reconcile, epoch, the operator lookups (events,
customers, bindings) and bench. Every setting is also a flag."""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from gateway.core.logs import configure
from gateway.core.settings import ConfigError, Settings, parse_setting, setting_specs, without_password

log = logging.getLogger("pushgw")


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (each also a PUSHGW_* variable)")
    for spec in setting_specs():
        group.add_argument(
            flag_name(spec.name),
            dest=spec.name,
            metavar=spec.metadata["env"],
            help=f"{spec.metadata['help']} [{spec.metadata['env']}]",
        )


def settings_from(args: argparse.Namespace, **extra: Any) -> Settings:
    """Settings from the environment, with the flags given on the command line winning; `extra` (already
    parsed, None: not given) are a command's own flags for a setting, which win over its settings flag
    (`pushgw worker --concurrency` over `--worker-concurrency`)."""
    overrides = {
        spec.name: parse_setting(spec.name, raw)
        for spec in setting_specs()
        if (raw := getattr(args, spec.name, None)) is not None
    }
    overrides.update({name: value for name, value in extra.items() if value is not None})
    return Settings.from_env(os.environ, **overrides)


def command_settings(args: argparse.Namespace) -> Settings:
    """The settings a parsed command runs with (its settings flags, and its own flags for a setting)."""
    if args.command == "worker":
        return settings_from(args, worker_concurrency=args.concurrency)
    return settings_from(args)


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # not on this platform: the default loop works, only slower
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _run_gateway(settings: Settings, host: str, port: int, metrics_dir: str | None) -> None:
    """One gateway process; `metrics_dir` is set when several share the port (SO_REUSEPORT)."""
    from gateway.server import serve_gateway

    configure(settings.log_level)
    _aggregate_metrics(metrics_dir)
    _install_uvloop()
    asyncio.run(serve_gateway(settings, host, port, reuse_port=metrics_dir is not None))


def _run_worker(settings: Settings, metrics_dir: str | None) -> None:
    """One worker process; `metrics_dir` is set when several share the metrics port (SO_REUSEPORT)."""
    from workers.worker import serve_worker

    configure(settings.log_level)
    _aggregate_metrics(metrics_dir)
    _install_uvloop()
    asyncio.run(serve_worker(settings, shared_metrics_port=metrics_dir is not None))


def _aggregate_metrics(metrics_dir: str | None) -> None:
    if metrics_dir is not None:
        from gateway.core.metrics_server import aggregate_processes

        aggregate_processes(metrics_dir)


@contextmanager
def _multiprocess_metrics() -> Iterator[str]:
    """A fresh directory for prometheus_client's multiprocess mode, in PROMETHEUS_MULTIPROC_DIR while the
    children start (spawned children import prometheus_client afresh and read it then); removed at the end."""
    directory = tempfile.mkdtemp(prefix="pushgw-metrics-")
    previous = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        else:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = previous
        shutil.rmtree(directory, ignore_errors=True)


def _in_processes(
    count: int,
    target: Callable[..., None],
    *args: Any,
    forwarded: Sequence[int] = (signal.SIGTERM, signal.SIGINT),
) -> None:
    """Run `target(*args, metrics_dir)` in `count` processes (or in this one, with None, when count is 1);
    forward the `forwarded` signals. The processes' metrics add up through `metrics_dir` (see
    metrics_server.py)."""
    if count == 1:
        target(*args, None)
        return
    with _multiprocess_metrics() as metrics_dir:
        context = multiprocessing.get_context("spawn")
        children = [
            context.Process(target=target, args=(*args, metrics_dir), daemon=False) for _ in range(count)
        ]
        for child in children:
            child.start()

        def forward(signum: int, frame: object) -> None:
            for child in children:
                if child.pid is not None and child.is_alive():
                    os.kill(child.pid, signum)

        for signum in forwarded:
            signal.signal(signum, forward)
        for child in children:
            child.join()
            if child.pid is not None:
                _forget_process(metrics_dir, child.pid)


def _forget_process(metrics_dir: str, pid: int) -> None:
    """Drop an exited process's live gauges (in-flight, circuit, ...): its counters stay in the sums."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]


def cmd_gateway(args: argparse.Namespace) -> None:
    settings = command_settings(args)
    drains = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)  # SIGUSR1: drain (gateway/server.py)
    _in_processes(args.processes, _run_gateway, settings, args.host, args.port, forwarded=drains)


def cmd_worker(args: argparse.Namespace) -> None:
    settings = command_settings(args)
    _in_processes(args.processes, _run_worker, settings)


def cmd_sim(args: argparse.Namespace) -> None:
    from wechatsim.cli import config_from_env, serve

    configure(os.environ.get("PUSHGW_LOG_LEVEL", "INFO"))
    _install_uvloop()
    try:
        asyncio.run(serve(args.host, args.port, config_from_env(os.environ)))
    except KeyboardInterrupt:
        pass


def cmd_dev(args: argparse.Namespace) -> None:
    from gateway.dev import run_dev

    configure(os.environ.get("PUSHGW_LOG_LEVEL", "INFO"))
    _install_uvloop()
    try:
        asyncio.run(run_dev(args.host, args.port, args.sim_port))
    except KeyboardInterrupt:
        pass


def cmd_dlq(args: argparse.Namespace) -> None:
    from workers.dlq_cli import run_dlq

    configure(os.environ.get("PUSHGW_LOG_LEVEL", "WARNING"))
    asyncio.run(run_dlq(command_settings(args), args))


def cmd_reconcile(args: argparse.Namespace) -> None:
    from gateway.ops.reconcile import run_reconcile

    configure(os.environ.get("PUSHGW_LOG_LEVEL", "WARNING"))
    sys.exit(asyncio.run(run_reconcile(command_settings(args), args)))


def cmd_epoch(args: argparse.Namespace) -> None:
    from gateway.ops.epoch import run_epoch

    configure(os.environ.get("PUSHGW_LOG_LEVEL", "WARNING"))
    sys.exit(asyncio.run(run_epoch(command_settings(args), args)))


def cmd_archive(args: argparse.Namespace) -> None:
    from gateway.ops.archive import run_archive

    configure(os.environ.get("PUSHGW_LOG_LEVEL", "WARNING"))
    sys.exit(asyncio.run(run_archive(command_settings(args), args)))


def cmd_lookup(args: argparse.Namespace) -> None:
    from gateway.ops.lookups import run_lookup

    configure(os.environ.get("PUSHGW_LOG_LEVEL", "WARNING"))
    sys.exit(asyncio.run(run_lookup(command_settings(args), args)))


def _measure_verify_us(requests: int = 20_000) -> float:
    """CPU of the gateway's signature check (RFC 9421 verification with its Content-Digest) per signed
    single-event request, measured in this process on the code the gateway runs."""
    import time

    import orjson
    from multidict import CIMultiDict, CIMultiDictProxy

    from gateway.auth import Scope, Target, Verifier
    from gateway.core import signing
    from loadtest.payloads import EventFactory

    body = orjson.dumps(EventFactory(1000, seed=1, prefix="VERIFY").event())
    headers = signing.signed_headers("bench", "bench-secret", "POST", "/v1/events", body)
    headers["Content-Type"] = "application/json"
    target = Target("POST", "/v1/events", "http", "127.0.0.1", CIMultiDictProxy(CIMultiDict(headers)))
    verifier = Verifier({"bench": "bench-secret"}, {}, 300, open_ingress=False)
    now_s = time.time()
    started = time.process_time()
    for _ in range(requests):
        verifier.verify(target, body, Scope.EVENTS, now_s)
    return (time.process_time() - started) / requests * 1e6


def cmd_bench(args: argparse.Namespace) -> None:
    from loadtest.bench import run_bench

    if args.scaling:
        from loadtest.scaling import run_scaling

        configure("WARNING")
        asyncio.run(run_scaling(seconds=2.5 if args.quick else 5.0, json_path=args.json))
        return
    from loadtest import wrk

    if wrk.binary() is None:  # it drives H and ingress: without it there is no fair baseline
        sys.exit(wrk.MISSING)
    configure("WARNING")
    _install_uvloop()
    asyncio.run(
        run_bench(
            _measure_verify_us,
            quick=args.quick,
            json_path=args.json,
            soak_s=args.soak,
            profile_dir=args.profile,
            flamegraph_dir=args.flamegraphs,
        )
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pushgw", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    gateway = commands.add_parser("gateway", help="run the ingress API")
    gateway.add_argument("--host", default="127.0.0.1")
    gateway.add_argument("--port", type=int, default=8080)
    gateway.add_argument("--processes", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)")
    _add_setting_flags(gateway)
    gateway.set_defaults(func=cmd_gateway)

    worker = commands.add_parser("worker", help="run delivery workers")
    worker.add_argument("--concurrency", type=int, default=None, help="deliveries in flight per process")
    worker.add_argument("--processes", type=int, default=1)
    _add_setting_flags(worker)
    worker.set_defaults(func=cmd_worker)

    sim = commands.add_parser("sim", help="run the WeChat API simulator")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8090)
    sim.set_defaults(func=cmd_sim)

    dev = commands.add_parser("dev", help="Redis, simulator, gateway and a worker in one command")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8080)
    dev.add_argument("--sim-port", type=int, default=8090)
    dev.set_defaults(func=cmd_dev)

    dlq = commands.add_parser("dlq", help="list or replay dead letters")
    dlq.add_argument("action", choices=["list", "replay"])
    dlq.add_argument("--event-id", default=None)
    dlq.add_argument("--since", default=None, help="ISO-8601 time with a zone, or unix seconds")
    dlq.add_argument("--limit", type=int, default=1000)
    dlq.add_argument(
        "--notices", action="store_true", help="status notices to core banking instead of WeChat deliveries"
    )
    _add_setting_flags(dlq)
    dlq.set_defaults(func=cmd_dlq)

    reconcile = commands.add_parser("reconcile", help="prove accepted = final + in flight over a window")
    reconcile.add_argument(
        "--since", default=None, help="ISO-8601 time with a zone, or unix seconds (default: 24 h ago)"
    )
    reconcile.add_argument(
        "--until", default=None, help="ISO-8601 time with a zone, or unix seconds (default: now)"
    )
    reconcile.add_argument(
        "--previous",
        default=None,
        metavar="FILE",
        help="an earlier output of this command: its data epoch and stream counters must still hold",
    )
    _add_setting_flags(reconcile)
    reconcile.set_defaults(func=cmd_reconcile)

    epoch = commands.add_parser(
        "epoch", help="a new deployment's data epoch (init), show it, or acknowledge a fresh start (reset)"
    )
    epoch.add_argument("action", choices=["init", "show", "reset"])
    epoch.add_argument("--yes", action="store_true", help="reset: queued events are known to be lost")
    _add_setting_flags(epoch)
    epoch.set_defaults(func=cmd_epoch)

    archive = commands.add_parser(
        "archive",
        help="the PostgreSQL archive: apply its schema (migrate, safe to run again), drop months past the"
        " retention (prune), or show pending migrations and partitions (status)",
    )
    archive.add_argument("action", choices=["migrate", "prune", "status"])
    _add_setting_flags(archive)
    archive.set_defaults(func=cmd_archive)

    _add_lookups(commands)

    bench = commands.add_parser("bench", help="measure ingress and delivery throughput")
    bench.add_argument("--quick", action="store_true", help="a short run")
    bench.add_argument(
        "--scaling",
        action="store_true",
        help="only events/s at 1 and 2 gateway/worker processes, on one Redis and on a local cluster",
    )
    bench.add_argument("--json", default=None, help="also write the results to this JSON file")
    bench.add_argument(
        "--soak",
        nargs="?",
        type=float,
        const=600.0,
        default=0.0,
        metavar="SECONDS",
        help="also run the pipeline at 70%% load this long (default 600 s) and report RSS at start and end",
    )
    bench.add_argument(
        "--profile",
        default=None,
        metavar="DIR",
        help="py-spy the gateway and worker into DIR as collapsed stacks (NAME.txt; python -m loadtest.report"
        " summarises them)",
    )
    bench.add_argument(
        "--flamegraphs",
        default=None,
        metavar="DIR",
        help="py-spy flame graphs of the gateway and worker into DIR (gateway-single.svg, gateway-batch.svg,"
        " worker.svg)",
    )
    bench.set_defaults(func=cmd_bench)
    return parser


def _add_lookups(commands: Any) -> None:
    """The operator lookups, signed for the operator against PUSHGW_GATEWAY_URL (gateway/ops/lookups.py)."""
    events = commands.add_parser("events", help="an event's lifecycle, asked of the gateway (signed)")
    events.add_argument("action", choices=["show"])
    events.add_argument("event_id", metavar="EVENT_ID")
    _add_setting_flags(events)
    events.set_defaults(func=cmd_lookup)

    customers = commands.add_parser(
        "customers", help="a customer's binding (masked), preferences and timeline, asked of the gateway"
    )
    customers.add_argument("action", choices=["show"])
    customers.add_argument("customer_id", metavar="CUSTOMER_ID")
    customers.add_argument(
        "--since", default=None, help="timeline from this ISO-8601 time with a zone, or unix seconds"
    )
    customers.add_argument("--limit", type=int, default=50, help="timeline entries (1-200)")
    _add_setting_flags(customers)
    customers.set_defaults(func=cmd_lookup)

    bindings = commands.add_parser(
        "bindings", help="bind customers in bulk from a JSON-lines file (POST /v1/bindings/batch)"
    )
    bindings.add_argument("action", choices=["import"])
    bindings.add_argument(
        "file", metavar="FILE", help='JSON lines {"customer_id", "openid", "appid"?}; - stdin'
    )
    _add_setting_flags(bindings)
    bindings.set_defaults(func=cmd_lookup)


def main(argv: Sequence[str] | None = None) -> None:
    from redis.exceptions import RedisError

    from gateway.core.clock import BadInstant
    from gateway.core.operator import NoPushgwData

    args = build_parser().parse_args(argv)
    if getattr(args, "processes", 1) < 1:
        sys.exit("pushgw: --processes must be at least 1")
    try:
        args.func(args)
    except ConfigError as exc:
        sys.exit(f"pushgw: configuration error: {exc}")
    except BadInstant as exc:
        sys.stderr.write(f"pushgw {args.command}: {exc}\n")
        sys.exit(2)
    except NoPushgwData as exc:
        sys.stderr.write(f"pushgw {args.command}: refused: {exc}\n")
        sys.exit(exc.exit_status)
    except (RedisError, OSError) as exc:  # an operator command's Redis: say which, never a traceback
        if args.command in {"gateway", "worker", "sim", "dev", "bench"}:
            raise
        url = without_password(getattr(args, "redis_url", None) or os.environ.get("PUSHGW_REDIS_URL", ""))
        shown = url or "redis://127.0.0.1:6379/0 (the default)"
        sys.stderr.write(f"pushgw {args.command}: cannot use Redis at {shown}: {type(exc).__name__}\n")
        sys.exit(2)


def settings_table() -> str:
    """The README's settings table, made from the same specs as the flags (a test keeps them equal)."""
    lines = ["| Variable | Flag | Default | Meaning |", "|---|---|---|---|"]
    for spec in setting_specs():
        default = spec.default_factory() if callable(spec.default_factory) else spec.default
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        shown = "" if default in ("", {}) else shown
        if spec.metadata["secret"] and shown:
            shown = "***"
        lines.append(
            f"| `{spec.metadata['env']}` | `{flag_name(spec.name)}` | {shown and f'`{shown}`'} | "
            f"{spec.metadata['help']} |"
        )
    return "\n".join(lines)
