"""The paper-scale environments ``conf/flickr30k`` and ``conf/coco``.

Config level (fast): each budget preset resolves to the numbers of PAPER.md section 3 and
validates, one ``budget`` parameter selects it, a bad budget fails naming the parameter and the
allowed values, and the shared paper setup (BERT [CLS], NFNet-L0 at 224 px, 20 x 10 experts,
5 x 100-epoch evaluation) is what the environments say. COCO's annotation file names and image
folders are read by the ingestion code.

End to end (slow): ``kedro run --env flickr30k`` on a miniature Karpathy-format dataset at the
documented place (``data/01_raw/flickr30k``), with only sizes made tiny through ``--params``: a
tiny BERT saved locally (``hf:<folder>``, [CLS] pooling, clean captions), a tiny timm NFNet
loaded from a local checkpoint (the ``pretrained: <path>`` code path), 32 px, one expert of 3
epochs (with the paper's RandAugment), 2 distillation iterations, 2 x 2 evaluation epochs; the
miniature has 2 captions per train image (the caption-level train file groups them by image).
The default budget runs ``__default__``; the 200 and 500 presets are then run, unchanged but
for the iteration count, through the distillation pipeline (500 train images fit N = 499).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError

from lors_distill.core.bundle import load_bundle
from lors_distill.core.config import ParameterError, parse_section, validate_parameters
from lors_distill.core.ingest import ingest
from lors_distill.core.text_encoders import blip_caption
from tests.folders import captions_for, make_karpathy_folder, write_image
from tests.kedro_helpers import make_project_copy, run_kedro
from tests.params import base_params
from tests.tiny_models import save_tiny_bert

# PAPER.md section 3, written out independently of the YAML. COCO: where PAPER.md names only
# what differs from the previous budget, the rest is the reference scripts' (as in the YAML);
# iterations are the reference's (--Iteration: 3000 by default, 2000 in COCO's 200 script).
PRESETS = {
    "flickr30k": {
        100: dict(num_pairs=99, max_start_epoch=2, mini_batch_size=20, lr_images=100.0,
                  lr_texts=100.0, lr_sim=10.0, rank=10, alpha=3.0, temperature=None,
                  iterations=3000),
        200: dict(num_pairs=199, max_start_epoch=2, mini_batch_size=20, lr_images=1000.0,
                  lr_texts=1000.0, lr_sim=10.0, rank=5, alpha=1.0, temperature=None,
                  iterations=3000),
        500: dict(num_pairs=499, max_start_epoch=3, mini_batch_size=40, lr_images=1000.0,
                  lr_texts=1000.0, lr_sim=100.0, rank=20, alpha=0.01, temperature=None,
                  iterations=3000),
    },
    "coco": {
        100: dict(num_pairs=99, max_start_epoch=2, mini_batch_size=20, lr_images=1000.0,
                  lr_texts=1000.0, lr_sim=5.0, rank=10, alpha=1.0, temperature=None,
                  iterations=3000),
        200: dict(num_pairs=199, max_start_epoch=2, mini_batch_size=20, lr_images=1000.0,
                  lr_texts=1000.0, lr_sim=50.0, rank=20, alpha=1.0, temperature=None,
                  iterations=2000),
        500: dict(num_pairs=499, max_start_epoch=2, mini_batch_size=30, lr_images=5000.0,
                  lr_texts=5000.0, lr_sim=500.0, rank=40, alpha=1.0, temperature=0.1,
                  iterations=3000),
    },
}  # fmt: skip
COMMON = dict(syn_steps=8, expert_epochs=1, sim_type="lowrank", loss="wbce", lr_lr=0.01,
              momentum=0.5, lr_init=0.1, init="real", grad_mode="tesla",
              mini_batch_remainder="drop", expert_sampling="cycle")  # fmt: skip
MERGE_BRANCHES = {"flickr30k": False, "coco": True}
KARPATHY_FILES = {
    "flickr30k": ("flickr30k_train.json", "flickr30k_val.json", "flickr30k_test.json"),
    "coco": ("coco_karpathy_train.json", "coco_karpathy_val.json", "coco_karpathy_test.json"),
}
ENVS = list(PRESETS)


def load_parameters(env: str, runtime_params: dict | None = None) -> dict:
    """The merged parameters exactly as ``kedro run --env <env> --params ...`` sees them."""
    return base_params(env, runtime_params)


def cli_params(text: str) -> dict:
    """``--params text`` parsed the way the Kedro CLI does (``budget=200`` -> ``{budget: 200}``)."""
    return OmegaConf.to_container(OmegaConf.from_dotlist(text.split(",")))


# ----------------------------------------------------------------------------- config level


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("budget", [None, 100, 200, 500])
def test_budget_selects_the_paper_preset(env, budget):
    runtime = cli_params(f"budget={budget}") if budget else {}
    parsed = validate_parameters(load_parameters(env, runtime))
    distillation = parsed["distillation"].model_dump()
    expected = {**COMMON, **PRESETS[env][budget or 100], "merge_branches": MERGE_BRANCHES[env]}
    assert {k: distillation[k] for k in expected} == expected
    assert distillation["num_pairs"] == (budget or 100) - 1  # N = budget - 1


@pytest.mark.parametrize("env", ENVS)
def test_single_keys_still_override_a_preset(env):
    params = load_parameters(env, cli_params("budget=500,distillation.iterations=1500"))
    distillation = validate_parameters(params)["distillation"]
    assert (distillation.iterations, distillation.rank) == (1500, PRESETS[env][500]["rank"])


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("budget", ["300", "99", "large"])
def test_bad_budget_names_the_parameter_and_the_allowed_values(env, budget):
    with pytest.raises(InterpolationResolutionError, match="100, 200, 500") as caught:
        load_parameters(env, cli_params(f"budget={budget}"))
    message = str(caught.value).replace("'", "")
    assert f"budget={budget} is not one of" in message
    assert "100, 200, 500" in message


@pytest.mark.parametrize("env", ["base", "test", "flickr8k"])
def test_budget_outside_the_paper_environments_is_an_error(env):
    params = load_parameters(env, cli_params("budget=200"))
    with pytest.raises(ParameterError, match=r"budget=200: only the paper-scale environments"):
        validate_parameters(params)
    validate_parameters(load_parameters(env))  # and without it, all is well


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("budget", [None, 100, 200, 500])
def test_the_frozen_protocol_runs_repblends_scripts_at_every_budget(env, budget):
    """RepBlend's scripts (github zhangxin-xd/RepBlend, scripts/distill_{flickr,coco}_repblend.sh)
    use a mini-batch of 20 and 3,000 iterations at every budget of both datasets, on the
    ImageNet NFNet-L0 frozen; the frozen protocol's rows get exactly that."""
    runtime = cli_params(f"budget={budget}") if budget else {}
    parsed = validate_parameters(load_parameters(env, runtime))
    frozen = parsed["frozen"]
    assert (frozen.backbone, frozen.cache_features) == ("pretrained", True)
    assert parsed["model"].pretrained is True
    effective = parsed["distillation"].updated(**frozen.distillation.applied())
    assert (effective.mini_batch_size, effective.iterations) == (20, 3000)
    assert effective.num_pairs == (budget or 100) - 1
    assert set(frozen.distillation.applied()) <= {"mini_batch_size", "iterations"}


