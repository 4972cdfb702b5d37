"""``lors_distill.runners.DaskRunner`` on real Dask processes: a ``dask scheduler`` and
``dask worker`` processes on 127.0.0.1 started the way a user starts a cluster, a
``LocalCluster`` with artifacts on a real S3 server, and the failures a cluster has (a worker
killed mid-node, a scheduler that is not there, a node that raises, a dataset that would stay in
one worker's memory). Every process a test starts is stopped by it."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import mlflow
import mlflow.pytorch
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Node, Pipeline

from lors_distill.runners import DaskRunner
from lors_distill.runners.cluster import ClusterError, local_worker_specs, parse_cluster_config
from tests.kedro_helpers import PROJECT_ROOT, make_project_copy, run_kedro
from tests.processes import background, free_port, run_ok
from tests.s3_server import seaweedfs

KEDRO = str(Path(sys.executable).with_name("kedro"))
DASK = str(Path(sys.executable).with_name("dask"))
UPSTREAM = "ingestion,features,experts"
# experts of 20 epochs (the test env's 3 take a fraction of a second): long enough to kill a
# worker in the middle of one
SLOWER = "experts.epochs=20"
# plain, unwrapped log lines (Kedro's rich console wraps at 80 columns in a file)
LOGGING = Path(__file__).with_name("plain_logging.yml")


def _artifacts(project: Path) -> dict[str, bytes]:
    """Every file a run left under ``data/`` (hidden temporary files included, so a
    half-written one would show), without the run-specific fields of the JSON reports."""
    found = {}
    for path in (project / "data").rglob("*"):
        if path.is_file() and path.name != ".gitkeep":
            found[path.relative_to(project / "data").as_posix()] = path.read_bytes()
    return found


def _comparable(name: str, content: bytes):
    if not name.endswith(".json"):
        return content
    return json.dumps(_without_run_fields(json.loads(content)), sort_keys=True)


def _without_run_fields(value):
    """A report without what differs between two project folders and two runs: the raw data's
    absolute folder (``root``) and the measured throughput (``*per_second*``)."""
    if isinstance(value, dict):
        return {
            k: _without_run_fields(v)
            for k, v in value.items()
            if "per_second" not in k and k != "root"
        }
    if isinstance(value, list):
        return [_without_run_fields(v) for v in value]
    return value


def _assert_same_artifacts(got: dict[str, bytes], expected: dict[str, bytes]) -> None:
    assert sorted(got) == sorted(expected)
    for name, content in expected.items():
        assert _comparable(name, got[name]) == _comparable(name, content), name


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "KEDRO_LOGGING_CONFIG": str(LOGGING), **extra}


@pytest.fixture(scope="module")
def sequential(tmp_path_factory) -> dict[str, bytes]:
    """What ``SequentialRunner`` writes for ingestion, features and experts (one torch thread:
    the Dask workers below have one each)."""
    project = make_project_copy(tmp_path_factory.mktemp("sequential"))
    run_ok(
        [KEDRO, "run", "--env", "test", "--pipelines", UPSTREAM, "--params", SLOWER],
        timeout=600,
        cwd=project,
        env=_env(OMP_NUM_THREADS="1"),
    )
    return _artifacts(project)


class _Cluster:
    """A ``dask scheduler`` and ``dask worker --nthreads 1`` processes on 127.0.0.1, each worker
    on a known port. ``nanny=False`` (``--no-nanny``): each started process is the worker
    itself, so a test can kill the one running a given node (a nanny would restart it)."""

    def __init__(self, folder: Path, workers: int, gpu_workers: int = 0, nanny: bool = True):
        self.folder = folder
        self.nanny = nanny
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.ports = [free_port() for _ in range(workers)]
        self.gpu_workers = gpu_workers  # the first ones offer a GPU resource (a label here)
        self.processes: dict[str, object] = {}

    def __enter__(self) -> _Cluster:
        import contextlib

        self._stack = contextlib.ExitStack()
        port = self.address.rsplit(":", 1)[1]
        scheduler = [DASK, "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"]
        self._stack.enter_context(background(scheduler, self.folder / "scheduler.log"))
        for index, worker_port in enumerate(self.ports):
            command = [
                DASK, "worker", self.address, "--nthreads", "1",
                "--host", "127.0.0.1", "--worker-port", str(worker_port), "--no-dashboard",
            ]  # fmt: skip
            if not self.nanny:
                command.append("--no-nanny")
            if index < self.gpu_workers:
                command += ["--resources", "GPU=1"]
            log = self.folder / f"worker-{worker_port}.log"
            process = self._stack.enter_context(background(command, log))
            self.processes[f"tcp://127.0.0.1:{worker_port}"] = process
        self._wait_for_workers()
        return self

    def _wait_for_workers(self, timeout: float = 60.0) -> None:
        from distributed import Client

        with Client(self.address, timeout=timeout) as client:
            client.wait_for_workers(len(self.ports), timeout=timeout)

    def __exit__(self, *exc) -> None:
        self._stack.close()


def _kedro_on(cluster_address: str, project: Path, log: Path, *args: str):
    command = [
        KEDRO, "run", "--env", "test", "--runner", "lors_distill.runners.DaskRunner",
        "--params", SLOWER, *args,
    ]  # fmt: skip
    env = _env(DASK_SCHEDULER_ADDRESS=cluster_address)
    return background(command, log, cwd=project, env=env)


def _wait(process, log: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if process.poll() is None:
        raise AssertionError(f"kedro run did not finish in {timeout} s:\n{log.read_text()[-4000:]}")
    text = log.read_text()
    assert process.returncode == 0, f"kedro run exited with {process.returncode}:\n{text[-6000:]}"
    return text


@pytest.mark.slow
def test_a_scheduler_and_two_workers_give_the_sequential_bytes(sequential, tmp_path):
    """One of the two workers offers ``GPU=1`` (``--resources``; a label on this CPU-only
    machine): every node tagged ``gpu`` runs on it, the others on either."""
    project = make_project_copy(tmp_path)
    with _Cluster(tmp_path, workers=2, gpu_workers=1) as cluster:
        log = tmp_path / "kedro.log"
        with _kedro_on(cluster.address, project, log, "--pipelines", UPSTREAM) as process:
            output = _wait(process, log, timeout=600)
    _assert_same_artifacts(_artifacts(project), sequential)
    # each expert's progress reached the driver, named by its node and worker
    for index in (0, 1):
        assert re.search(
            rf"expert_{index}\.train_expert on tcp://127\.0\.0\.1:\d+: expert {index} epoch 20/20",
            output,
        ), output[-3000:]
    assert "Completed 5 out of 5 tasks" in output
    assert "nodes tagged 'gpu' ask for GPU=1 (1 of 2 workers offer one)" in output
    gpu_worker = next(iter(cluster.processes))
    ran_on = dict(re.findall(r"(\S+) on (tcp://127\.0\.0\.1:\d+): Running node", output))
    assert set(ran_on) == {
        "ingest_source_node",
        "encode_captions_node",
        "expert_0.expert_0.train_expert",
        "expert_1.expert_1.train_expert",
        "summarise_experts_node",
    }
    for name in (
        "encode_captions_node",
        "expert_0.expert_0.train_expert",
        "expert_1.expert_1.train_expert",
    ):
        assert ran_on[name] == gpu_worker, (name, ran_on)  # tagged gpu
    # the one MLflow run, on the driver, has the experts' loss curves and plot
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    try:
        (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
        metrics = mlflow.MlflowClient().get_metric_history(
            run.info.run_id, "experts.expert_1.train_loss"
        )
        assert [m.step for m in metrics] == list(range(1, 21))
        artifacts = mlflow.MlflowClient().list_artifacts(run.info.run_id, "plots")
        assert [a.path for a in artifacts] == ["plots/experts_loss.png"]
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_a_worker_killed_during_an_expert_costs_only_a_rerun(sequential, tmp_path):
    """SIGKILL the worker that is training expert 0, after its first epoch: Dask runs the
    node again on the other worker, and every artifact is the uninterrupted run's."""
    project = make_project_copy(tmp_path)
    with _Cluster(tmp_path, workers=2, nanny=False) as cluster:
        log = tmp_path / "kedro.log"
        with _kedro_on(cluster.address, project, log, "--pipelines", UPSTREAM) as process:
            pattern = re.compile(
                r"expert_0\.train_expert on (tcp://127\.0\.0\.1:\d+): expert 0 epoch 1/"
            )
            deadline, found = time.monotonic() + 300, None
            while found is None and process.poll() is None and time.monotonic() < deadline:
                found = pattern.search(log.read_text())
                time.sleep(0.05)
            assert found, f"expert 0 never reported an epoch:\n{log.read_text()[-4000:]}"
            victim = cluster.processes[found.group(1)]
            os.kill(victim.pid, signal.SIGKILL)
            output = _wait(process, log, timeout=600)
        assert victim.wait(timeout=10) == -signal.SIGKILL
    survivor = next(a for a in cluster.processes if a != found.group(1))
    # the node ran again, to the end, on the worker that was left
    assert f"expert_0.train_expert on {survivor}: expert 0 epoch 20/20" in output
    assert "Completed 5 out of 5 tasks" in output
    _assert_same_artifacts(_artifacts(project), sequential)


