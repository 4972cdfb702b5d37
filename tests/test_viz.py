"""kedro-viz: every dataset has a layer, and the static site of ``kedro viz build`` really renders.

The browser test builds the site in a throw-away copy of the project (``test`` env, empty data
layers: building must not need a run), serves it on 127.0.0.1 and loads it in headless Chromium.
Without ``chromium`` on PATH it skips, unless ``LORS_REQUIRE_BROWSER=1`` (set by ``.ci/run``).

Made for a busy 2-core CI machine: kedro-viz lays the graph out in a Web Worker, which
``--virtual-time-budget`` may not wait for, so a DOM dump or a screenshot taken under load can
come too early. Both are retried (fresh Chromium profile each time, a growing budget, a pause
between tries) until the page shows what the test needs; a failure lists every try's shortfall.
Every child process runs in its own process group, killed whole when it times out or returns,
and dies with pytest even if pytest is killed.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from kedro_viz.constants import VIZ_DEPLOY_TIME_LIMIT
from PIL import Image, ImageStat

from tests.kedro_helpers import PROJECT_ROOT, make_project_copy
from tests.processes import run as run_group

# Kedro's layers in data-flow order; kedro-viz draws them as bands only if they form no cycle
LAYERS = ["intermediate", "feature", "models", "model_output", "reporting"]
# at least one node of every built-in pipeline, the namespaced ones included
NODES = [
    "ingest_source_node",  # ingestion
    "encode_captions_node",  # features
    "expert_0.train_expert",  # experts (namespace expert_0)
    "expert_1.train_expert",
    "summarise_experts_node",
    "distill_node",  # distillation (and mtt_vl.distill_node in baselines)
    "report_distillation_node",
    "select_herding_coreset_node",  # baselines
    "make_random_teacher_set_node",  # evaluation
    "evaluate_lors_node",
    "evaluate_mtt_vl_node",
    "summarise_evaluation_node",
]
DATASETS = ["captions", "distilled_set", "mtt_vl.distilled_set", "metrics", "comparison_table"]
PIPELINES = {
    "__default__",
    "ingestion",
    "features",
    "experts",
    "distillation",
    "baselines",
    "frozen",
    "evaluation",
}


def test_every_catalog_entry_has_a_kedro_viz_layer():
    catalog = yaml.safe_load((PROJECT_ROOT / "conf/base/catalog.yml").read_text())
    missing = {
        name: entry.get("metadata")
        for name, entry in catalog.items()
        if not (entry.get("metadata") or {}).get("kedro-viz", {}).get("layer")
    }
    assert not missing, f"catalog entries without metadata.kedro-viz.layer: {missing}"
    # dataset factories and the namespaced baseline entries are covered too
    assert {"{split}_images", "expert_{index}.trajectory", "{baseline}.{plot}_plot"} <= set(catalog)


# What `kedro viz build` prints when it fails (kedro_viz/launchers/cli/utils.py,
# create_shareableviz_process): it catches the error, prints one of these and still exits 0.
VIZ_BUILD_FAILED = (
    "Failed to build/deploy Kedro-Viz",  # "ERROR: ..." and "TIMEOUT ERROR: ..."
    "PERMISSION ERROR:",
    "Creating your build/deploy Kedro-Viz process is interrupted",
)
# ... and what it prints once the files are written
VIZ_BUILD_DONE = "Kedro-Viz build files have been added to the `build` directory"
# virtual ms Chromium gives the page per try: each retry waits longer for the layout worker
BUDGETS_MS = (20_000, 40_000, 80_000, 160_000)
CHROMIUM_TIMEOUT_S = 180  # real seconds for one Chromium run


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        reason = "needs `chromium` on PATH (apt-get install chromium) to test kedro-viz's site"
        if os.environ.get("LORS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"LORS_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    return found


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[tuple[Path, str, str]]:
    """``kedro viz build`` (test env) served on a free local port: (build folder, URL, chromium)."""
    chromium = _chromium()  # before the build: skip fast
    project = make_project_copy(tmp_path_factory.mktemp("viz"))
    env = {
        **os.environ,
        "KEDRO_ENV": "test",  # `kedro viz build` has no --env option; Kedro reads KEDRO_ENV
        "KEDRO_DISABLE_TELEMETRY": "1",
        "DO_NOT_TRACK": "1",
    }
    command = [sys.executable, "-m", "kedro", "viz", "build"]
    try:
        # kedro-viz gives up (and says so) after VIZ_DEPLOY_TIME_LIMIT: wait a bit longer
        done = run_group(command, VIZ_DEPLOY_TIME_LIMIT + 120, cwd=project, env=env)
    except subprocess.TimeoutExpired as timeout:
        pytest.fail(f"`kedro viz build` still running after {timeout.timeout:.0f} s (killed)")
    output = done.stdout + done.stderr
    # kedro-viz reports a failed build on the console but still exits 0: check all of it
    assert done.returncode == 0, output[-4000:]
    failed = [message for message in VIZ_BUILD_FAILED if message in output]
    assert not failed, f"`kedro viz build` failed ({failed}):\n{output[-4000:]}"
    assert VIZ_BUILD_DONE in output, output[-4000:]
    build = project / "build"
    assert (build / "index.html").is_file(), output[-4000:]
    assert (build / "api" / "main").is_file(), output[-4000:]

    handler = functools.partial(_QuietHandler, directory=str(build))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)  # port 0: a free port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    try:
        thread.start()
        # expandAllPipelines: the namespaced nodes (expert_<i>, mtt_vl) are drawn too
        yield build, f"http://127.0.0.1:{server.server_port}/?expandAllPipelines=true", chromium
    finally:
        if thread.is_alive():
            server.shutdown()  # stops serve_forever; only safe while it runs
        server.server_close()
        thread.join(timeout=10)


def _headless(chromium: str, profile: Path, budget_ms: int, *args: str) -> tuple[str, str]:
    """One headless Chromium run with a fresh profile: (stdout, "") or ("", what went wrong)."""
    profile.mkdir(parents=True)  # fails if it exists: never reuse a profile
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--no-first-run",
        f"--user-data-dir={profile}",  # a profile per run: no clash on its lock
        f"--virtual-time-budget={budget_ms}",  # virtual ms: lets the React app fetch and lay out
        *args,
    ]
    try:
        done = run_group(command, CHROMIUM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return "", f"chromium still running after {CHROMIUM_TIMEOUT_S} s (killed)"
    if done.returncode != 0:
        return "", f"chromium exited with {done.returncode}: {done.stderr[-2000:]}"
    return done.stdout, ""


def _retrying(chromium: str, folder: Path, arguments, check):
    """Run Chromium with growing budgets until ``check`` finds no problem with what it made.

    Try ``i`` works in ``folder/try-i`` (its profile and output): ``arguments(that folder)``
    gives Chromium's arguments, ``check(stdout, that folder)`` returns (result, problem).
    Returns the result of the last try that ran ``check`` (None if none) and, when no try
    passed, every try's problem.
    """
    result, problems = None, []
    for attempt, budget_ms in enumerate(BUDGETS_MS):
        if attempt:
            time.sleep(2 * attempt)  # real time: let a busy machine catch up before retrying
        here = folder / f"try-{attempt}"
        stdout, problem = _headless(chromium, here / "profile", budget_ms, *arguments(here))
        if not problem:
            result, problem = check(stdout, here)
            if not problem:
                return result, ""
        problems.append(f"try {attempt + 1}/{len(BUDGETS_MS)} ({budget_ms} virtual ms): {problem}")
    return result, "\n".join(problems)


class _RenderedGraph(HTMLParser):
    """Texts drawn in the flowchart's SVG nodes, and the layer labels beside it."""

    def __init__(self) -> None:
        super().__init__()
        self.node_texts: set[str] = set()
        self.layer_names: set[str] = set()
        self._into: set[str] | None = None

    def handle_starttag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        if tag == "text" and "pipeline-node__text" in classes:
            self._into = self.node_texts
        elif "pipeline-layer-name" in classes:
            self._into = self.layer_names

    def handle_data(self, data):
        if self._into is not None and data.strip():
            self._into.add(data.strip())
            self._into = None

    def handle_endtag(self, tag):
        self._into = None