@pytest.mark.parametrize("env", ENVS)
def test_paper_setup_of_the_environment(env):
    parsed = validate_parameters(load_parameters(env))
    ingestion, features = parsed["ingestion"], parsed["features"]
    assert ingestion.source == "karpathy"
    assert ingestion.root == f"data/01_raw/{env}"
    karpathy = ingestion.karpathy
    assert (karpathy.train_file, karpathy.val_file, karpathy.test_file) == KARPATHY_FILES[env]
    assert ingestion.image_size == 224
    assert (features.text_encoder, features.pooling, features.clean_captions) == (
        "hf:bert-base-uncased",
        "cls",
        "blip",  # the reference's cleaning
    )
    assert features.device == "auto"
    # every method runs the paper's distillation settings: the built-in data's per-baseline
    # outer rates (conf/base baselines.tesla_vl / mtt_vl) must not leak into this scale
    assert parsed["baselines"].tesla_vl.applied() == {}
    assert parsed["baselines"].mtt_vl.applied() == {}
    model, experts = parsed["model"], parsed["experts"]
    assert model.image_encoder == "timm:nfnet_l0"
    assert model.pretrained is True
    assert model.normalization == "clip"
    assert model.temperature == 0.07
    assert (experts.num_experts, experts.epochs, experts.batch_size) == (20, 10, 128)
    # PAPER.md sections 2 and 6: an expert epoch is every train caption once (the caption-level
    # Karpathy JSON), so expert_epochs / max_start_epoch count the paper's epochs
    assert experts.captions_per_epoch == "all"
    assert (experts.lr_image, experts.lr_text, experts.momentum, experts.weight_decay) == (
        0.1,
        0.1,
        0.0,
        0.0,
    )
    augment = experts.augment
    assert augment.random_resized_crop
    assert augment.flip
    assert augment.rand_augment
    assert augment.crop_scale == (0.5, 1.0)
    assert (augment.rand_augment_ops, augment.rand_augment_magnitude) == (2, 5)
    assert augment.rand_augment_style == "blip"  # the reference's RandomAugment
    assert experts.device == "auto"
    evaluation = parsed["evaluation"]
    assert (evaluation.num_eval, evaluation.epochs, evaluation.lr_decay_epoch) == (5, 100, 50)
    assert (evaluation.momentum, evaluation.weight_decay, evaluation.batch_size) == (
        0.9,
        0.0005,
        128,
    )
    assert (evaluation.loss, evaluation.lr_decay_factor, evaluation.device) == ("wbce", 0.1, "auto")


