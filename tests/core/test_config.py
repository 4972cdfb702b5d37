from pathlib import Path

import pytest

from lors_distill.core.config import (
    SECTIONS,
    ParameterError,
    parse_section,
    validate_parameters,
)
from tests.params import base_params


@pytest.mark.parametrize("env", [None, "test", "flickr8k"])
def test_shipped_parameters_validate(env):
    parsed = validate_parameters(base_params(env))
    assert set(parsed) == set(SECTIONS)


def test_base_parameters_validate():
    parsed = validate_parameters(base_params())
    assert parsed["ingestion"].source == "scenes"
    assert parsed["ingestion"].scenes.test_images == 1000
    assert parsed["features"].text_encoder == "minilm"


@pytest.mark.parametrize(
    ("section", "key", "value", "fragment"),
    [
        ("ingestion", "image_size", 0, "ingestion.image_size"),
        ("ingestion", "image_size", "big", "ingestion.image_size"),
        ("ingestion", "source", "coco", "ingestion.source"),
        ("ingestion", "resize", "stretch", "ingestion.resize"),
        ("ingestion", "on_bad_record", "ignore", "ingestion.on_bad_record"),
        ("ingestion", "imagesize", 32, "ingestion.imagesize"),
        ("features", "batch_size", -1, "features.batch_size"),
        ("features", "pooling", "max", "features.pooling"),
        ("features", "text_encoder", "clip:ViT-B-32", "features.text_encoder"),
        ("features", "text_encoder", "hf:", "features.text_encoder"),
        ("distillation", "loss", "hinge", "distillation.loss"),
        ("distillation", "sim_type", "dense", "distillation.sim_type"),
        ("evaluation", "loss", "hinge", "evaluation.loss"),
    ],
)
def test_bad_values_name_the_parameter(section, key, value, fragment):
    params = base_params()
    params[section][key] = value
    with pytest.raises(ParameterError, match=fragment.replace(".", r"\.")) as info:
        validate_parameters(params)
    assert f"parameters_{section}.yml" in str(info.value)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("model", "temperature", float("inf")),
        ("distillation", "alpha", float("nan")),
        ("distillation", "lr_images", float("inf")),
        ("evaluation", "weight_decay", float("nan")),
    ],
)
def test_inf_and_nan_are_refused_naming_the_parameter(section, key, value):
    params = base_params()
    params[section][key] = value
    with pytest.raises(ParameterError, match=rf"{section}\.{key}.*finite"):
        validate_parameters(params)


def test_a_misspelt_section_is_an_error_with_a_suggestion():
    params = base_params()
    params["distilation"] = {"num_pairs": 5}  # --params distilation.num_pairs=5
    with pytest.raises(ParameterError, match=r"distilation: unknown parameter section") as info:
        validate_parameters(params)
    assert "did you mean 'distillation'?" in str(info.value)
    params = base_params()
    params["completely_else"] = 1
    with pytest.raises(ParameterError, match="the sections are ingestion, features") as info:
        validate_parameters(params)
    assert "did you mean" not in str(info.value)
    # the paper environments' templating keys are not sections
    params = base_params()
    params["_presets"] = {100: {}}
    validate_parameters(params)


def test_nested_bad_value_names_full_path():
    params = base_params()
    params["ingestion"]["scenes"]["train_images"] = 0
    with pytest.raises(ParameterError, match=r"ingestion\.scenes\.train_images"):
        parse_section("ingestion", params["ingestion"])


def test_folder_source_requires_root():
    params = base_params()["ingestion"]
    params["source"] = "jsonl"
    with pytest.raises(ParameterError, match="ingestion.root"):
        parse_section("ingestion", params)
    params["root"] = "/data/flickr"
    assert parse_section("ingestion", params).root_path == Path("/data/flickr")


def test_all_errors_reported_together():
    params = base_params()
    params["ingestion"]["image_size"] = -3
    params["features"]["batch_size"] = 0
    with pytest.raises(ParameterError) as info:
        validate_parameters(params)
    assert "ingestion.image_size" in str(info.value)
    assert "features.batch_size" in str(info.value)


def test_registry_backed_names_fail_naming_the_key_and_the_choices():
    params = base_params()
    bad = [
        ("features", {"clean_captions": "yes"}, "features.clean_captions", "none, punctuation"),
        ("model", {"normalization": "cifar"}, "model.normalization", "encoder, clip"),
    ]
    for section, change, key, choices in bad:
        with pytest.raises(ParameterError, match=key) as caught:
            parse_section(section, {**params[section], **change})
        assert choices in str(caught.value)
    augment = {**params["experts"]["augment"], "rand_augment_style": "auto"}
    with pytest.raises(ParameterError, match="experts.augment.rand_augment_style"):
        parse_section("experts", {**params["experts"], "augment": augment})
    convnet = {**params["model"]["convnet"], "norm": "batchnorm"}
    with pytest.raises(ParameterError, match="model.convnet.norm") as caught:
        parse_section("model", {**params["model"], "convnet": convnet})
    assert "instancenorm, layernorm, none" in str(caught.value)