@pytest.mark.slow
def test_the_default_pipeline_on_a_local_cluster_with_artifacts_on_s3(sequential, tmp_path):
    """``__default__`` with ``conf/<env>/dask.yml`` ``cluster: local`` (two single-threaded
    worker processes), caption encoding in two shard tasks, and every artifact under
    ``LORS_DATA_ROOT`` on SeaweedFS: the upstream artifacts on S3 are the sequential
    (unsharded) run's bytes, and the evaluation reports every method."""
    project = make_project_copy(tmp_path)
    (project / "conf/test/dask.yml").write_text(
        yaml.safe_dump({"cluster": "local", "options": {"n_workers": 2, "threads_per_worker": 1}})
    )
    with seaweedfs(tmp_path / "seaweedfs") as s3:
        (project / "conf/test/globals.yml").write_text(
            (PROJECT_ROOT / "conf/cluster/globals.yml").read_text()
        )
        (project / "conf/test/credentials.yml").write_text(
            yaml.safe_dump({"storage": s3.credentials})
        )
        command = [
            KEDRO, "run", "--env", "test", "--runner", "lors_distill.runners.DaskRunner",
            "--params", f"features.shards=2,{SLOWER}",
        ]  # fmt: skip
        env = _env(LORS_DATA_ROOT="s3://lors/dask-run")
        env.pop("DASK_SCHEDULER_ADDRESS", None)
        output = run_ok(command, timeout=1200, cwd=project, env=env).stdout
        fs = s3.filesystem()
        stored = {
            key.removeprefix("lors/dask-run/"): fs.cat_file(key) for key in fs.find("lors/dask-run")
        }
    assert "Pipeline execution completed" in output
    # nothing on local disk but the distillation's resume checkpoints (distillation.checkpoint_dir
    # is a local folder: README "Running on a cluster")
    local = [p for p in (project / "data").rglob("*") if p.is_file() and p.name != ".gitkeep"]
    assert local
    assert all(p.parent.name == "distillation_checkpoints" for p in local), local
    upstream = {name: stored[name] for name in sequential}  # KeyError: an artifact is missing
    _assert_same_artifacts(upstream, sequential)
    metrics = json.loads(stored["08_reporting/metrics.json"])
    for method in ("lors", "tesla_vl", "mtt_vl", "random", "herding", "full_data"):
        assert 0.0 <= metrics[f"{method}.mean_recall.mean"] <= 100.0
    assert "04_feature/shards/text_features_1.safetensors" in stored
    assert "07_model_output/distilled_set.safetensors" in stored
    assert "06_models/lors_eval_model.safetensors" in stored
    # the driver logged what the workers saved: metrics, and the LoRS model as an MLflow model
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    try:
        (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
        logged = run.data.metrics["lors.mean_recall.mean"]
        assert logged == pytest.approx(metrics["lors.mean_recall.mean"])
        artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
        assert {"distilled", "plots", "reports"} <= artifacts
        mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/lors_model")  # raises if absent
    finally:
        mlflow.set_tracking_uri(None)


# ----------------------------------------------------------------------------- in-process


def _double(x: int) -> int:
    return 2 * x


def _fail(x: int) -> int:
    raise ValueError(f"cannot use {x}")


def test_an_in_memory_handoff_is_refused_before_any_cluster_is_reached():
    pipeline = Pipeline(
        [
            Node(_double, "x", "y", name="first"),
            Node(_double, "y", "z", name="second"),
        ]
    )
    catalog = DataCatalog(datasets={"x": MemoryDataset(1), "z": MemoryDataset()})
    unreachable = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(ClusterError, match=r"'y' \(MemoryDataset\), 'z' \(MemoryDataset\)"):
        DaskRunner(address=unreachable).run(pipeline, catalog)


def test_an_unreachable_scheduler_fails_within_seconds_naming_its_address(monkeypatch):
    address = f"tcp://127.0.0.1:{free_port()}"
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address)
    import dask

    dask.config.refresh()
    try:
        pipeline = Pipeline([Node(_double, "params:x", None, name="only")])
        catalog = DataCatalog(datasets={"params:x": MemoryDataset(1)})
        start = time.monotonic()
        with pytest.raises(
            ClusterError, match=re.escape(address) + r" \(from DASK_SCHEDULER_ADDRESS\)"
        ):
            DaskRunner(connect_timeout=2).run(pipeline, catalog)
        assert time.monotonic() - start < 15
    finally:
        monkeypatch.delenv("DASK_SCHEDULER_ADDRESS")
        dask.config.refresh()


