import json
from pathlib import Path

import pytest

from lors_distill.core.config import parse_section
from lors_distill.core.ingest import ingest
from lors_distill.core.sources import (
    BadRecordError,
    BadRecordLog,
    hash_split,
    read_jsonl,
    read_karpathy,
    resolve_images,
)
from tests.folders import captions_for, make_jsonl_folder, make_karpathy_folder, write_image
from tests.params import base_params


def folder_params(source: str, root: Path, **overrides) -> object:
    params = base_params()["ingestion"]
    params.update(source=source, root=str(root), image_size=8, num_workers=2)
    params["jsonl"].update(val_images=4, test_images=5)
    params.update(overrides)
    return parse_section("ingestion", params)


def jsonl_line(image: str, captions=None) -> str:
    return json.dumps({"image": image, "captions": captions or ["a caption"]})


# ------------------------------------------------------------------ jsonl


def test_jsonl_ingest_splits_and_tables(tmp_path):
    make_jsonl_folder(tmp_path, count=30)
    data = ingest(folder_params("jsonl", tmp_path))
    sizes = {split: images.shape[0] for split, images in data.images.items()}
    assert sizes == {"train": 21, "val": 4, "test": 5}
    assert data.images["train"].shape[1:] == (3, 8, 8)
    table = data.captions
    assert len(table) == 30 * 5
    # every image appears in exactly one split
    assert table.groupby("image_id")["split"].nunique().max() == 1
    # image_index points into that split's tensor, captions stay with their image
    row = table[(table.split == "val") & (table.image_index == 2)].iloc[3]
    index = int(row.image_id.split("_")[1].split(".")[0])
    assert row.caption == captions_for(index)[3]
    assert data.report["images"] == sizes
    assert data.report["bad_records"] == {"total": 0}


def test_hash_split_is_deterministic_and_order_free():
    names = [f"images/{i}.jpg" for i in range(50)]
    first = hash_split(names, 5, 10, None)
    assert first.count("test") == 10
    assert first.count("val") == 5
    assert first.count("train") == 35
    reordered = hash_split(names[::-1], 5, 10, None)[::-1]
    assert reordered == first
    # depends on the file name only, not the folder
    assert hash_split([n.replace("images/", "other/") for n in names], 5, 10, None) == first
    assert hash_split(names, 5, 10, None, salt="x") != first
    limited = hash_split(names, 5, 10, 20)
    assert limited.count("train") == 20
    assert limited.count(None) == 15
    with pytest.raises(ValueError, match="val_images"):
        hash_split(names[:10], 5, 10, None)


@pytest.mark.parametrize(
    ("line", "reason", "message"),
    [
        ('{"image": "images/img_001.jpg", "captions": [', "malformed_json", "malformed JSON"),
        (jsonl_line("images/img_001.jpg", [" ", ""]), "empty_captions", "empty caption list"),
        ('{"image": "images/img_001.jpg", "captions": []}', "empty_captions", "empty caption"),
        ('{"image": "images/img_001.jpg", "captions": "one"}', "malformed_record", "list of"),
        ('{"captions": ["x"]}', "malformed_record", "'image'"),
        (jsonl_line("images/nope.jpg"), "missing_image", "'images/nope.jpg' not found"),
        (jsonl_line("../outside.jpg"), "path_escapes_root", "escapes the data root"),
        (jsonl_line("/etc/passwd"), "path_escapes_root", "escapes the data root"),
        (jsonl_line("images/img_000.jpg"), "duplicate_image", "first at"),
        (jsonl_line("images/broken.jpg"), "undecodable_image", "cannot decode"),
    ],
)
def test_jsonl_bad_records(tmp_path, line, reason, message):
    root = tmp_path / "data"
    good = [jsonl_line(f"images/img_{i:03d}.jpg") for i in range(20)]
    make_jsonl_folder(root, count=20, lines=[*good[:7], line, *good[7:]])
    (root / "images" / "broken.jpg").write_bytes(b"\xff\xd8 broken jpeg")
    write_image(tmp_path / "outside.jpg", 0)
    # error policy: the message names the file and line; nothing is returned
    with pytest.raises(BadRecordError, match=message) as info:
        ingest(folder_params("jsonl", root))
    assert f"{root / 'captions.jsonl'} line 8" in str(info.value)
    assert "on_bad_record: skip" in str(info.value)
    # skip policy: dropped and counted
    data = ingest(folder_params("jsonl", root, on_bad_record="skip"))
    assert data.report["bad_records"] == {"total": 1, reason: 1}
    assert "line 8" in data.report["bad_record_examples"][0]
    assert sum(t.shape[0] for t in data.images.values()) == 20


def test_jsonl_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"captions\.jsonl not found"):
        read_jsonl(tmp_path / "captions.jsonl", BadRecordLog("error"))


