"""``DaskRunner``: each node of a Kedro pipeline as one task on a Dask cluster.

``kedro run --runner lors_distill.runners.DaskRunner`` (which cluster:
:mod:`lors_distill.runners.cluster`). The driver (the ``kedro run`` process) submits a node
when the nodes it depends on have finished; a worker loads the node's inputs from the catalog,
runs it and saves its outputs to the catalog. Data crosses workers only through storage that
every worker reaches (a shared folder, or ``s3://`` and the like: README "Running on a
cluster"), so a pipeline that would hand a dataset from one task to another in memory is
refused before anything runs.

What runs where:

* on the driver: the session and its hooks, the one MLflow run, the node hooks
  (``before_node_run`` / ``after_node_run`` / ``on_node_error``) with the node's parameter
  inputs only (its data inputs stay on storage; ``after_node_run`` gets no outputs), and the
  MLflow logging of the outputs that are tracked (datasets with a ``log_saved`` method);
* on a worker: loading the inputs, the node, saving the outputs; torch uses as many threads as
  the worker has (``--nthreads``). Its ``lors_distill`` and ``kedro`` log records reach the
  driver's console prefixed with the node's name and the worker's address (so does each
  expert's progress: one line per epoch).

Nodes tagged ``gpu`` ask for ``resources={"GPU": 1}`` when some worker offers a ``GPU``
resource (``dask worker --resources GPU=1``, one worker per GPU); on a cluster without GPUs
they run on any worker.

A worker that dies in the middle of a node (killed, out of memory, preempted) costs only that
task: Dask runs it again on another worker (up to ``distributed.scheduler.allowed-failures``
times), and since every dataset publishes a file whole, nobody reads what the dead worker half
wrote.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

try:
    import distributed
except ImportError as _error:  # pragma: no cover - the dev and cluster extras install it
    raise ImportError(
        "lors_distill.runners.DaskRunner needs dask and distributed: "
        'pip install -e ".[cluster]" in the project folder'
    ) from _error

import torch
from kedro.framework.hooks.manager import _NullPluginManager
from kedro.io import DataCatalog
from kedro.pipeline import Pipeline
from kedro.pipeline.node import Node
from kedro.runner import AbstractRunner
from kedro.runner.task import Task

from lors_distill.core.device import keep_freed_memory
from lors_distill.pipelines import GPU
from lors_distill.runners.cluster import (
    ClusterConfig,
    ClusterError,
    local_worker_specs,
    parse_cluster_config,
    scheduler_address,
)

GPU_TAG = GPU  # nodes tagged so ask for one GPU
# the loggers whose records a worker sends to the driver (at the driver's levels)
FORWARDED_LOGGERS = ("lors_distill", "kedro")
# The workers of a cluster the run starts itself write to the driver's console: their records
# reach it once (forwarded, with the node's name), and their progress bars, which would
# interleave, are off (the driver shows each epoch as a line instead).
SHARES_CONSOLE = "LORS_DASK_SHARES_CONSOLE"
CONSOLE_ENV = {SHARES_CONSOLE: "1", "TQDM_DISABLE": "1"}

logger = logging.getLogger(__name__)


class DaskRunner(AbstractRunner):
    """Run each node as a task on a Dask cluster.

    Args:
        address: the scheduler (``tcp://host:8786``); before ``DASK_SCHEDULER_ADDRESS`` and
            ``conf/<env>/dask.yml``. From the CLI: ``--runner-params address=tcp://...``.
        is_async: load and save each node's datasets with threads (Kedro's ``--async``).
        connect_timeout: seconds to reach the scheduler (default: ``dask.yml``'s, 10).
        workers_timeout: seconds to wait for a first worker (default: ``dask.yml``'s, 120).
    """

    def __init__(
        self,
        address: str | None = None,
        is_async: bool = False,
        connect_timeout: float | None = None,
        workers_timeout: float | None = None,
    ) -> None:
        super().__init__(is_async=is_async)
        self._address = address
        self._timeouts = {"connect_timeout": connect_timeout, "workers_timeout": workers_timeout}
        self._config = ClusterConfig()

    def run(
        self,
        pipeline: Pipeline,
        catalog: Any,
        hook_manager: Any = None,
        run_id: str | None = None,
        only_missing_outputs: bool = False,
    ) -> dict[str, Any]:
        given = {k: v for k, v in self._timeouts.items() if v is not None}
        session = _session_cluster_config(hook_manager).model_dump(exclude_unset=True)
        self._config = parse_cluster_config({**session, **given}, "--runner-params")
        return super().run(pipeline, catalog, hook_manager, run_id, only_missing_outputs)

    def _get_executor(self, max_workers: int) -> None:  # tasks go to Dask, not an executor
        return None

    def _run(
        self,
        pipeline: Pipeline,
        catalog: Any,
        hook_manager: Any = None,
        run_id: str | None = None,
    ) -> None:
        refuse_in_memory_handoffs(pipeline, catalog)  # before a cluster is reached or started
        hooks = hook_manager or _NullPluginManager()
        address, source = scheduler_address(self._address, self._config)
        with connect(address, source, self._config) as client:
            _Run(self, pipeline, catalog, hooks, run_id, client).until_done()


class _Run:
    """One pipeline's tasks on one client: submitted as their dependencies finish."""

    def __init__(self, runner: DaskRunner, pipeline, catalog, hooks, run_id, client) -> None:
        self.runner, self.pipeline, self.catalog = runner, pipeline, catalog
        self.hooks, self.run_id, self.client = hooks, run_id, client
        self.topic = f"lors-distill-logs-{uuid.uuid4().hex}"
        self.levels = {
            name: logging.getLogger(name).getEffectiveLevel() for name in FORWARDED_LOGGERS
        }
        self.resources = {"GPU": 1} if _offers_gpus(client) else None
        self.params: dict[Node, dict[str, Any]] = {}

    def until_done(self) -> None:
        logger = self.runner._logger
        dependencies = self.pipeline.node_dependencies
        todo, done = set(self.pipeline.nodes), set()
        running: dict[distributed.Future, Node] = {}
        self.client.subscribe_topic(self.topic, _emit_on_driver)
        try:
            while todo or running:
                ready = sorted(n for n in todo if dependencies[n] <= done)
                todo -= set(ready)
                running.update((self.submit(node), node) for node in ready)
                if not running:
                    raise RuntimeError(f"nodes that can never run: {sorted(n.name for n in todo)}")
                finished = distributed.wait(list(running), return_when="FIRST_COMPLETED").done
                for future in sorted(finished, key=lambda f: running[f].name):
                    node = running.pop(future)
                    self.collect(future, node)
                    done.add(node)
                    logger.info("Completed node: %s", node.name)
                    logger.info("Completed %d out of %d tasks", len(done), len(self.pipeline.nodes))
        except BaseException:
            self.client.cancel(list(running))
            self.runner._suggest_resume_scenario(self.pipeline, done, self.catalog)
            raise
        finally:
            self.client.unsubscribe_topic(self.topic)

    def submit(self, node: Node) -> distributed.Future:
        inputs = {
            name: self.catalog.load(name)
            for name in node.inputs
            if name.startswith("params:") or name == "parameters"
        }
        self.params[node] = inputs
        self.hooks.hook.before_node_run(
            node=node,
            catalog=self.catalog,
            inputs=inputs,
            is_async=self.runner._is_async,
            run_id=self.run_id,
        )
        return self.client.submit(
            run_node_on_worker,
            node,
            node_catalog(self.catalog, node),
            self.runner._is_async,
            self.run_id,
            self.topic,
            self.levels,
            # one task prefix for every node ("kedro-node"): Dask then queues them as one
            # group and learns their durations, so a free worker takes the next ready node
            # (with a prefix per node it assigns them all at once, and a worker can idle while
            # another holds two)
            key=f"kedro-node-{uuid.uuid4().hex[:8]}-{node.name}",
            pure=False,
            resources=self.resources if GPU_TAG in node.tags else None,
        )

    def collect(self, future: distributed.Future, node: Node) -> None:
        inputs = self.params.pop(node)
        try:
            future.result()
        except Exception as error:
            self.hooks.hook.on_node_error(
                error=error,
                node=node,
                catalog=self.catalog,
                inputs=inputs,
                is_async=self.runner._is_async,
                run_id=self.run_id,
            )
            error.add_note(f"in node {node.name} (Dask task {future.key})")
            raise
        for name in node.outputs:  # the one MLflow run lives here, on the driver
            log_saved = getattr(self.catalog.get(name), "log_saved", None)
            if log_saved is not None:
                log_saved()
        self.hooks.hook.after_node_run(
            node=node,
            catalog=self.catalog,
            inputs=inputs,
            outputs={},
            is_async=self.runner._is_async,
            run_id=self.run_id,
        )


def refuse_in_memory_handoffs(pipeline: Pipeline, catalog: Any) -> None:
    """Raise when a node's output would live only in a worker's memory (a ``MemoryDataset`` or
    any other ephemeral dataset): another task could not read it, and the driver would never
    see it. Parameters and other free inputs travel with the task and are fine."""
    ephemeral = sorted(
        name
        for name in pipeline.all_outputs()
        if getattr(catalog.get(name, fallback_to_runtime_pattern=True), "_EPHEMERAL", False)
    )
    if ephemeral:
        kinds = ", ".join(f"'{name}' ({type(catalog.get(name)).__name__})" for name in ephemeral)
        raise ClusterError(
            f"DaskRunner: {kinds} would pass from one task to the next in memory, which "
            "workers on other machines cannot read. Declare each in the catalog "
            "(conf/<env>/catalog.yml) on storage every worker reaches, or run with "
            "SequentialRunner or ParallelRunner."
        )


def node_catalog(catalog: Any, node: Node) -> DataCatalog:
    """The datasets one node reads and writes (parameters with their values): what its task
    carries to a worker, instead of the whole catalog."""
    names = [*node.inputs, *node.outputs]
    return DataCatalog(datasets={name: catalog.get(name) for name in names})


def run_node_on_worker(
    node: Node,
    catalog: DataCatalog,
    is_async: bool,
    run_id: str | None,
    topic: str,
    levels: dict[str, int],
) -> str:
    """The task: ``node`` on this worker, with torch using the worker's threads and the log
    records of this thread sent to the driver. Returns the worker's address."""
    worker = distributed.get_worker()
    torch.set_num_threads(worker.state.nthreads)
    keep_freed_memory()
    with _forwarded_logs(worker, topic, f"{node.name} on {worker.address}", levels):
        Task(
            node=node,
            catalog=catalog,
            is_async=is_async,
            hook_manager=_NullPluginManager(),  # node hooks ran on the driver
            run_id=run_id,
        ).execute()
    return worker.address


class _ToDriver(logging.Handler):
    """Sends the records of one thread (one task) to the driver as Dask events."""

    def __init__(self, worker: Any, topic: str, prefix: str) -> None:
        super().__init__()
        self._worker, self._topic, self._prefix = worker, topic, prefix
        self._thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self._thread:
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            event = {
                key: getattr(record, key)
                for key in ("name", "levelno", "levelname", "pathname", "lineno", "funcName")
            }
            # (not in square brackets: Kedro's rich console would read them as markup)
            event.update(msg=f"{self._prefix}: {message}", args=None, created=record.created)
            self._worker.log_event(self._topic, event)
        except Exception:  # logging never fails the task
            self.handleError(record)


@contextlib.contextmanager
def _forwarded_logs(worker: Any, topic: str, prefix: str, levels: dict[str, int]) -> Iterator[None]:
    """While the block runs, the records of this thread go to the driver too; a worker of a
    cluster this run started shares the driver's console, so they go there only."""
    handler = _ToDriver(worker, topic, prefix)
    only_driver = os.environ.get(SHARES_CONSOLE) == "1"
    saved = {}
    for name, level in levels.items():
        target = logging.getLogger(name)
        saved[name] = (target.level, target.propagate)
        target.setLevel(level)
        target.addHandler(handler)
        target.propagate = target.propagate and not only_driver
    try:
        yield
    finally:
        for name, (level, propagate) in saved.items():
            target = logging.getLogger(name)
            target.removeHandler(handler)
            target.setLevel(level)
            target.propagate = propagate


def _emit_on_driver(event: tuple[float, dict[str, Any]]) -> None:
    _, fields = event
    record = logging.makeLogRecord(fields)
    logging.getLogger(record.name).handle(record)


def _offers_gpus(client: distributed.Client) -> bool:
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    with_gpus = sum(1 for w in workers if w.get("resources", {}).get("GPU", 0) > 0)
    if with_gpus:
        logger.info(
            "nodes tagged %r ask for GPU=1 (%d of %d workers offer one)",
            GPU_TAG,
            with_gpus,
            len(workers),
        )
    else:
        logger.info("no worker offers a GPU resource: nodes tagged %r run on any worker", GPU_TAG)
    return bool(with_gpus)


def _session_cluster_config(hook_manager: Any) -> ClusterConfig:
    """``dask.yml`` as this session's :class:`~lors_distill.hooks.ClusterConfigHook` read it,
    validated (defaults when there is none, or outside a project session)."""
    for plugin in getattr(hook_manager, "get_plugins", lambda: ())():
        if isinstance(getattr(plugin, "cluster_config", None), dict):
            return parse_cluster_config(plugin.cluster_config, plugin.cluster_config_source)
    return ClusterConfig()


@contextlib.contextmanager
def connect(address: str | None, source: str, config: ClusterConfig) -> Iterator[Any]:
    """A client of the scheduler at ``address``, or of a cluster started here (stopped on the
    way out), once at least one worker has joined."""
    with contextlib.ExitStack() as stack:
        if address is None:
            cluster = stack.enter_context(start_cluster(config))
            address, source = cluster.scheduler_address, source
        try:
            client = distributed.Client(address, timeout=config.connect_timeout)
        except (OSError, TimeoutError) as error:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {address} (from {source}) within "
                f"{config.connect_timeout:g} s: {error}"
            ) from None
        stack.enter_context(client)
        try:
            client.wait_for_workers(1, timeout=config.workers_timeout)
        except TimeoutError:
            raise ClusterError(
                f"no Dask worker joined the scheduler at {address} (from {source}) within "
                f"{config.workers_timeout:g} s"
            ) from None
        logger.info(
            "Dask scheduler %s (from %s), %d workers; dashboard %s",
            address,
            source,
            len(client.scheduler_info(n_workers=-1)["workers"]),
            client.dashboard_link,
        )
        yield client


@contextlib.contextmanager
def start_cluster(config: ClusterConfig) -> Iterator[Any]:
    """The cluster ``dask.yml`` describes (``local``, ``slurm``, ``pbs``), started for this run
    and stopped after it (a jobqueue cluster's jobs too)."""
    if config.cluster in ("slurm", "pbs"):
        with jobqueue_cluster(config) as cluster:
            cluster.scale(jobs=config.jobs)
            yield cluster
        return
    with local_cluster(config.options) as cluster:
        yield cluster


def jobqueue_cluster(config: ClusterConfig) -> Any:
    """``dask_jobqueue.SLURMCluster(**options)`` or ``PBSCluster``, with no job submitted yet
    (``cluster.job_script()`` shows what each job will run)."""
    try:
        import dask_jobqueue
    except ImportError:
        raise ClusterError(
            f"dask.yml cluster: {config.cluster} needs dask-jobqueue: "
            'pip install -e ".[cluster]" in the project folder'
        ) from None
    kind = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}
    return kind[config.cluster](**config.options)


def local_cluster(options: dict[str, Any]) -> Any:
    """``LocalCluster(**options)`` when ``dask.yml`` gives options; otherwise one worker per GPU
    (pinned with ``CUDA_VISIBLE_DEVICES``, offering ``GPU=1``), or one single-threaded worker
    per core (:func:`~lors_distill.runners.cluster.local_worker_specs`)."""
    if options:
        if options.get("processes", True) and "env" not in options:
            options = {**options, "env": CONSOLE_ENV}
        return distributed.LocalCluster(**options)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    specs = local_worker_specs(gpus, os.cpu_count() or 1)
    workers = {
        name: {
            "cls": distributed.Nanny,
            "options": {"host": "127.0.0.1", **spec, "env": {**spec.get("env", {}), **CONSOLE_ENV}},
        }
        for name, spec in specs.items()
    }
    scheduler = {
        "cls": distributed.Scheduler,
        "options": {"host": "127.0.0.1", "dashboard_address": ":0"},
    }
    return distributed.SpecCluster(workers=workers, scheduler=scheduler)