def make_coco_folder(root: Path, counts: dict[str, int]) -> Path:
    """BLIP's COCO Karpathy layout: ``coco_karpathy_<split>.json`` + ``train2014/``, ``val2014/``
    (the Karpathy val/test images and "restval" come from COCO's val2014)."""
    index = 0
    for split, count in counts.items():
        entries = []
        for _ in range(count):
            folder = "train2014" if split == "train" and index % 2 == 0 else "val2014"
            name = f"{folder}/COCO_{folder}_{index:012d}.jpg"
            write_image(root / name, index)
            if split == "train":
                entries += [
                    {"caption": c, "image": name, "image_id": f"coco_{index}"}
                    for c in captions_for(index)
                ]
            else:
                entries.append({"image": name, "caption": captions_for(index)})
            index += 1
        (root / f"coco_karpathy_{split}.json").write_text(json.dumps(entries), encoding="utf-8")
    return root


def test_coco_layout_is_read_by_the_coco_environment(tmp_path):
    root = make_coco_folder(tmp_path / "coco", {"train": 6, "val": 2, "test": 3})
    params = load_parameters("coco", {"ingestion": {"root": str(root), "image_size": 16}})
    data = ingest(parse_section("ingestion", params["ingestion"]))
    assert data.report["images"] == {"train": 6, "val": 2, "test": 3}
    assert data.report["captions"] == {"train": 30, "val": 10, "test": 15}
    assert {Path(i).parts[0] for i in data.captions["image_id"]} == {"train2014", "val2014"}


# ----------------------------------------------------------------------------- end to end

TRAIN, VAL, TEST = 500, 4, 16  # 500 train images: enough for the 499 pairs of budget 500
TRAIN_CAPTIONS = 2  # per train image: an expert epoch is every train caption once
TINY_LOOP = {"iterations": 2}  # the only distillation override
TINY_WORDS = ["photo", "number", "caption", "with", "a", "dog"]
DIGITS = list("0123456789")
# the first train caption gets upper case and punctuation, so clean_captions matters
MESSY = "Photo NUMBER 1000, caption 0 -- with a dog!!"


def make_tiny_bert(folder: Path) -> Path:
    """A 2-layer, 32-d BERT with a 31-token WordPiece vocabulary, saved like a hub model."""
    tokens = [*TINY_WORDS, *DIGITS, *(f"##{d}" for d in DIGITS)]
    tokenizer = save_tiny_bert(folder, tokens, fast=True)
    assert tokenizer.tokenize("photo 1017") == ["photo", "1", "##0", "##1", "##7"]
    return folder