def test_a_node_that_raises_fails_the_run_with_its_name_and_traceback(tmp_path):
    from distributed import LocalCluster

    from lors_distill.datasets import JSONDataset

    pipeline = Pipeline([Node(_fail, "params:x", "out", name="breaks")])
    catalog = DataCatalog(
        datasets={
            "params:x": MemoryDataset(3),
            "out": JSONDataset(filepath=str(tmp_path / "out.json")),
        }
    )
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False) as cluster,
        pytest.raises(ValueError, match="cannot use 3") as raised,
    ):
        DaskRunner(address=cluster.scheduler_address).run(pipeline, catalog)
    assert any("in node breaks" in note for note in raised.value.__notes__)
    frames = [frame.name for frame in raised.traceback]
    assert "_fail" in frames  # the original traceback, from the worker
    assert not (tmp_path / "out.json").exists()


def test_a_bad_dask_yml_is_named_with_its_key(project_copy):
    (project_copy / "conf/test/dask.yml").write_text("cluster: kubernetes\njobs: 0\n")
    with pytest.raises(ClusterError, match=r"conf/\{base,test\}/dask.yml: cluster: .*; jobs: "):
        run_kedro(project_copy, ["ingestion"], runner=DaskRunner())
    assert not (project_copy / "data/02_intermediate/captions.parquet").exists()


