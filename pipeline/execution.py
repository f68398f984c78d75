"""One execution layer for the per-case work: local processes (joblib) or a Dask cluster.

Synthesis (one phantom per patient), extraction (one case per patient) and inference call
:func:`map_cases`. It runs ``function(item)`` for every item and yields the results **in input
order**, whichever back-end computed them and in whatever order they finished:

- **local** (the default): joblib processes on this machine, ``jobs`` of them (``-1``: all cores);
- **Dask**: when ``scheduler`` is an address (``tcp://host:8786``), a ``distributed.Client`` or a
  ``LocalCluster``, or when ``scheduler`` is None and ``DASK_SCHEDULER_ADDRESS`` is set. The cases
  go to the cluster's workers through ``client.map``; ``jobs`` is then ignored (the cluster's
  workers and threads decide the parallelism).

Results are identical on both back-ends: the functions are deterministic for their input and
nothing depends on which process runs them. What the Dask back-end adds is failure handling: a
case whose worker dies is re-run by the scheduler on another worker (Dask's
``distributed.scheduler.allowed-failures``, 3: the fourth worker lost raises ``KilledWorker``), and
a case that raises is re-run up to ``retries`` times before its error reaches the caller. A case is
reported once however often it ran: the scheduler keeps one result per task.

Workers import the function by name, so it must be a top-level function of an installed module
(``functools.partial`` of one is fine) and every Dask worker needs ``crlm-prognosis`` installed in
the same version as the client. Each case runs with SimpleITK limited to one thread, as local
joblib workers do (Dask's nanny already sets ``OMP_NUM_THREADS=1`` and friends for its workers).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, TypeVar

from tqdm.auto import tqdm

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
LOCAL = "local"
DEFAULT_RETRIES = 2

Item = TypeVar("Item")
Result = TypeVar("Result")


def resolve_scheduler(cli_value: Any = None) -> Any:
    """The scheduler to use: the command-line value, else ``$DASK_SCHEDULER_ADDRESS``, else None.

    ``"local"`` (or an empty string) forces the local back-end even when the variable is set.
    Returns None for the local back-end, otherwise the address or the client/cluster given.
    """
    value = cli_value if cli_value is not None else os.environ.get(SCHEDULER_ENV)
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", LOCAL)):
        return None
    return value.strip() if isinstance(value, str) else value


def run_single_threaded(function: Callable[[Item], Result], item: Item) -> Result:
    """Run one case with SimpleITK on one thread (parallelism comes from the cases)."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    return function(item)


def map_cases(
    function: Callable[[Item], Result],
    items: Sequence[Item],
    jobs: int = 1,
    scheduler: Any = None,
    progress: bool = True,
    desc: str = "cases",
    unit: str = "case",
    retries: int = DEFAULT_RETRIES,
) -> Iterator[Result]:
    """Yield ``function(item)`` for every item, in the order of ``items``.

    ``scheduler``: None (local, unless ``DASK_SCHEDULER_ADDRESS`` is set), ``"local"``, a Dask
    scheduler address, a ``distributed.Client`` (left open) or a cluster object with an
    ``scheduler_address``. A client opened here is closed when the generator finishes or is
    closed; cases not yet started are then cancelled. ``retries`` applies to the Dask back-end
    only. An exception raised by a case reaches the caller when that case's turn comes.
    """
    if not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a whole number >= 0, got {retries!r}")
    items = list(items)
    target = resolve_scheduler(scheduler)
    bar = tqdm(total=len(items), desc=desc, unit=unit, disable=not progress)
    try:
        if target is None:
            yield from _map_local(function, items, jobs, bar)
        else:
            yield from _map_dask(function, items, target, retries, bar)
    finally:
        bar.close()


def _map_local(function, items, jobs, bar) -> Iterator[Any]:
    from joblib import Parallel, delayed

    tasks = (delayed(run_single_threaded)(function, item) for item in items)
    for result in Parallel(n_jobs=jobs, return_as="generator")(tasks):
        bar.update()
        yield result


def _map_dask(function, items, target, retries, bar) -> Iterator[Any]:
    from distributed import Client, as_completed

    if isinstance(target, Client):
        client, owned = target, False
    else:
        address = target if isinstance(target, str) else getattr(target, "scheduler_address", None)
        if not address:
            raise ValueError(
                f"scheduler must be an address like tcp://host:8786, a distributed.Client or a cluster, got {target!r}"
            )
        client, owned = Client(address, set_as_default=False), True
    futures = []
    try:
        futures = client.map(partial(run_single_threaded, function), items, pure=False, retries=retries)
        position = {future.key: index for index, future in enumerate(futures)}
        done: dict[int, Any] = {}
        next_index = 0
        for future in as_completed(futures, loop=client.loop):
            done[position[future.key]] = future
            bar.update()
            while next_index in done:
                finished = done.pop(next_index)
                result = finished.result()  # re-raises the case's error on the client
                futures[next_index] = None  # let the cluster forget what was delivered
                finished.release()
                next_index += 1
                yield result
    finally:
        pending = [f for f in futures if f is not None and not f.done()]
        if pending:
            client.cancel(pending)
        if owned:
            client.close()