def test_resolve_images_keeps_order(tmp_path):
    make_jsonl_folder(tmp_path, count=5)
    records = read_jsonl(tmp_path / "captions.jsonl", BadRecordLog("error"))
    kept = resolve_images(records, tmp_path, tmp_path, BadRecordLog("error"))
    assert [r.image for r, _ in kept] == [f"images/img_{i:03d}.jpg" for i in range(5)]
    assert all(path.is_absolute() and path.is_file() for _, path in kept)


# ------------------------------------------------------------------ karpathy


def test_karpathy_ingest_uses_given_splits(tmp_path):
    make_karpathy_folder(tmp_path, {"train": 6, "val": 3, "test": 2})
    data = ingest(folder_params("karpathy", tmp_path))
    assert {s: t.shape[0] for s, t in data.images.items()} == {"train": 6, "val": 3, "test": 2}
    train = data.captions[data.captions.split == "train"]
    assert len(train) == 30  # 5 caption entries per train image, grouped by image
    assert train.groupby("image_index").size().tolist() == [5] * 6
    assert data.captions[data.captions.split == "test"].image_id.tolist()[0] == (
        "flickr30k-images/1009.jpg"
    )


def test_karpathy_malformed_file_names_line(tmp_path):
    make_karpathy_folder(tmp_path)
    (tmp_path / "flickr30k_val.json").write_text('[\n{"image": "a.jpg",\n "caption": [}\n]')
    with pytest.raises(BadRecordError, match=r"flickr30k_val\.json line 3 column"):
        read_karpathy(
            tmp_path,
            {s: f"flickr30k_{s}.json" for s in ("train", "val", "test")},
            BadRecordLog("skip"),  # a whole unreadable file cannot be skipped
        )


def test_karpathy_bad_entries(tmp_path):
    make_karpathy_folder(tmp_path, {"train": 4, "val": 3, "test": 3})
    test_file = tmp_path / "flickr30k_test.json"
    entries = json.loads(test_file.read_text())
    entries[1]["caption"] = []
    entries.append({"image": "flickr30k-images/1000.jpg", "caption": ["dup of a train image"]})
    test_file.write_text(json.dumps(entries))
    with pytest.raises(BadRecordError, match=r"flickr30k_test\.json entry 1: empty caption list"):
        ingest(folder_params("karpathy", tmp_path))
    data = ingest(folder_params("karpathy", tmp_path, on_bad_record="skip"))
    assert data.report["bad_records"] == {"total": 2, "duplicate_image": 1, "empty_captions": 1}
    assert data.images["test"].shape[0] == 2


def test_karpathy_missing_annotation(tmp_path):
    with pytest.raises(FileNotFoundError, match="flickr30k_train.json not found"):
        ingest(folder_params("karpathy", tmp_path))


# ------------------------------------------------------------------ encodings, limits, split sizes


