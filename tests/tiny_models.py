"""Tiny random-init models the tests build and save themselves (nothing downloads)."""

from __future__ import annotations

import json

import pytest
import torch

TINY_CLIP = "tiny-clip-lors-test"


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    import open_clip
    import open_clip.factory as oc_factory

    root = tmp_path_factory.mktemp("tiny_clip")
    cfg = {
        "embed_dim": 32,
        # head_width is needed: the default (64) would give width // 64 == 0 heads.
        "vision_cfg": {
            "image_size": 32,
            "layers": 1,
            "width": 32,
            "patch_size": 16,
            "head_width": 16,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 1,
        },
    }
    cfg_path = root / f"{TINY_CLIP}.json"
    cfg_path.write_text(json.dumps(cfg))
    open_clip.add_model_config(cfg_path)
    assert TINY_CLIP in open_clip.list_models()

    torch.manual_seed(123)
    model = open_clip.create_model(TINY_CLIP).eval()
    ckpt = root / "tiny_clip.pt"
    torch.save(model.state_dict(), ckpt)
    yield model, ckpt
    # undo the registry change (private globals; skip silently if they move)
    paths = getattr(oc_factory, "_MODEL_CONFIG_PATHS", None)
    if isinstance(paths, list) and cfg_path in paths:
        paths.remove(cfg_path)
    getattr(oc_factory, "_MODEL_CONFIGS", {}).pop(TINY_CLIP, None)


def save_tiny_bert(folder, tokens: list[str], *, fast: bool = False):
    """A 2-layer, 32-d random BERT whose vocabulary is the special tokens plus ``tokens``, saved
    with its tokenizer in ``folder`` like a hub model (for ``hf:<folder>``). Returns the
    tokenizer, for the caller's own checks."""
    from pathlib import Path

    from transformers import BertConfig, BertModel, BertTokenizer, BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *tokens]
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n")
    # transformers 5: the vocab file goes in as `vocab=` (`vocab_file=` is silently ignored)
    tokenizer = (BertTokenizerFast if fast else BertTokenizer)(vocab=str(vocab_file))
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return tokenizer
