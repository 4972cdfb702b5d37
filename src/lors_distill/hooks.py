"""Project hooks."""

from __future__ import annotations

import logging
import multiprocessing
import os
from typing import Any

import torch
from kedro.config import MissingConfigException
from kedro.framework import project
from kedro.framework.context import KedroContext
from kedro.framework.hooks import hook_impl
from kedro.pipeline import Pipeline
from kedro_mlflow.framework.hooks import MlflowHook

from lors_distill import structure, tracking
from lors_distill.core.config import ParameterError, check_train_size, validate_parameters
from lors_distill.core.device import keep_freed_memory, worker_threads
from lors_distill.core.schema import as_logged
from lors_distill.datasets import ExternalSetDataset
from lors_distill.pipeline_registry import register_pipelines
from lors_distill.provenance import check_reused_experts, remove_stale_outputs
from lors_distill.runners.cluster import CONFIG_KEY

logger = logging.getLogger(__name__)


class RunChecksHook:
    """Everything checked before (or as early as possible in) a run, so it stops at once with a
    message naming what is wrong:

    * every parameter section (config files plus ``--params``) validated into its typed object,
      cross-section keys included, as soon as the context exists: before Kedro builds the
      catalog, and whatever pipelines run (an unknown key, a wrong type or a bad value is named
      with its full path, every problem at once). Kedro then puts the same objects in the
      catalog: its typed parameters (Kedro >= 1.7) build each ``params:<section>`` from the
      class its nodes annotate, so every node receives the validated object;
    * reused expert trajectories against this run's settings and data
      (:func:`~lors_distill.provenance.check_reused_experts`), and under
      ``--only-missing-outputs`` stale downstream outputs removed;
    * ``distillation.num_pairs`` against the train split when ingestion ends.
    """

    def __init__(self) -> None:
        self._parsed: dict[str, Any] = {}
        self._uses_pairs = False

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog) -> None:
        """Before the first node: reused expert trajectories must match this run's settings and
        data; under ``--only-missing-outputs`` the outputs of nodes downstream of a node that
        runs again are removed, so they are rewritten from the new inputs."""
        self._uses_pairs = any("params:distillation" in node.inputs for node in pipeline.nodes)
        only_missing = bool((run_params or {}).get("only_missing_outputs"))
        check_reused_experts(pipeline, catalog, self._parsed, only_missing)
        if only_missing:
            remove_stale_outputs(pipeline, catalog)

    @hook_impl(tryfirst=True)  # before anything reads context.params (Kedro's own checks)
    def after_context_created(self, context: KedroContext) -> None:
        try:
            raw = context.config_loader["parameters"]
        except MissingConfigException:
            raw = {}
        self._parsed = validate_parameters(raw)

    @hook_impl
    def after_catalog_created(self, catalog) -> None:
        """``evaluation.external_set`` names a file: the catalog's ``external_set`` reads it
        (a catalog entry cannot take its path from a parameter)."""
        evaluation = self._parsed.get("evaluation")
        if evaluation is not None and evaluation.external_set:
            catalog["external_set"] = ExternalSetDataset(filepath=evaluation.external_set)

    @hook_impl
    def after_node_run(self, outputs: dict[str, Any]) -> None:
        """Checks that need the data run as soon as it exists: ``distillation.num_pairs`` must
        fit the train split when ingestion ends. When this run goes on to a node that draws the
        pairs, that is an error raised before Kedro saves the ingestion outputs; otherwise a
        warning."""
        train = (outputs or {}).get("train_images")
        if train is None or "distillation" not in self._parsed:
            return
        try:
            check_train_size(self._parsed["distillation"].num_pairs, train["images"].shape[0])
        except ParameterError as error:
            if self._uses_pairs:
                raise
            logger.warning("%s (before distilling)", error)


class PipelineStructureHook:
    """Build the pipelines for this session's parameters (the number of expert nodes and of
    caption shards) and install them in Kedro's pipeline registry, which the session reads
    next. The registry then holds exactly these (it no longer loads ``register_pipelines()``
    lazily in this process); each later session installs its own."""

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        if not project.PACKAGE_NAME:
            return
        shape = structure.session_structure(context.config_loader["parameters"])
        if shape is None:  # not a positive integer: RunChecksHook (tryfirst) has already
            return  # stopped the run, naming experts.num_experts or features.shards
        built = register_pipelines(*shape)
        project.pipelines.configure(None)
        for name, pipeline in built.items():
            project.pipelines[name] = pipeline


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


class TrackingFaultsHook:
    """MLflow faults never cost time or local outputs (:mod:`lors_distill.tracking`): an
    unreachable ``http(s)`` tracking server fails at once, a failed upload is reported when the
    run ends (after every local output is written), and runs that a killed process left
    RUNNING are marked FAILED."""

    @hook_impl(tryfirst=True)  # before kedro-mlflow contacts the server (and retries for minutes)
    def after_context_created(self, context: KedroContext) -> None:
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if uri is None:
            patterns = context.config_loader.config_patterns
            patterns.setdefault("mlflow", ["mlflow*", "mlflow*/**", "**/mlflow*"])
            try:
                uri = (context.config_loader["mlflow"].get("server") or {}).get(
                    "mlflow_tracking_uri"
                )
            except MissingConfigException:
                uri = None
        tracking.check_server(uri)

    @hook_impl(trylast=True)  # after kedro-mlflow has started this run
    def before_pipeline_run(self) -> None:
        tracking.forget_failed_uploads()
        tracking.upload("the run's host/process tags", tracking.close_stale_runs)

    @hook_impl(trylast=True)  # after kedro-mlflow has ended the run
    def after_pipeline_run(self) -> None:
        tracking.raise_failed_uploads()


class ClusterConfigHook:
    """Read ``conf/<env>/dask.yml`` when the context exists, for
    :class:`~lors_distill.runners.DaskRunner` (which validates it when its run starts, so a
    bad cluster file never stops a run on another runner). ``cluster_config`` is None when
    no environment has the file."""

    def __init__(self) -> None:
        self.cluster_config: dict[str, Any] | None = None
        self.cluster_config_source = "dask.yml"

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        try:
            raw = context.config_loader[CONFIG_KEY]
        except MissingConfigException:
            raw = None
        self.cluster_config = dict(raw) if raw is not None else None
        self.cluster_config_source = f"conf/{{base,{context.env or 'local'}}}/dask.yml"


class TolerantMlflowHook(MlflowHook):
    """kedro-mlflow's hook (registered in its place: ``settings.DISABLE_HOOKS_FOR_PLUGINS``),
    with the uploads it makes once the run is going (each node's parameters, the run's end)
    made non-fatal like this project's own: a tracking server that dies mid-run is reported
    when the run ends (:class:`TrackingFaultsHook`), and every node still runs and writes its
    outputs."""

    @hook_impl
    def before_node_run(self, node, catalog, inputs, is_async) -> None:
        # a typed parameter object is logged as the keys and values it was written with
        logged = {name: as_logged(value) for name, value in inputs.items()}
        tracking.upload(
            f"the parameters of {node.name}",
            lambda: MlflowHook.before_node_run(self, node, catalog, logged, is_async),
        )

    @hook_impl
    def after_pipeline_run(self, run_params, pipeline, catalog) -> None:
        tracking.upload(
            "the end of the MLflow run",
            lambda: MlflowHook.after_pipeline_run(self, run_params, pipeline, catalog),
        )