def make_tiny_timm_checkpoint(path: Path) -> Path:
    """timm's 190k-parameter ``test_nfnet`` (same family as NFNet-L0), saved as safetensors."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    model = timm.create_model("test_nfnet", pretrained=False, num_classes=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def bert_cls(folder: Path, text: str) -> torch.Tensor:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    with torch.inference_mode():
        return model(**tokenizer([text], return_tensors="pt")).last_hidden_state[0, 0]


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread is faster, and on a busy 2-core machine torch's second OpenMP
    thread made the same run about 10x slower (measured: 13 s vs 2 min)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory, one_thread):
    """``kedro run --env flickr30k`` (``__default__``, default budget) in a project copy."""
    tmp = tmp_path_factory.mktemp("paper_env")
    project = make_project_copy(tmp)
    raw = make_karpathy_folder(
        project / "data/01_raw/flickr30k",
        {"train": TRAIN, "val": VAL, "test": TEST},
        train_captions=TRAIN_CAPTIONS,
    )
    train_json = raw / "flickr30k_train.json"
    entries = json.loads(train_json.read_text())
    entries[0]["caption"] = MESSY
    train_json.write_text(json.dumps(entries))
    bert = make_tiny_bert(tmp / "tiny_bert")
    checkpoint = make_tiny_timm_checkpoint(tmp / "test_nfnet.safetensors")
    tiny = {  # only sizes; everything else (source, root, presets, recipes) is the env's
        "ingestion": {"image_size": 32, "num_workers": 2},
        "features": {"text_encoder": f"hf:{bert}"},
        "model": {"image_encoder": "timm:test_nfnet", "pretrained": str(checkpoint)},
        "experts": {"num_experts": 1, "epochs": 3},  # 3: budget 500 starts at epochs 0..2
        "distillation": dict(TINY_LOOP),
        "evaluation": {"num_eval": 2, "epochs": 2, "lr_decay_epoch": 1},
    }
    run_kedro(project, env="flickr30k", params=tiny)
    distilled = load_bundle(project / "data/07_model_output/distilled_set.safetensors")
    return {
        "project": project,
        "bert": bert,
        "checkpoint": checkpoint,
        "tiny": tiny,
        "default_config": distilled_config(project),
        "default_shapes": {k: list(distilled[k].shape) for k in ("images", "texts")},
    }


def reporting(run, name: str):
    return json.loads((run["project"] / "data/08_reporting" / name).read_text())


def distilled_config(project: Path) -> dict:
    return json.loads((project / "data/07_model_output/distilled_set.json").read_text())["config"]


@pytest.mark.slow
def test_ingestion_reads_the_documented_layout(paper_run):
    report = reporting(paper_run, "ingestion_report.json")
    assert report["source"] == "karpathy"
    assert report["root"] == str((paper_run["project"] / "data/01_raw/flickr30k").resolve())
    assert report["images"] == {"train": TRAIN, "val": VAL, "test": TEST}
    assert report["captions"] == {"train": TRAIN_CAPTIONS * TRAIN, "val": 5 * VAL, "test": 5 * TEST}
    assert report["bad_records"] == {"total": 0}
    assert report["image_size"] == 32
    assert report["resize"] == "squash"


@pytest.mark.slow
def test_features_are_the_local_berts_cls_of_clean_captions(paper_run):
    features = load_bundle(paper_run["project"] / "data/04_feature/train_text_features.safetensors")
    assert features["embeddings"].shape == (TRAIN_CAPTIONS * TRAIN, 32)  # tiny BERT's width
    assert features.metadata["dim"] == 32
    assert features.metadata["pooling"] == "cls"
    assert features.metadata["clean_captions"] == "blip"
    assert features.metadata["encoder"] == f"hf:{paper_run['bert']}"
    first = features["embeddings"][0]  # the messy caption, cleaned before encoding
    # the reference's cleaning keeps commas and dashes, drops ! and lower-cases
    assert blip_caption(MESSY) == "photo number 1000, caption 0 -- with a dog"
    # (loose tolerance: with device auto the run may have encoded on a GPU)
    expected = bert_cls(paper_run["bert"], blip_caption(MESSY))
    torch.testing.assert_close(first, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(first, bert_cls(paper_run["bert"], MESSY))


@pytest.mark.slow
def test_experts_start_from_the_local_pretrained_checkpoint(paper_run):
    from safetensors.torch import load_file

    from lors_distill.core.flat import ParameterLayout

    project = paper_run["project"]
    summary = reporting(paper_run, "experts_summary.json")
    assert summary  # the summary node ran
    weights = load_file(str(paper_run["checkpoint"]))
    for index in range(paper_run["tiny"]["experts"]["num_experts"]):
        expert = load_bundle(project / f"data/06_models/experts/expert_{index}.safetensors")
        assert expert.metadata["model"]["image_encoder"] == "timm:test_nfnet"
        assert expert.metadata["model"]["pretrained"] == str(paper_run["checkpoint"])
        assert expert.metadata["experts"]["augment"]["rand_augment"] is True
        assert expert.metadata["experts"]["captions_per_epoch"] == "all"
        # the reference's pixel statistics (CLIP's, via BLIP's transforms), not timm's ImageNet
        assert expert["image_mean"].tolist() == pytest.approx([0.48145466, 0.4578275, 0.40821073])
        assert expert["image_std"].tolist() == pytest.approx([0.26862954, 0.26130258, 0.27577711])
        assert expert["trajectory"].shape[0] == 4  # init + 3 epochs
        layout = ParameterLayout.from_json(expert.metadata["layout"])
        start = layout.unflatten(expert["trajectory"][0])
        branches = zip(layout.names, layout.branches, strict=True)
        image_names = [name for name, branch in branches if branch == "image"]
        assert image_names
        for name in image_names:  # every image-encoder parameter starts at the checkpoint
            torch.testing.assert_close(start[name], weights[name.removeprefix("image_encoder.")])


@pytest.mark.slow
def test_default_budget_reaches_distillation_and_evaluation(paper_run):
    project = paper_run["project"]
    config = paper_run["default_config"]  # read right after the run (later tests rewrite it)
    expected = {**COMMON, **PRESETS["flickr30k"][100], "merge_branches": False, **TINY_LOOP}
    assert {k: config[k] for k in expected} == expected
    assert paper_run["default_shapes"] == {"images": [99, 3, 32, 32], "texts": [99, 32]}
    mtt_vl = json.loads((project / "data/07_model_output/mtt_vl_distilled_set.json").read_text())
    assert mtt_vl["config"]["num_pairs"] == 99
    assert mtt_vl["config"]["sim_type"] == "identity"
    metrics = reporting(paper_run, "metrics.json")
    methods = ["lors", "mtt_vl", "random", "herding", "k_center", "forgetting", "full_data"]
    methods += ["lors_hard", "random_teacher"]
    recalls = ["ir@1", "ir@5", "ir@10", "tr@1", "tr@5", "tr@10", "mean_recall"]
    expected_keys = {f"{m}.{k}.{s}" for m in methods for k in recalls for s in ("mean", "std")}
    assert expected_keys <= set(metrics)
    assert all(0.0 <= metrics[k] <= 100.0 for k in expected_keys)
    lors = reporting(paper_run, "evaluation/lors.json")
    assert len(lors["runs"]) == 2
    assert lors["selection"].startswith("last epoch")


@pytest.mark.slow
def test_mlflow_logs_the_resolved_preset_not_the_templating_keys(paper_run):
    """conf/README.md: no node takes the ``_``-prefixed keys, so MLflow logs only their resolved
    values (``distillation.rank``, ...), never ``_budget``, ``_preset`` or ``_presets.*``."""
    database = paper_run["project"] / "mlflow.db"
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
        keys = {key for (key,) in connection.execute("SELECT key FROM params")}
    assert {"distillation.rank", "distillation.num_pairs", "experts.captions_per_epoch"} <= keys
    assert not [key for key in keys if key.startswith("_")]


@pytest.mark.slow
@pytest.mark.parametrize("budget", [200, 500])
def test_every_budget_preset_reaches_the_distillation_node(paper_run, budget):
    project, tiny = paper_run["project"], paper_run["tiny"]
    params = {**tiny, "budget": budget}  # kedro run --env flickr30k --params budget=...
    run_kedro(project, ["distillation"], env="flickr30k", params=params)
    config = distilled_config(project)
    expected = {**COMMON, **PRESETS["flickr30k"][budget], "merge_branches": False, **TINY_LOOP}
    assert {k: config[k] for k in expected} == expected
    distilled = load_bundle(project / "data/07_model_output/distilled_set.safetensors")
    n, rank = budget - 1, PRESETS["flickr30k"][budget]["rank"]
    assert distilled["images"].shape == (n, 3, 32, 32)
    shapes = {k: tuple(v.shape) for k, v in distilled.tensors.items() if k.startswith("simil")}
    assert shapes == {  # the preset's rank shapes the learned low-rank similarity
        "similarity.diagonal": (n,),
        "similarity.left": (n, rank),
        "similarity.right": (n, rank),
    }
