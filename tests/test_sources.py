"""Dataset sources: downloads from a loopback HTTP server (checksums, a transfer cut half-way and
resumed, 404), safe extraction, every real dataset's own layout, splits, and bad images."""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading
import zipfile
from pathlib import Path
from typing import Iterator

import polars as pl
import pytest

from pipeline.config import ConfigError, DatasetCfg, DownloadCfg
from pipeline.lib.images import ImageError
from pipeline.sources import datasets, download as dl, formats
from tests import real_formats as rf


# ------------------------------------------------------------------------------ a loopback file server
class Server:
    """Serves `files` on 127.0.0.1 with Range support; `cut[name] = n` makes the next GET of that file
    announce its full length but close the connection after n bytes (once)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                name = self.path.lstrip("/")
                server.requests.append((name, self.headers.get("Range")))
                if name not in server.files:
                    self.send_error(404, "Not Found")
                    return
                data, start = server.files[name], 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_error(416, "Range Not Satisfiable")
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if name in server.cut:
                    body = body[:server.cut.pop(name)]
                    self.close_connection = True
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def no_wait(_: float) -> None:
    pass


PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


# ------------------------------------------------------------------------------ download
def test_download_checks_the_sha256_and_records_it(server: Server, tmp_path: Path) -> None:
    server.files["data.bin"] = PAYLOAD
    got = dl.download(server.url("data.bin"), tmp_path / "data.bin", PAYLOAD_SHA, len(PAYLOAD), progress=False)
    assert got.pinned and got.sha256 == PAYLOAD_SHA and (tmp_path / "data.bin").read_bytes() == PAYLOAD
    assert (tmp_path / "data.bin.sha256").read_text().split()[0] == PAYLOAD_SHA
    # a second call reuses the verified file: no request
    before = len(server.requests)
    dl.download(server.url("data.bin"), tmp_path / "data.bin", PAYLOAD_SHA, progress=False)
    assert len(server.requests) == before


def test_checksum_mismatch_leaves_nothing_behind(server: Server, tmp_path: Path) -> None:
    server.files["data.bin"] = PAYLOAD
    wrong = "0" * 64
    with pytest.raises(dl.ChecksumError, match=r"SHA-256 mismatch.*expected 0{64}, got " + PAYLOAD_SHA):
        dl.download(server.url("data.bin"), tmp_path / "data.bin", wrong, progress=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(dl.ChecksumError, match="expected 10 bytes"):
        dl.download(server.url("data.bin"), tmp_path / "data.bin", size=10, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_transfer_cut_half_way_resumes_with_a_range_request(server: Server, tmp_path: Path) -> None:
    server.files["data.bin"] = PAYLOAD
    server.cut["data.bin"] = len(PAYLOAD) // 2
    got = dl.download(server.url("data.bin"), tmp_path / "data.bin", PAYLOAD_SHA, progress=False, sleep=no_wait)
    assert got.sha256 == PAYLOAD_SHA and (tmp_path / "data.bin").read_bytes() == PAYLOAD
    assert server.requests == [("data.bin", None), ("data.bin", f"bytes={len(PAYLOAD) // 2}-")]
    assert not (tmp_path / "data.bin.part").exists()


def test_an_interrupted_run_keeps_its_part_and_the_next_run_resumes_it(server: Server, tmp_path: Path) -> None:
    server.files["data.bin"] = PAYLOAD
    server.cut["data.bin"] = 300_000
    with pytest.raises(dl.DownloadError, match="after 1 tries.*next run resumes"):
        dl.download(server.url("data.bin"), tmp_path / "data.bin", PAYLOAD_SHA, retries=0, progress=False)
    assert (tmp_path / "data.bin.part").stat().st_size == 300_000 and not (tmp_path / "data.bin").exists()
    dl.download(server.url("data.bin"), tmp_path / "data.bin", PAYLOAD_SHA, retries=0, progress=False)
    assert server.requests[-1] == ("data.bin", "bytes=300000-")
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_404_fails_at_once_with_the_url(server: Server, tmp_path: Path) -> None:
    with pytest.raises(dl.DownloadError, match=r"cannot download http://127\.0\.0\.1:\d+/missing\.zip: HTTP 404"):
        dl.download(server.url("missing.zip"), tmp_path / "missing.zip", retries=3, progress=False, sleep=no_wait)
    assert len(server.requests) == 1  # a 4xx is final: no retries
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_host_is_retried_then_explained(tmp_path: Path) -> None:
    waits: list[float] = []
    with pytest.raises(dl.DownloadError, match="after 3 tries"):
        dl.download("http://127.0.0.1:9/nothing.zip", tmp_path / "nothing.zip", retries=2, progress=False,
                    sleep=waits.append)
    assert waits == [1.0, 2.0]  # exponential back-off


# ------------------------------------------------------------------------------ extraction
def test_extract_zip_and_tar_and_refuse_escaping_members(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("top/a.txt", "a")
    (tmp_path / "ok.zip").write_bytes(buf.getvalue())
    assert (dl.extract(tmp_path / "ok.zip", tmp_path / "out_zip") / "top" / "a.txt").read_text() == "a"
    with tarfile.open(tmp_path / "ok.tgz", "w:gz") as tf:
        tf.add(tmp_path / "ok.zip", arcname="inner/ok.zip")
    assert (dl.extract(tmp_path / "ok.tgz", tmp_path / "out_tar") / "inner" / "ok.zip").is_file()
    with tarfile.open(tmp_path / "evil.tar", "w") as tf:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(dl.DownloadError, match="unsafe member"):
        dl.extract(tmp_path / "evil.tar", tmp_path / "out_evil")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "out_evil").exists()


# ------------------------------------------------------------------------------ the datasets' own layouts
def labels_of(frame: pl.DataFrame, split: str) -> set[int]:
    return set(frame.filter(pl.col("split") == split)["label"].to_list())


@pytest.mark.parametrize("name, make, source, splits", [
    ("sop", rf.make_sop, "sop", {"train", "val", "test"}),
    ("cars", rf.make_cars196, "cars196", {"train", "val", "test"}),
    ("inshop", rf.make_inshop, "inshop", {"train", "val", "query", "index"}),
    ("inat", rf.make_inat2018, "inat2018", {"train", "val", "test"}),
    ("food2k", rf.make_food2k, "food2k", {"train", "val", "test"}),
    ("imagenet", rf.make_imagenet, "imagenet", {"train", "val", "test"}),
])
def test_each_fine_grained_layout_gives_class_disjoint_splits(name, make, source, splits, tmp_path: Path) -> None:
    make(tmp_path / name)
    frame, meta = datasets.build_manifest(name, DatasetCfg(source=source, root=str(tmp_path / name)))
    assert set(frame["split"]) == splits
    assert set(frame.columns) == {"dataset", "split", "subset", "label", "class_name", "path", "image", "captions"}
    for path in frame["path"].to_list()[:5]:
        assert (Path(meta["root"]) / path).is_file()
    if name != "imagenet":  # metric-learning datasets: open-set, no class shared by train, val and test
        test = labels_of(frame, "test") | labels_of(frame, "query")
        assert not labels_of(frame, "train") & labels_of(frame, "val")
        assert not (labels_of(frame, "train") | labels_of(frame, "val")) & test
    else:  # ImageNet: 80/20 random split of train (same classes), official val as test
        n_train, n_val = (frame["split"] == "train").sum(), (frame["split"] == "val").sum()
        assert n_train == 4 * n_val and labels_of(frame, "test") == labels_of(frame, "train")


def test_cars196_is_split_by_class_id_and_named(tmp_path: Path) -> None:
    rf.make_cars196(tmp_path)
    frame, _ = datasets.build_manifest("cars", DatasetCfg(source="cars196", root=str(tmp_path)))
    assert labels_of(frame, "test") == {99, 100, 101, 102}
    assert max(labels_of(frame, "train") | labels_of(frame, "val")) <= 98
    assert frame.filter(pl.col("label") == 99)["class_name"][0] == "Brand Model 99 2012"


def test_imagenet_flat_val_uses_the_solution_file_and_names_classes(tmp_path: Path) -> None:
    rf.make_imagenet(tmp_path, flat_val=True)
    listing = formats.read_imagenet(tmp_path, seed=42)
    test = listing.frame.filter(pl.col("split") == "test")
    assert test.height == 18 and test["class_name"][0] == "tench"
    again = formats.read_imagenet(tmp_path, seed=42).frame
    assert again["path"].to_list() == listing.frame["path"].to_list()  # the seeded shuffle is stable


@pytest.mark.parametrize("kind", ["flickr30k", "coco"])
def test_karpathy_captions_keep_the_test_split(kind: str, tmp_path: Path) -> None:
    rf.make_karpathy(tmp_path, kind)
    frame, meta = datasets.build_manifest(kind, DatasetCfg(source=kind, root=str(tmp_path), keep_splits=["test"]))
    assert set(frame["split"]) == {"test"} and frame.height == 6
    assert all(len(c) == 5 for c in frame["captions"].to_list())
    assert frame["label"].n_unique() == frame.height  # every image is its own class
    assert (Path(meta["root"]) / frame["path"][0]).is_file()


def test_user_folder_and_csv(tmp_path: Path) -> None:
    for c in range(6):
        for i in range(3):
            rf.image(tmp_path / "mine" / f"class_{c}" / f"{i}.png", c, fmt="PNG")
    frame, _ = datasets.build_manifest("mine", DatasetCfg(source="folder", root=str(tmp_path / "mine")))
    assert {"train", "val", "test"} <= set(frame["split"]) and frame.height == 18
    assert frame["class_name"][0].startswith("class ")
    rows = ["path,label,split,caption"] + [f"class_{c}/{i}.png,class_{c},{'test' if c > 2 else 'train'},a|b"
                                          for c in range(6) for i in range(3)]
    (tmp_path / "mine" / "list.csv").write_text("\n".join(rows) + "\n")
    frame, _ = datasets.build_manifest("mine", DatasetCfg(source="csv", root=str(tmp_path / "mine"),
                                                          annotations="list.csv"))
    assert set(frame["split"]) == {"train", "val", "test"} and frame["captions"].to_list()[0] == ["a", "b"]


def test_split_files_replace_the_splits(tmp_path: Path) -> None:
    rf.make_sop(tmp_path / "sop")
    frame, _ = datasets.build_manifest("sop", DatasetCfg(source="sop", root=str(tmp_path / "sop")))
    lists = tmp_path / "info"
    lists.mkdir()
    chosen = frame.filter(pl.col("label") <= 2)
    for split, part in (("train", chosen.filter(pl.col("label") == 1)), ("test", chosen.filter(pl.col("label") == 2))):
        (lists / f"{split}.json").write_text(json.dumps([{"path": p, "class_id": [int(lab)]} for p, lab in
                                                         zip(part["path"], part["label"])]))
    again, _ = datasets.build_manifest("sop", DatasetCfg(source="sop", root=str(tmp_path / "sop"),
                                                         split_files=str(lists)))
    assert again.height == chosen.height and labels_of(again, "train") == {1} and labels_of(again, "test") == {2}
    (lists / "test.json").write_text(json.dumps([{"path": "bicycle_final/nope.JPG", "class_id": 3}]))
    with pytest.raises(FileNotFoundError, match="split_files.*nope.JPG"):
        datasets.build_manifest("sop", DatasetCfg(source="sop", root=str(tmp_path / "sop"), split_files=str(lists)))


# ------------------------------------------------------------------------------ bad input
def test_a_corrupt_image_is_named_or_skipped_and_counted(tmp_path: Path) -> None:
    for c in range(4):
        for i in range(3):
            rf.image(tmp_path / f"c{c}" / f"{i}.jpg", c)
    (tmp_path / "c2" / "1.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(ImageError, match=r"1 bad image\(s\): .*c2/1\.jpg: unreadable.*skip_corrupt"):
        datasets.build_manifest("mine", DatasetCfg(source="folder", root=str(tmp_path)))
    frame, meta = datasets.build_manifest("mine", DatasetCfg(source="folder", root=str(tmp_path), skip_corrupt=True))
    assert frame.height == 11 and meta["skipped_images"] == ["c2/1.jpg"]


def test_a_missing_image_listed_in_the_annotations_is_named(tmp_path: Path) -> None:
    top = rf.make_sop(tmp_path)
    (top / "bicycle_final" / "000003_1.JPG").unlink()
    with pytest.raises(ImageError, match="000003_1.JPG: missing"):
        datasets.build_manifest("sop", DatasetCfg(source="sop", root=str(tmp_path)))


def test_missing_folder_and_wrong_layout_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"datasets\.inshop\.root: folder .* does not exist\. Get DeepFashion"):
        datasets.build_manifest("inshop", DatasetCfg(source="inshop", root=str(tmp_path / "absent")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(formats.FormatError, match="no Ebay_train.txt under"):
        datasets.build_manifest("sop", DatasetCfg(source="sop", root=str(tmp_path / "empty")))
    with pytest.raises(ConfigError, match="needs `root`"):
        datasets.build_manifest("sop", DatasetCfg(source="sop"))


# ------------------------------------------------------------------------------ download → manifest
def zipped(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder.parent).as_posix())
    return buf.getvalue()


def test_a_downloaded_archive_becomes_a_manifest_and_is_reused(server: Server, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    archive = zipped(rf.make_sop(tmp_path / "src"))
    server.files["Stanford_Online_Products.zip"] = archive
    sha = hashlib.sha256(archive).hexdigest()
    monkeypatch.chdir(tmp_path)  # data/downloads/<name>/ is relative to the project root
    cfg = DatasetCfg(source="sop", downloads=[DownloadCfg(url="https://example.invalid/x/Stanford_Online_Products.zip",
                                                          sha256=sha)],
                     mirror=server.url("").rstrip("/"))
    frame, meta = datasets.build_manifest("sop", cfg)
    assert frame.height == 40 and meta["downloads"][0]["sha256"] == sha and meta["downloads"][0]["pinned"]
    assert Path(meta["root"]).is_relative_to((tmp_path / "data" / "downloads" / "sop").resolve())
    datasets.build_manifest("sop", cfg)
    assert len(server.requests) == 1  # verified download and extraction are reused