def _screenshot_problem(png: Path) -> str:
    """Why the screenshot looks blank or wrong, or "" when it shows a drawing."""
    if not png.is_file():
        return "chromium wrote no screenshot"
    if png.stat().st_size <= 30_000:
        return f"screenshot is only {png.stat().st_size} bytes"
    with Image.open(png) as image:
        if image.size != (1600, 1000):
            return f"screenshot is {image.size}, not (1600, 1000)"
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1_000_000) or []
        if len(colours) <= 100:
            return f"{len(colours)} colours: blank page?"
        if max(ImageStat.Stat(rgb).stddev) <= 10:
            return "one flat colour: blank page?"
    return ""


@pytest.mark.slow
def test_viz_build_renders_the_pipelines_in_chromium(site, tmp_path):
    build, url, chromium = site
    main = json.loads((build / "api" / "main").read_text())
    data_nodes = [n for n in main["nodes"] if n["type"] == "data"]
    assert len(data_nodes) > 40
    assert not [n["name"] for n in data_nodes if not n["layer"]], "datasets without a layer"
    # kedro-viz sorts the layers topologically and drops them all (with only a log warning)
    # when a dataset of an earlier layer is made from one of a later layer
    assert main["layers"], "no layers in the build: a cycle among the catalog's layers?"
    assert {n["layer"] for n in data_nodes} == set(main["layers"])
    assert [layer for layer in main["layers"] if layer in LAYERS] == LAYERS
    assert {p["name"] for p in main["pipelines"]} == PIPELINES
    assert {"expert_0", "mtt_vl"} <= set(main["modular_pipelines"])

    # every task node of __default__ that the build exported, key datasets, all layer bands
    tasks = {n["name"] for n in main["nodes"] if n["type"] == "task"}
    expected = set(NODES) | set(DATASETS) | tasks

    def drawn(dom: str, _here: Path) -> tuple[tuple[str, _RenderedGraph], str]:
        graph = _RenderedGraph()
        graph.feed(dom)
        missing = sorted(expected - graph.node_texts)
        layers_missing = sorted(set(main["layers"]) - graph.layer_names)
        if missing or layers_missing:
            return (dom, graph), (
                f"{len(missing)} of {len(expected)} expected `text.pipeline-node__text` not "
                f"drawn {missing[:20]}; `.pipeline-layer-name` not drawn {layers_missing}"
            )
        return (dom, graph), ""

    dump = _retrying(chromium, tmp_path / "dump-dom", lambda _here: ("--dump-dom", url), drawn)
    result, problem = dump
    assert result is not None, f"chromium never dumped the DOM:\n{problem}"
    dom, graph = result
    assert graph.node_texts, f"no flowchart nodes drawn:\n{problem}\nDOM starts with {dom[:2000]}"
    assert set(NODES) <= graph.node_texts, (sorted(set(NODES) - graph.node_texts), problem)
    assert set(DATASETS) <= graph.node_texts, (sorted(set(DATASETS) - graph.node_texts), problem)
    assert tasks <= graph.node_texts, (sorted(tasks - graph.node_texts), problem)
    assert graph.layer_names == set(main["layers"]), (graph.layer_names, problem)

    def screenshot(here: Path) -> tuple[str, ...]:
        return f"--screenshot={here / 'dag.png'}", "--window-size=1600,1000", url

    def painted(_stdout: str, here: Path) -> tuple[Path, str]:
        return here / "dag.png", _screenshot_problem(here / "dag.png")

    png, problem = _retrying(chromium, tmp_path / "screenshot", screenshot, painted)
    assert png is not None, f"chromium never took the screenshot:\n{problem}"
    assert png.is_file(), f"chromium wrote no screenshot:\n{problem}"
    assert png.stat().st_size > 30_000, f"screenshot is only {png.stat().st_size} bytes:\n{problem}"
    with Image.open(png) as image:
        assert image.size == (1600, 1000), problem
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1_000_000) or []
        assert len(colours) > 100, f"{len(colours)} colours: blank page?\n{problem}"
        assert max(ImageStat.Stat(rgb).stddev) > 10, problem  # pixels vary, not one flat colour