def test_a_registered_convnet_norm_validates_and_builds(monkeypatch):
    from torch import nn

    from lors_distill.core import models

    monkeypatch.setitem(
        models.NORMS, "groupnorm2", lambda channels, size: nn.GroupNorm(2, channels)
    )
    params = base_params()
    model = parse_section(
        "model", {**params["model"], "convnet": {"width": 4, "depth": 1, "norm": "groupnorm2"}}
    )
    net = models.ConvNet(model.convnet, 8)
    assert any(isinstance(layer, nn.GroupNorm) and layer.num_groups == 2 for layer in net.modules())


def test_baseline_overrides_take_only_outer_rates_and_the_expert_window():
    """``baselines.<method>`` may change a baseline's outer-loop rates and the part of the
    expert trajectories it matches, nothing that would give it another budget, iteration count
    or inner loop than LoRS's."""
    params = base_params()
    params["baselines"]["mtt_vl"] = {"lr_images": 100.0, "momentum": 0.9, "expert_epochs": 2}
    params["baselines"]["tesla_vl"] = {}
    parsed = validate_parameters(params)["baselines"]
    assert parsed.mtt_vl.applied() == {"lr_images": 100.0, "momentum": 0.9, "expert_epochs": 2}
    assert parsed.tesla_vl.applied() == {}
    for key, value in [
        ("iterations", 500),
        ("lr_sim", 1.0),
        ("num_pairs", 10),
        ("syn_steps", 4),
        ("mini_batch_size", 50),
    ]:
        params = base_params()
        params["baselines"]["tesla_vl"] = {key: value}
        with pytest.raises(ParameterError, match=rf"baselines\.tesla_vl\.{key}"):
            validate_parameters(params)
    params = base_params()
    params["baselines"]["tesla_vl"] = {"lr_texts": -1.0}
    with pytest.raises(ParameterError, match=r"baselines\.tesla_vl\.lr_texts"):
        validate_parameters(params)


def test_an_expert_window_beyond_the_experts_snapshots_fails_at_start():
    """Matching from start epoch ``max_start_epoch - 1`` for ``expert_epochs`` needs that many
    expert snapshots, for LoRS and for a baseline with its own window; both are named."""
    params = base_params()
    epochs = params["experts"]["epochs"]
    params["baselines"]["mtt_vl"] = {"max_start_epoch": epochs, "expert_epochs": 2}
    with pytest.raises(ParameterError, match=r"baselines\.mtt_vl: max_start_epoch") as caught:
        validate_parameters(params)
    assert f"exceeds experts.epochs ({epochs})" in str(caught.value)
    assert "distillation:" not in str(caught.value)
    params = base_params()
    params["distillation"]["max_start_epoch"] = epochs + 1
    params["baselines"]["tesla_vl"] = {}
    with pytest.raises(ParameterError) as caught:
        validate_parameters(params)
    message = str(caught.value)
    assert "distillation: max_start_epoch" in message
    # a baseline that takes distillation's window is named with it
    assert "baselines.tesla_vl: max_start_epoch" in message
    params = base_params()
    params["baselines"]["mtt_vl"] = {"max_start_epoch": epochs, "expert_epochs": 1}
    validate_parameters(params)  # the last snapshot exactly


def test_the_flickr8k_environment_tunes_nothing_on_flickr8k():
    """Its former outer rates, mini-batch and iteration count were read off its test split; it
    now runs every method with the built-in defaults (chosen on the built-in validation split),
    so its table is a held-out check. Only data and model size differ."""
    flickr8k = validate_parameters(base_params("flickr8k"))
    base = validate_parameters(base_params())
    for section in ("distillation", "baselines", "experts", "evaluation"):
        assert flickr8k[section] == base[section], section
    assert flickr8k["ingestion"].source == "jsonl"
    assert flickr8k["model"].convnet.depth == base["model"].convnet.depth + 1


def test_loss_and_similarity_names_come_from_their_registries(monkeypatch):
    from lors_distill.core import losses, similarity

    params = base_params()
    params["distillation"]["loss"] = "hinge"
    params["distillation"]["sim_type"] = "banded"
    with pytest.raises(ParameterError, match=r"distillation\.loss.*use one of wbce, bce"):
        validate_parameters(params)
    monkeypatch.setitem(losses.SOFT_LOSSES, "hinge", losses.SOFT_LOSSES["mse"])
    monkeypatch.setitem(similarity.SIMILARITIES, "banded", similarity.SIMILARITIES["full"])
    parsed = validate_parameters(params)["distillation"]
    assert (parsed.loss, parsed.sim_type) == ("hinge", "banded")


