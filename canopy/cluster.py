"""Where blocks are computed: this process, a local Dask cluster started for the call, or an existing cluster;
and the one place a cluster is connected to (by the library, never by a command)."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlparse

from canopy.errors import DistributedError, RequestError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterSpec:
    """Where blocks are computed: this process (all None), a local Dask cluster of ``workers`` processes,
    or an existing cluster given by its scheduler's address or scheduler file.

    Raises
    ------
    RequestError
        If more than one of ``workers``, ``scheduler`` and ``scheduler_file`` is given, or
        ``threads_per_worker`` without ``workers``.
    """

    workers: int | None = None
    threads_per_worker: int | None = None
    scheduler: str | None = None
    scheduler_file: str | None = None

    def __post_init__(self) -> None:
        given = [name for name in ("workers", "scheduler", "scheduler_file") if getattr(self, name) is not None]
        if len(given) > 1:
            flags = " and ".join("--" + g.replace("_", "-") for g in given)
            raise RequestError(f"{flags} exclude each other; start a local cluster with --workers or name an existing one.")
        if self.workers is not None and self.workers < 1:
            raise RequestError(f"--workers {self.workers} must be at least 1.")
        if self.threads_per_worker is not None and (self.workers is None or self.threads_per_worker < 1):
            raise RequestError("--threads-per-worker needs --workers and must be at least 1; an existing cluster sets its own.")

    @property
    def distributed(self) -> bool:
        """Whether blocks run on Dask rather than in this process."""
        return any(v is not None for v in (self.workers, self.scheduler, self.scheduler_file))


@contextmanager
def connect(cluster: ClusterSpec, on_start: Callable[[str], None] | None = None) -> Iterator:
    """A Dask client for a cluster spec: a local cluster of worker processes started here, or an existing cluster.

    Parameters
    ----------
    cluster
        ``workers`` (and ``threads_per_worker``, default cores / workers) starts a local cluster on
        127.0.0.1 that is closed on exit; ``scheduler`` or ``scheduler_file`` connects to a running one.
    on_start
        Called with the dashboard's address when a local cluster has started.

    Yields
    ------
    distributed.Client

    Raises
    ------
    DistributedError
        If the scheduler cannot be reached.
    """
    import dask
    from distributed import Client, LocalCluster

    if cluster.workers is not None:
        threads = cluster.threads_per_worker or max(1, (os.cpu_count() or 1) // cluster.workers)
        caller = dict(os.environ)
        try:
            with LocalCluster(n_workers=cluster.workers, threads_per_worker=threads, processes=True, host="127.0.0.1",
                              dashboard_address="127.0.0.1:8787") as local, Client(local) as client:
                restore_environment(caller)
                if on_start is not None:
                    on_start(client.dashboard_link)
                log.info("local Dask cluster of %d workers x %d threads, dashboard %s", cluster.workers, threads, client.dashboard_link)
                yield client
        finally:
            restore_environment(caller)
        return
    where = cluster.scheduler or cluster.scheduler_file
    timeout = dask.config.get("distributed.comm.timeouts.connect")
    address = cluster.scheduler or _address_in(cluster.scheduler_file)
    _refuse_if_nothing_listens(address, where)
    security = _security(address, where)
    try:
        client = (Client(cluster.scheduler, timeout=timeout, security=security) if cluster.scheduler
                  else Client(scheduler_file=cluster.scheduler_file, timeout=timeout, security=security))
    except (OSError, TimeoutError, ValueError) as exc:
        if security is not None and "certificate" in str(exc).lower():
            raise DistributedError(
                f"The Dask scheduler at {where} refused canopy's TLS certificate ({exc}); give one signed by the cluster's "
                "CA in Dask's distributed.comm.tls settings."
            ) from None
        raise DistributedError(
            f"Cannot reach the Dask scheduler at {where} ({exc}); start one (`dask scheduler`) or check the address."
        ) from exc
    with client:
        yield client


def _security(address: str | None, where: str):
    """Dask's own TLS settings (``distributed.comm.tls.*``, from its configuration files or ``DASK_*`` variables) for a
    ``tls://`` scheduler; None for another protocol (Dask's defaults apply).

    A TLS scheduler asks every client for a certificate its CA signed; without one, Dask's client waits forever,
    so the call is refused here instead.

    Raises
    ------
    DistributedError
        If the scheduler speaks TLS and Dask's settings give no CA certificate or no client certificate.
    """
    if not (address or "").startswith("tls://"):
        return None
    from distributed.security import Security

    security = Security(require_encryption=True)
    if not (security.tls_ca_file and security.tls_client_cert):
        raise DistributedError(
            f"The Dask scheduler at {where} speaks TLS: set its CA certificate and a client certificate and key in Dask's "
            "settings (distributed.comm.tls.ca-file, .client.cert and .client.key, e.g. DASK_DISTRIBUTED__COMM__TLS__CA_FILE); "
            "see docs/cluster.md."
        )
    return security


def restore_environment(saved: dict[str, str]) -> None:
    """Make ``os.environ`` what it was: a Dask nanny writes its workers' settings into the process that starts it
    (``OMP_NUM_THREADS=1``, ``MALLOC_TRIM_THRESHOLD_``, ...), and every process started afterwards would inherit them."""
    for key in set(os.environ) - set(saved):
        del os.environ[key]
    for key, value in saved.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _address_in(scheduler_file: str | None) -> str | None:
    """The address a scheduler file names, or None if it cannot be read (Dask then waits for it and says why)."""
    try:
        return json.loads(open(scheduler_file).read())["address"] if scheduler_file else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _refuse_if_nothing_listens(address: str | None, where: str) -> None:
    """Fail at once when a scheduler's TCP port refuses connections, instead of retrying for Dask's whole connect timeout.

    Raises
    ------
    DistributedError
        If the connection is refused; other failures (a host that does not answer) are left to Dask.
    """
    parsed = urlparse(address or "")
    if parsed.scheme != "tcp" or not parsed.hostname or parsed.port is None:
        return
    try:
        socket.create_connection((parsed.hostname, parsed.port), timeout=5).close()
    except ConnectionRefusedError:
        raise DistributedError(
            f"Cannot reach the Dask scheduler at {where}: nothing listens at {address}; start one (`dask scheduler`) "
            "or check the address."
        ) from None
    except OSError:
        return


@contextmanager
def client_for(client, cluster: ClusterSpec | None, on_start: Callable[[str], None] | None = None) -> Iterator:
    """The Dask client a call computes on: ``client`` when given, else one connected for the call (:func:`connect`) when
    ``cluster`` names a cluster, else None (this process).

    Raises
    ------
    DistributedError
        If the scheduler cannot be reached.
    """
    if client is not None or cluster is None or not cluster.distributed:
        yield client
        return
    with connect(cluster, on_start) as connected:
        yield connected
