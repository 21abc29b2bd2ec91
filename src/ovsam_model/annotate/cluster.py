"""Where the tasks of a batch run go: this process, a local Dask cluster, or an existing one.

``dask_client(scheduler, workers)`` connects to the scheduler at ``scheduler`` (``tcp://HOST:PORT``: a cluster
started by hand, by ``dask-jobqueue`` on SLURM/PBS, or one worker per GPU), or starts a ``LocalCluster`` of
``workers`` processes. ``run_tasks`` submits one task per item with ``retries`` and hands each result to a
callback as it arrives (``as_completed``: in whatever order workers finish); a task that still fails after
its retries is reported with its item, never dropped. The ``distributed`` package is imported only here, when
a cluster is asked for (``pip install napari-ovsam[batch]``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

CONNECT_TIMEOUT_S = 10
DEFAULT_RETRIES = 2
MISSING = "Dask is not installed: pip install 'napari-ovsam[batch]' (dask and distributed) to use {what}."


def import_distributed(what: str = "--scheduler or --workers") -> Any:
    """The ``distributed`` module, or a ValueError that says how to install it."""
    try:
        import distributed  # optional heavy dependency: only when a cluster is asked for
    except ImportError:
        raise ValueError(MISSING.format(what=what)) from None
    return distributed


@contextmanager
def dask_client(scheduler: str | None, workers: int | None, *, timeout: float | None = None) -> Iterator[Any]:
    """A ``distributed.Client``: connected to ``scheduler``, or to a new ``LocalCluster`` of ``workers``
    processes with one thread each (closed on exit).

    Raises:
        ValueError: distributed is missing, the address is malformed, or no scheduler answers within
            ``timeout`` seconds (default ``CONNECT_TIMEOUT_S``).
    """
    distributed = import_distributed()
    timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
    cluster = None
    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError, ValueError) as error:
            raise ValueError(
                f"No Dask scheduler answered at {scheduler} within {timeout:g} s ({error}): start one "
                "(dask scheduler, or a dask-jobqueue cluster) and give its address as tcp://HOST:PORT."
            ) from None
    else:
        cluster = distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # any free port: several runs on one machine do not collide
            silence_logs=logging.ERROR,
        )
        client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_tasks(
    function: Callable[..., Any],
    items: Sequence[Any],
    *,
    client: Any | None,
    on_result: Callable[[Any, Any], None],
    on_failure: Callable[[Any, BaseException], None],
    retries: int = DEFAULT_RETRIES,
    **kwargs: Any,
) -> None:
    """Call ``function(item, **kwargs)`` for every item: here, one after the other (``client`` None), or as
    tasks on ``client``'s cluster (retried up to ``retries`` times). Each result goes to
    ``on_result(item, result)`` as it arrives; an item whose task failed to ``on_failure(item, error)``.
    KeyboardInterrupt cancels the tasks still pending and is raised again."""
    if client is None:
        for item in items:
            try:
                result = function(item, **kwargs)
            except Exception as error:  # reported with its item, the run goes on
                on_failure(item, error)
            else:
                on_result(item, result)
        return
    distributed = import_distributed()
    futures = client.map(function, list(items), retries=retries, pure=False, **kwargs)
    item_of = {future.key: item for future, item in zip(futures, items)}
    try:
        for future in distributed.as_completed(futures):
            item = item_of[future.key]
            if future.status == "finished":
                on_result(item, future.result())
            else:
                on_failure(item, future.exception())
            future.release()  # the worker may forget the result now
    except BaseException:
        client.cancel(futures)
        raise


def run_on_cluster(function: Callable[..., Any], *args: Any, client: Any | None, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)``, here or as one task on ``client``'s cluster (its error raised here)."""
    if client is None:
        return function(*args, **kwargs)
    return client.submit(function, *args, pure=False, **kwargs).result()
