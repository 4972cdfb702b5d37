"""Which Dask cluster a run uses, and how the runner reaches it.

In order (the first that is given wins):

1. the runner's ``address`` (``kedro run --runner-params address=tcp://host:8786``);
2. Dask's own configuration: ``DASK_SCHEDULER_ADDRESS`` (or ``scheduler-address`` in a Dask
   config file);
3. ``conf/<env>/dask.yml`` (:class:`ClusterConfig`): ``cluster: local``, ``address`` or a
   ``dask_jobqueue`` cluster (``slurm``, ``pbs``) with its options;
4. otherwise a ``LocalCluster`` on this machine: one worker per GPU (``CUDA_VISIBLE_DEVICES``
   pinned, ``GPU=1``), or without GPUs one single-threaded worker per core.

This module reads and validates the choice; importing it needs no Dask (the hook that reads
``dask.yml`` runs in every session).
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CONFIG_KEY = "dask"  # conf/<env>/dask.yml (settings.CONFIG_LOADER_ARGS: config_patterns)
CONFIG_PATTERNS = ["dask*", "dask*/**", "**/dask*"]


class ClusterError(RuntimeError):
    """The cluster cannot be used: unreachable, misconfigured, or missing a package."""


class ClusterConfig(BaseModel):
    """``conf/<env>/dask.yml``.

    Example (SLURM, one GPU per job)::

        cluster: slurm
        jobs: 4
        options:            # dask_jobqueue.SLURMCluster(**options)
          cores: 8
          memory: 64GB
          processes: 1
          job_extra_directives: ["--gres=gpu:1"]
          worker_extra_args: ["--resources", "GPU=1"]
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: Literal["local", "address", "slurm", "pbs"] = "local"
    address: str | None = None  # cluster: address (tcp://host:8786)
    options: dict[str, Any] = Field(default_factory=dict)  # LocalCluster / jobqueue kwargs
    jobs: int = Field(default=1, ge=1)  # slurm / pbs: cluster.scale(jobs=...)
    connect_timeout: float = Field(default=10.0, gt=0)  # seconds to reach the scheduler
    workers_timeout: float = Field(default=120.0, gt=0)  # seconds to wait for a first worker

    @model_validator(mode="after")
    def _address_with_its_kind(self) -> ClusterConfig:
        if (self.cluster == "address") != (self.address is not None):
            raise ValueError("give address exactly when cluster is 'address'")
        return self


def parse_cluster_config(raw: dict[str, Any] | None, where: str = "dask.yml") -> ClusterConfig:
    """``raw`` (the ``dask`` configuration, or None when there is none) validated; an error
    names ``where`` and every bad key."""
    try:
        return ClusterConfig.model_validate(raw or {})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'cluster'}: {e['msg']}" for e in error.errors()
        )
        raise ClusterError(f"{where}: {problems}") from None


def scheduler_address(explicit: str | None, config: ClusterConfig) -> tuple[str | None, str]:
    """``(address, where it came from)``; ``(None, ...)`` when a cluster must be started."""
    if explicit:
        return explicit, "--runner-params address"
    import dask  # only when a run needs it

    configured = dask.config.get("scheduler-address", None)
    if configured:
        source = (
            "DASK_SCHEDULER_ADDRESS"
            if os.environ.get("DASK_SCHEDULER_ADDRESS")
            else "Dask's scheduler-address setting"
        )
        return configured, source
    if config.cluster == "address":
        return config.address, "dask.yml address"
    return None, f"dask.yml cluster: {config.cluster}" if config.cluster != "local" else "local"


def local_worker_specs(gpus: int, cpus: int) -> dict[str, dict[str, Any]]:
    """The workers of the default local cluster, as ``SpecCluster`` worker options: one per
    GPU, each seeing only its own device (``CUDA_VISIBLE_DEVICES``) and offering ``GPU=1``, the
    cores shared out between them; without GPUs, one single-threaded worker per core."""
    if gpus == 0:
        return {f"cpu-{i}": {"nthreads": 1} for i in range(max(1, cpus))}
    threads = max(1, cpus // gpus)
    return {
        f"gpu-{i}": {
            "nthreads": threads,
            "resources": {"GPU": 1},
            "env": {"CUDA_VISIBLE_DEVICES": str(i)},
        }
        for i in range(gpus)
    }