def test_jsonl_with_a_byte_order_mark(tmp_path):
    make_jsonl_folder(tmp_path, count=20)
    path = tmp_path / "captions.jsonl"
    path.write_text(path.read_text(encoding="utf-8"), encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    data = ingest(folder_params("jsonl", tmp_path))
    assert data.report["bad_records"] == {"total": 0}
    assert "images/img_000.jpg" in data.captions.image_id.tolist()  # the first line is kept


def test_jsonl_invalid_utf8_names_the_line_and_is_skippable(tmp_path):
    make_jsonl_folder(tmp_path, count=20)
    path = tmp_path / "captions.jsonl"
    lines = path.read_bytes().split(b"\n")
    lines[5] = lines[5].replace(b"caption 0", b"caption \xff\xfe 0")
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(BadRecordError, match=r"captions\.jsonl line 6: not valid UTF-8 at byte"):
        ingest(folder_params("jsonl", tmp_path))
    data = ingest(folder_params("jsonl", tmp_path, on_bad_record="skip"))
    assert data.report["bad_records"] == {"total": 1, "invalid_utf8": 1}
    assert "images/img_005.jpg" not in data.captions.image_id.tolist()


def test_karpathy_bom_and_invalid_utf8_entries(tmp_path):
    make_karpathy_folder(tmp_path, {"train": 4, "val": 3, "test": 3})
    val = tmp_path / "flickr30k_val.json"
    val.write_bytes(b"\xef\xbb\xbf" + val.read_bytes())  # a BOM is accepted
    test = tmp_path / "flickr30k_test.json"
    test.write_bytes(test.read_bytes().replace(b"photo number 8 caption 2", b"photo \xe9 8", 1))
    with pytest.raises(BadRecordError, match=r"flickr30k_test\.json entry 1: text that is not"):
        ingest(folder_params("karpathy", tmp_path))
    data = ingest(folder_params("karpathy", tmp_path, on_bad_record="skip"))
    assert data.report["bad_records"] == {"total": 1, "invalid_utf8": 1}
    assert {s: t.shape[0] for s, t in data.images.items()} == {"train": 4, "val": 3, "test": 2}


def test_empty_captions_in_a_list_are_counted(tmp_path):
    root = tmp_path / "data"
    lines = [jsonl_line(f"images/img_{i:03d}.jpg") for i in range(20)]
    lines[3] = jsonl_line("images/img_003.jpg", ["a dog", "", "  ", "a cat"])
    make_jsonl_folder(root, count=20, lines=lines)
    data = ingest(folder_params("jsonl", root))
    assert data.report["empty_captions_dropped"] == 2
    assert data.report["bad_records"] == {"total": 0}
    kept = data.captions[data.captions.image_id == "images/img_003.jpg"].caption.tolist()
    assert kept == ["a dog", "a cat"]


def test_decompression_bomb_is_a_bad_record(tmp_path):
    from tests.core.test_images import write_png

    root = tmp_path / "data"
    make_jsonl_folder(root, count=20)
    write_png(root / "images" / "img_004.jpg", 20000, 20000, 1, 0, b"\x00" * 10)
    with pytest.raises(BadRecordError, match=r"captions\.jsonl line 5: image .*img_004\.jpg"):
        ingest(folder_params("jsonl", root))
    data = ingest(folder_params("jsonl", root, on_bad_record="skip"))
    assert data.report["bad_records"] == {"total": 1, "too_many_pixels": 1}


def test_skip_keeps_the_requested_split_sizes(tmp_path):
    root = tmp_path / "data"
    make_jsonl_folder(root, count=30)
    clean = ingest(folder_params("jsonl", root))
    names = [f"images/img_{i:03d}.jpg" for i in range(30)]
    expected = dict(zip(names, hash_split(names, 4, 5, None), strict=True))
    for split in ("train", "val", "test"):  # without bad images: exactly hash_split
        ids = clean.captions[clean.captions.split == split].image_id.unique().tolist()
        assert sorted(ids) == sorted(n for n in names if expected[n] == split)
        assert ids == sorted(ids)  # each split in file order
    broken = [n for n in names if expected[n] == "test"][:2]
    for name in broken:
        (root / name).write_bytes(b"not an image")
    data = ingest(folder_params("jsonl", root, on_bad_record="skip"))
    sizes = {split: images.shape[0] for split, images in data.images.items()}
    assert sizes == {"train": 19, "val": 4, "test": 5}  # test refilled in hash order
    test_ids = set(data.captions[data.captions.split == "test"].image_id)
    assert test_ids >= {n for n in names if expected[n] == "test"} - set(broken)
    assert not test_ids & set(broken)
    assert data.report["bad_records"] == {"total": 2, "undecodable_image": 2}
    # with a train limit the requested sizes hold too
    limited = ingest(
        folder_params(
            "jsonl",
            root,
            on_bad_record="skip",
            jsonl={
                **base_params()["ingestion"]["jsonl"],
                "val_images": 4,
                "test_images": 5,
                "train_images": 10,
            },
        )
    )
    assert {s: t.shape[0] for s, t in limited.images.items()} == {"train": 10, "val": 4, "test": 5}


def test_karpathy_wrong_schema_and_missing_keys(tmp_path):
    make_karpathy_folder(tmp_path, {"train": 4, "val": 3, "test": 3})
    files = {s: f"flickr30k_{s}.json" for s in ("train", "val", "test")}
    val = tmp_path / "flickr30k_val.json"
    original = val.read_text()
    val.write_text(json.dumps({"images": json.loads(original)}))  # an object, not a list
    with pytest.raises(BadRecordError, match=r"flickr30k_val\.json: expected a JSON list"):
        read_karpathy(tmp_path, files, BadRecordLog("skip"))  # the whole file: not skippable
    val.write_text(original)
    train = tmp_path / "flickr30k_train.json"
    entries = json.loads(train.read_text())
    del entries[0]["image_id"]  # not needed: train captions are grouped by image path
    entries[1] = {"caption": "no image key", "image_id": "1"}
    entries[2] = ["not", "an", "object"]
    del entries[6]["caption"]
    train.write_text(json.dumps(entries))
    with pytest.raises(BadRecordError, match=r"flickr30k_train\.json entry 1: expected an object"):
        read_karpathy(tmp_path, files, BadRecordLog("error"))
    log = BadRecordLog("skip")
    records = read_karpathy(tmp_path, files, log)
    assert dict(log.counts) == {"malformed_record": 2, "empty_captions": 1}
    first = next(r for r in records if r.image == "flickr30k-images/1000.jpg")
    assert first.captions == tuple(captions_for(0)[i] for i in (0, 3, 4))  # entries 1, 2 gone
    assert next(r for r in records if r.image == "flickr30k-images/1001.jpg").captions == tuple(
        c
        for i, c in enumerate(captions_for(1))
        if i != 1  # entry 6 had no caption
    )