def test_a_registered_text_encoder_validates(monkeypatch):
    from lors_distill.core import text_encoders

    params = base_params()
    params["features"]["text_encoder"] = "bow:64"
    with pytest.raises(ParameterError, match=r"features\.text_encoder.*'minilm', 'hf:"):
        validate_parameters(params)
    monkeypatch.setattr(text_encoders, "_TEXT_ENCODERS", dict(text_encoders._TEXT_ENCODERS))
    text_encoders.register_text_encoder("bow", usage="bow:<dim>")(lambda spec, arg, opts: None)
    assert validate_parameters(params)["features"].text_encoder == "bow:64"


def test_a_registered_dataset_source_validates(monkeypatch):
    from lors_distill.core import ingest

    params = base_params()
    params["ingestion"].update(source="webdataset", root="/data/shards")
    with pytest.raises(ParameterError, match=r"ingestion\.source.*use one of scenes, jsonl"):
        validate_parameters(params)
    monkeypatch.setitem(ingest.SOURCES, "webdataset", ingest.SOURCES["jsonl"])
    assert validate_parameters(params)["ingestion"].source == "webdataset"


# ------------------------------------------------------------------ options of a registry entry


def test_a_loss_takes_its_options_and_a_bare_name_stays_a_name():
    import torch

    from lors_distill.core.losses import kl, soft_loss

    params = base_params()
    assert validate_parameters(params)["distillation"].loss == "wbce"  # dumps as before
    params["distillation"]["loss"] = {"name": "kl", "sharpness": 5}
    loss = validate_parameters(params)["distillation"].loss
    assert loss == {"name": "kl", "sharpness": 5.0}
    logits, targets = torch.randn(4, 4), torch.rand(4, 4)
    chosen = soft_loss(loss)(logits, targets)
    assert torch.equal(chosen, kl(logits, targets, sharpness=5.0))
    assert not torch.equal(chosen, kl(logits, targets))  # the option is used
    assert torch.equal(soft_loss({"name": "kl"})(logits, targets), kl(logits, targets, 10.0))


@pytest.mark.parametrize(
    ("section", "key", "value", "fragment"),
    [
        ("distillation", "loss", {"name": "kl", "sharpness": 0}, r"sharpness: .*greater than 0"),
        ("evaluation", "loss", {"name": "kl", "sharpness": "x"}, r"sharpness: .*valid number"),
        ("distillation", "loss", {"name": "kl", "sharp": 5}, r"sharp: .*options of 'kl': sharp"),
        ("distillation", "loss", {"name": "wbce", "sharpness": 5}, r"options of 'wbce': none"),
        ("distillation", "loss", {"sharpness": 5}, r"mapping of 'name' and its options"),
        ("distillation", "loss", 5, r"give a name \(one of wbce, bce"),
        ("distillation", "loss", {"name": "hinge"}, r"use one of wbce, bce"),
        (
            "features",
            "clean_captions",
            {"name": "blip", "max_words": -1},
            r"max_words: .*greater than or equal to 0",
        ),
        ("features", "clean_captions", {"name": "none", "max_words": 5}, r"of 'none': none"),
    ],
)
def test_bad_options_fail_at_start_naming_the_parameter_and_the_option(
    section, key, value, fragment
):
    params = base_params()
    params[section][key] = value
    with pytest.raises(ParameterError, match=rf"{section}\.{key}.*{fragment}"):
        validate_parameters(params)


def test_a_cleaning_takes_its_word_limit(monkeypatch):
    from lors_distill.core import text_encoders
    from lors_distill.core.schema import chosen

    params = base_params()
    params["features"]["clean_captions"] = {"name": "blip", "max_words": 3}
    spec = validate_parameters(params)["features"].clean_captions
    clean = chosen(spec, text_encoders.CAPTION_CLEANERS)
    assert clean("A Dog, running!!  on the BEACH.") == "a dog, running"
    assert chosen("blip", text_encoders.CAPTION_CLEANERS)(" ".join(["w"] * 40)) == " ".join(
        ["w"] * text_encoders.MAX_WORDS
    )

    # an option of a cleaning registered by a user validates like a shipped one's
    def first(text: str, words: int = 1) -> str:
        return " ".join(text.split()[:words])

    monkeypatch.setitem(text_encoders.CAPTION_CLEANERS, "first", first)
    params["features"]["clean_captions"] = {"name": "first", "words": 2}
    assert validate_parameters(params)["features"].clean_captions == {"name": "first", "words": 2}
