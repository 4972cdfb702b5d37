"""kedro-viz: every dataset has a layer, and the static site of ``kedro viz build`` really renders.

The browser test builds the site in a throw-away copy of the project (``test`` env, empty data
layers: building must not need a run), serves it on 127.0.0.1 and loads it in headless Chromium.
Without ``chromium`` on PATH it skips, unless ``LORS_REQUIRE_BROWSER=1`` (set by ``.ci/run``).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from PIL import Image, ImageStat

from tests.kedro_helpers import PROJECT_ROOT, make_project_copy

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
    "select_coresets_node",  # baselines
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
    # dataset factories and the namespaced MTT-VL entries are covered too
    assert {"{split}_images", "expert_{index}.trajectory", "mtt_vl.{plot}_plot"} <= set(catalog)


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
    done = subprocess.run(
        [sys.executable, "-m", "kedro", "viz", "build"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    # kedro-viz reports a failed build on the console but still exits 0: check both
    assert done.returncode == 0, output[-4000:]
    assert "ERROR" not in output, output[-4000:]
    build = project / "build"
    assert (build / "index.html").is_file(), output[-4000:]
    assert (build / "api" / "main").is_file(), output[-4000:]

    handler = functools.partial(_QuietHandler, directory=str(build))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)  # port 0: a free port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        # expandAllPipelines: the namespaced nodes (expert_<i>, mtt_vl) are drawn too
        yield build, f"http://127.0.0.1:{server.server_port}/?expandAllPipelines=true", chromium
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _headless(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=20000",  # virtual ms: lets the React app fetch and lay out
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{command} failed:\n{done.stderr[-4000:]}"
    return done


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

    dom = _headless(chromium, tmp_path / "profile", "--dump-dom", url).stdout
    graph = _RenderedGraph()
    graph.feed(dom)
    assert graph.node_texts, f"no flowchart nodes rendered; DOM starts with {dom[:2000]}"
    assert set(NODES) <= graph.node_texts, sorted(set(NODES) - graph.node_texts)
    assert set(DATASETS) <= graph.node_texts, sorted(set(DATASETS) - graph.node_texts)
    # every task node of __default__ that the build exported is drawn
    tasks = {n["name"] for n in main["nodes"] if n["type"] == "task"}
    assert tasks <= graph.node_texts, sorted(tasks - graph.node_texts)
    assert graph.layer_names == set(main["layers"]), graph.layer_names

    png = tmp_path / "dag.png"
    _headless(chromium, tmp_path / "profile", f"--screenshot={png}", "--window-size=1600,1000", url)
    assert png.is_file(), "chromium wrote no screenshot"
    assert png.stat().st_size > 30_000, f"screenshot is only {png.stat().st_size} bytes"
    with Image.open(png) as image:
        assert image.size == (1600, 1000)
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1_000_000) or []
        assert len(colours) > 100, f"{len(colours)} colours: blank page?"
        assert max(ImageStat.Stat(rgb).stddev) > 10  # pixels vary, not one flat colour