def test_the_cluster_choice_validates_and_pins_one_gpu_per_worker():
    with pytest.raises(ClusterError, match="give address exactly when cluster is 'address'"):
        parse_cluster_config({"cluster": "address"})
    assert parse_cluster_config(None).cluster == "local"
    specs = local_worker_specs(gpus=2, cpus=16)
    assert specs == {
        "gpu-0": {"nthreads": 8, "resources": {"GPU": 1}, "env": {"CUDA_VISIBLE_DEVICES": "0"}},
        "gpu-1": {"nthreads": 8, "resources": {"GPU": 1}, "env": {"CUDA_VISIBLE_DEVICES": "1"}},
    }
    assert local_worker_specs(gpus=0, cpus=2) == {
        "cpu-0": {"nthreads": 1},
        "cpu-1": {"nthreads": 1},
    }


def _readme_slurm_example() -> str:
    """The ``dask.yml`` block of the README's SLURM paragraph ("Running on a cluster")."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    after = readme[readme.index("**SLURM** through dask-jobqueue") :]
    return after[after.index("```yaml\n") + len("```yaml\n") : after.index("```\n", 8)]


def test_a_slurm_dask_yml_makes_jobs_with_one_gpu_worker_each():
    """The README's example, as dask-jobqueue turns it into a batch script."""
    from lors_distill.runners.dask_runner import jobqueue_cluster

    config = parse_cluster_config(yaml.safe_load(_readme_slurm_example()))
    assert config.jobs == 4
    with jobqueue_cluster(config) as cluster:  # no job is submitted before scale()
        script = cluster.job_script()
    assert "#SBATCH --gres=gpu:1" in script
    assert "--resources GPU=1" in script
    assert "--nthreads 8" in script
    assert "#SBATCH -t 24:00:00" in script


def test_runner_params_are_validated_like_dask_yml():
    pipeline = Pipeline([Node(_double, "params:x", None, name="only")])
    catalog = DataCatalog(datasets={"params:x": MemoryDataset(1)})
    with pytest.raises(ClusterError, match=r"--runner-params: connect_timeout: .*greater than 0"):
        DaskRunner(connect_timeout=-1).run(pipeline, catalog)


def test_without_any_cluster_setting_a_local_cluster_is_started_and_stopped(tmp_path, monkeypatch):
    """No address, no ``DASK_SCHEDULER_ADDRESS``, no ``dask.yml``: the default local cluster
    (here, without GPUs, one single-threaded worker process per core) runs the node."""
    import dask

    from lors_distill.datasets import JSONDataset

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    dask.config.refresh()
    pipeline = Pipeline([Node(_double, "params:x", "out", name="doubles")])
    catalog = DataCatalog(
        datasets={
            "params:x": MemoryDataset(21),
            "out": JSONDataset(filepath=str(tmp_path / "out.json")),
        }
    )
    DaskRunner().run(pipeline, catalog)
    assert json.loads((tmp_path / "out.json").read_text()) == 42


def test_a_dask_yml_address_that_answers_nothing_is_named(project_copy):
    address = f"tcp://127.0.0.1:{free_port()}"
    (project_copy / "conf/test/dask.yml").write_text(
        f"cluster: address\naddress: {address}\nconnect_timeout: 2\n"
    )
    with pytest.raises(ClusterError, match=re.escape(f"{address} (from dask.yml address)")):
        run_kedro(project_copy, ["ingestion"], runner=DaskRunner())
