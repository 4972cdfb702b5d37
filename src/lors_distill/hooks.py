"""Project hooks."""

from __future__ import annotations

import multiprocessing
from typing import Any

import torch
from kedro.framework import project
from kedro.framework.context import KedroContext
from kedro.framework.hooks import hook_impl

from lors_distill import structure
from lors_distill.core.config import validate_parameters
from lors_distill.core.device import keep_freed_memory, worker_threads


class ParameterValidationHook:
    """Validate every parameter section into its typed object before any node runs.

    Kedro passes the merged parameters (all config files plus ``--params`` overrides) when it
    builds the catalog, which happens before the first node, so a wrong type or value stops the
    run at once with a message naming the parameter.
    """

    @hook_impl
    def after_catalog_created(self, parameters: dict[str, Any]) -> None:
        # ``parameters`` maps catalog names (``parameters``, ``params:<key>``) to values
        validate_parameters((parameters or {}).get("parameters") or {})


class PipelineStructureHook:
    """Build the pipelines for this session's parameters (the number of expert nodes)."""

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        if structure.activate(context.params) and project.PACKAGE_NAME:
            # forget the pipelines built so far; they are rebuilt on next access
            project.pipelines.configure(f"{project.PACKAGE_NAME}.pipeline_registry")


class ProcessSetupHook:
    """Tune the process that runs each node (the main process, or a ``ParallelRunner`` worker):
    the C allocator reuses freed memory rather than returning it to the OS
    (:func:`~lors_distill.core.device.keep_freed_memory`), and a worker process uses
    :func:`~lors_distill.core.device.worker_threads` torch threads, so that parallel workers do
    not oversubscribe the cores."""

    @hook_impl
    def before_node_run(self) -> None:
        keep_freed_memory()
        if multiprocessing.parent_process() is not None:
            torch.set_num_threads(worker_threads())
