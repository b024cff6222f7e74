"""`snapshots-operator`: run the SnapshotSource operator (kopf), serve /metrics and /healthz.

    snapshots-operator --namespace NS [--namespace NS2 ...]   # namespaced (a Role per NS)
    snapshots-operator --all-namespaces                      # cluster-wide (a ClusterRole)

Standalone mode always: one replica, no peering objects. Every option has an environment
variable (SNAPSHOTS_OPERATOR_*), which the Helm chart and manifests/ use.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence

import kopf
from aiohttp import web

from snapshots.errors import ExitCode
from snapshots_operator import GROUP, __version__, handlers, resources
from snapshots_operator.metrics import OperatorMetrics

log = logging.getLogger("snapshots_operator")

DEFAULT_METRICS_PORT = 9841


def _env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The operator's options (docs/gen_cli_reference.py renders its help into docs/cli.md)."""
    parser = argparse.ArgumentParser(
        prog="snapshots-operator",
        description="Run the SnapshotSource operator: a CronJob per source running "
                    "`snapshots sync --once`, status and events from every run.")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", dest="namespaces", metavar="NS",
                       help="watch this namespace (repeatable; env SNAPSHOTS_OPERATOR_NAMESPACES, "
                            "comma-separated)")
    scope.add_argument("-A", "--all-namespaces", action="store_true",
                       default=os.environ.get("SNAPSHOTS_OPERATOR_ALL_NAMESPACES", "")
                       .lower() in ("1", "true", "yes"),
                       help="watch every namespace (env SNAPSHOTS_OPERATOR_ALL_NAMESPACES=true)")
    parser.add_argument("--metrics-port", type=int,
                        default=int(os.environ.get("SNAPSHOTS_OPERATOR_METRICS_PORT",
                                                   DEFAULT_METRICS_PORT)),
                        help="port for /metrics and /healthz; 0 disables "
                             f"(default {DEFAULT_METRICS_PORT})")
    parser.add_argument("--metrics-host",
                        default=os.environ.get("SNAPSHOTS_OPERATOR_METRICS_HOST", "0.0.0.0"),
                        help="address to serve them on (default 0.0.0.0)")
    parser.add_argument("--job-image",
                        default=os.environ.get("SNAPSHOTS_OPERATOR_JOB_IMAGE",
                                               resources.OperatorConfig.image),
                        help="image for the sync Jobs unless a source sets spec.image "
                             "(env SNAPSHOTS_OPERATOR_JOB_IMAGE)")
    parser.add_argument("--job-image-pull-policy",
                        default=os.environ.get("SNAPSHOTS_OPERATOR_JOB_IMAGE_PULL_POLICY",
                                               "IfNotPresent"),
                        choices=["Always", "IfNotPresent", "Never"])
    parser.add_argument("--job-ttl", type=int,
                        default=int(os.environ.get("SNAPSHOTS_OPERATOR_JOB_TTL", "86400")),
                        help="seconds a finished one-off Job is kept (default 86400)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        default=bool(os.environ.get("SNAPSHOTS_OPERATOR_VERBOSE")),
                        help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.all_namespaces and not args.namespaces:
        args.namespaces = _env_list("SNAPSHOTS_OPERATOR_NAMESPACES")
    if not args.all_namespaces and not args.namespaces:
        parser.error("give --namespace NS (repeatable) or --all-namespaces")
    return args


def build_settings(clusterwide: bool) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # kopf's bookkeeping lives in annotations (not in status.kopf, which the CRD's schema
    # would prune) under a prefix of its own: kopf ignores every annotation under the prefix
    # it owns, and snapshots.dev/sync-now must stay visible to it.
    prefix = f"kopf.{GROUP}"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=prefix, key="last-handled-configuration")
    # Our own events (kopf.event) always go out; kopf's per-handler chatter only on warnings.
    settings.posting.level = logging.WARNING
    # Namespaced mode needs no cluster-wide permission at all: no namespace observation, no
    # CRD watch (the CRD must exist at start-up; the chart installs it first). Cluster-wide
    # mode watches CRDs, so a CRD installed after the operator is picked up.
    settings.scanning.disabled = not clusterwide
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.execution.max_workers = 8
    return settings


class HttpServer:
    """/metrics (Prometheus) and /healthz (liveness) on one port, in the operator's loop."""

    def __init__(self, metrics: OperatorMetrics, healthy: Callable[[], bool],
                 host: str, port: int) -> None:
        self.metrics = metrics
        self.healthy = healthy
        self.host, self.port = host, port
        self.runner: web.AppRunner | None = None

    async def start(self) -> HttpServer:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []  # the port when 0 was asked
        if sockets:
            self.port = sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = await asyncio.get_running_loop().run_in_executor(None, self.metrics.render)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})

    async def _healthz(self, _request: web.Request) -> web.Response:
        # Answering at all proves the event loop turns; healthy() says kopf still runs.
        if self.healthy():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="operator stopped\n")


async def run_operator(
    *,
    context: handlers.Context,
    clusterwide: bool,
    namespaces: Sequence[str] = (),
    metrics_host: str = "0.0.0.0",
    metrics_port: int = DEFAULT_METRICS_PORT,
    stop_flag: asyncio.Event | None = None,
) -> None:
    """The operator until ``stop_flag`` (or a signal, under kopf's own handling)."""
    registry = handlers.register()
    settings = build_settings(clusterwide)
    memo = kopf.Memo(snapshots=context)
    task = asyncio.create_task(kopf.operator(
        registry=registry, settings=settings, standalone=True, clusterwide=clusterwide,
        namespaces=list(namespaces), memo=memo, stop_flag=stop_flag))
    server = None
    if metrics_port:
        server = await HttpServer(context.metrics, lambda: not task.done(),
                                  metrics_host, metrics_port).start()
        log.info("serving /metrics and /healthz on %s:%d", metrics_host, server.port)
    try:
        await task
    finally:
        if server is not None:
            await server.stop()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from snapshots_operator.kube import Kube, NoCredentials, load_api_client

    config = resources.OperatorConfig(image=args.job_image,
                                      image_pull_policy=args.job_image_pull_policy,
                                      job_ttl_seconds=args.job_ttl)
    try:
        api_client = load_api_client()
    except NoCredentials as exc:
        print(f"snapshots-operator: {exc}", file=sys.stderr)
        print("hint: run it in a pod with a service account, or point KUBECONFIG at a "
              "kubeconfig whose current context reaches the cluster", file=sys.stderr)
        sys.exit(int(ExitCode.FAILED))
    context = handlers.Context(kube=Kube(api_client), config=config)
    log.info("snapshots-operator %s watching %s; Jobs run %s", __version__,
             "all namespaces" if args.all_namespaces else ", ".join(args.namespaces),
             config.image)

    async def _main() -> None:
        # SIGTERM and SIGINT are kopf's own to handle (it installs its handlers over any
        # set before it). A stop flag of ours would never be set, and kopf would wait five
        # seconds at every exit for the task that waits on it.
        await run_operator(context=context, clusterwide=args.all_namespaces,
                           namespaces=args.namespaces or (), metrics_host=args.metrics_host,
                           metrics_port=args.metrics_port)

    try:
        asyncio.run(_main())
    except KeyboardInterrupt:
        sys.exit(int(ExitCode.INTERRUPTED))
