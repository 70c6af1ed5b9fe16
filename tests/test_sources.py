"""Dataset sources: downloads from a loopback HTTP server (checksums, a transfer cut half-way and
resumed, 404), safe extraction, every real dataset's own layout, splits, and bad images."""
from __future__ import annotations

import datetime
import email.utils
import hashlib
import http.server
import io
import ipaddress
import json
import ssl
import struct
import tarfile
import threading
import zipfile
import zlib
from pathlib import Path
from typing import Iterator

import polars as pl
import pytest
import yaml

from pipeline import cli
from pipeline.config import ConfigError, DatasetCfg, DownloadCfg, load_params
from pipeline.lib.images import ImageError
from pipeline.sources import datasets, download as dl, formats
from tests import real_formats as rf


# ------------------------------------------------------------------------------ a loopback file server
class Server:
    """Serves `files` on 127.0.0.1 (https with `tls`, a server-side SSLContext) with Range and
    If-Range support. Each file has an ETag and a Last-Modified date derived from its content, so a
    changed file has new ones; `validators` names the ones sent. `cut[name] = n` makes the next GET
    of that file announce its full length but close the connection after n bytes (once);
    `redirects[name] = url` answers that name with a 302 to `url`."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.redirects: dict[str, str] = {}
        self.validators = {"ETag", "Last-Modified"}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.if_range: list[str | None] = []
        self.statuses: list[int] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def answer(self, code: int) -> None:
                server.statuses.append(code)
                self.send_response(code)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                name = self.path.lstrip("/")
                server.requests.append((name, self.headers.get("Range")))
                server.if_range.append(self.headers.get("If-Range"))
                if name in server.redirects:
                    self.answer(302)
                    self.send_header("Location", server.redirects[name])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if name not in server.files:
                    server.statuses.append(404)
                    self.send_error(404, "Not Found")
                    return
                data, start = server.files[name], 0
                validators = {k: v for k, v in server.validators_of(data).items() if k in server.validators}
                wanted = self.headers.get("Range")
                same = self.headers.get("If-Range") in (None, *validators.values())
                if wanted and same:
                    start = int(wanted.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        server.statuses.append(416)
                        self.send_error(416, "Range Not Satisfiable")
                        return
                    self.answer(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.answer(200)
                body = data[start:]
                for key, value in validators.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if name in server.cut:
                    body = body[:server.cut.pop(name)]
                    self.close_connection = True
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def validators_of(data: bytes) -> dict[str, str]:
        digest = hashlib.sha256(data).hexdigest()
        return {"ETag": f'"{digest[:16]}"',
                "Last-Modified": email.utils.formatdate(1_500_000_000 + int(digest[:6], 16), usegmt=True)}

    def url(self, name: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_address[1]}/{name}"

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


@pytest.mark.parametrize("validator", ["ETag", "Last-Modified"])
def test_a_file_changed_since_the_part_began_restarts_from_byte_0(server: Server, tmp_path: Path,
                                                                   validator: str) -> None:
    server.validators = {validator}
    server.files["data.bin"] = PAYLOAD
    server.cut["data.bin"] = 300_000
    with pytest.raises(dl.DownloadError, match="next run resumes"):
        dl.download(server.url("data.bin"), tmp_path / "data.bin", retries=0, progress=False)
    first = Server.validators_of(PAYLOAD)[validator]
    new_version = PAYLOAD[::-1] + b"v2"
    server.files["data.bin"] = new_version  # published again: a new ETag and date
    got = dl.download(server.url("data.bin"), tmp_path / "data.bin", retries=0, progress=False)
    # the resume asked for the rest of the first version only; the server sent the new one whole
    assert server.requests[-1] == ("data.bin", "bytes=300000-") and server.if_range[-1] == first
    assert server.statuses[-1] == 200
    assert (tmp_path / "data.bin").read_bytes() == new_version and got.sha256 == hashlib.sha256(new_version).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin", "data.bin.sha256"]


def test_a_part_without_a_validator_is_not_spliced_but_fetched_again(server: Server, tmp_path: Path) -> None:
    server.validators = set()  # the server names no version: the part cannot be checked
    server.files["data.bin"] = PAYLOAD
    server.cut["data.bin"] = 300_000
    dl.download(server.url("data.bin"), tmp_path / "data.bin", PAYLOAD_SHA, progress=False, sleep=no_wait)
    assert server.requests == [("data.bin", None), ("data.bin", None)]
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_an_md5_pin_is_checked_like_a_sha256(server: Server, tmp_path: Path) -> None:
    server.files["data.bin"] = PAYLOAD
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    with pytest.raises(dl.ChecksumError, match=f"MD5 mismatch.*expected {'0' * 32}, got {md5}"):
        dl.download(server.url("data.bin"), tmp_path / "data.bin", md5="0" * 32, progress=False)
    assert list(tmp_path.iterdir()) == []
    got = dl.download(server.url("data.bin"), tmp_path / "data.bin", md5=md5.upper(), progress=False)
    assert got.pinned and got.sha256 == PAYLOAD_SHA
    before = len(server.requests)
    assert dl.download(server.url("data.bin"), tmp_path / "data.bin", md5=md5, progress=False).pinned
    assert len(server.requests) == before  # reused, checked against the MD5


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM), as a TLS test server needs."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.fixture
def tls_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A loopback https server whose certificate the client trusts (OpenSSL reads SSL_CERT_FILE)."""
    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    s = Server(tls=context)
    yield s
    s.close()


def test_a_redirect_from_https_to_http_is_refused(tls_server: Server, server: Server, tmp_path: Path) -> None:
    server.files["data.bin"] = tls_server.files["data.bin"] = PAYLOAD
    tls_server.redirects["moved.bin"] = tls_server.url("data.bin")  # https -> https: followed
    got = dl.download(tls_server.url("moved.bin"), tmp_path / "a.bin", PAYLOAD_SHA, progress=False)
    assert got.pinned and tls_server.requests == [("moved.bin", None), ("data.bin", None)]
    tls_server.redirects["plain.bin"] = server.url("data.bin")  # https -> http: refused, nothing fetched
    with pytest.raises(dl.DownloadError, match=r"refusing the redirect from https://.*/plain\.bin to http://.*https to http"):
        dl.download(tls_server.url("plain.bin"), tmp_path / "b.bin", retries=3, progress=False, sleep=no_wait)
    tls_server.redirects["ftp.bin"] = "ftp://127.0.0.1:9/data.bin"  # https -> ftp: refused as well
    with pytest.raises(dl.DownloadError, match="https to ftp"):
        dl.download(tls_server.url("ftp.bin"), tmp_path / "c.bin", retries=3, progress=False, sleep=no_wait)
    assert server.requests == [] and not (tmp_path / "b.bin").exists() and not (tmp_path / "c.bin").exists()
    assert [name for name, _ in tls_server.requests[2:]] == ["plain.bin", "ftp.bin"]  # and not retried


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


def test_an_archive_that_cannot_be_read_to_the_end_is_reported_and_leaves_nothing(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "ok.tgz", "w:gz") as tf:
        info = tarfile.TarInfo("a.bin")
        info.size = len(PAYLOAD)
        tf.addfile(info, io.BytesIO(PAYLOAD))
    whole = (tmp_path / "ok.tgz").read_bytes()
    (tmp_path / "cut.tgz").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(dl.CorruptArchive, match=r"cut\.tgz cannot be read \((EOFError|ReadError)"):
        dl.extract(tmp_path / "cut.tgz", tmp_path / "out", progress=False)
    (tmp_path / "page.zip").write_text("<html>Not found</html>")
    with pytest.raises(dl.CorruptArchive, match="neither a zip nor a tar"):
        dl.extract(tmp_path / "page.zip", tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.tgz", "ok.tgz", "page.zip"]


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


def bomb_png(path: Path, side: int = 15_000) -> Path:
    """A PNG whose header claims side x side pixels (225 Mpx: over PIL's 179 Mpx limit) in a few bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_prepare_decodes_every_image_by_default_so_a_truncated_jpeg_is_caught(tmp_path: Path) -> None:
    for c in range(4):
        for i in range(3):
            rf.image(tmp_path / f"c{c}" / f"{i}.jpg", c, size=(200, 160))
    whole = (tmp_path / "c1" / "2.jpg").read_bytes()
    (tmp_path / "c1" / "2.jpg").write_bytes(whole[:len(whole) * 2 // 3])  # a transfer cut short
    bomb_png(tmp_path / "c3" / "huge.png")
    assert DatasetCfg(source="folder").verify_images == "decode"
    with pytest.raises(ImageError) as caught:
        datasets.build_manifest("mine", DatasetCfg(source="folder", root=str(tmp_path)))
    message = str(caught.value)
    assert "\n" not in message and message.startswith("datasets.mine: 2 bad image(s): ")
    assert f"{tmp_path / 'c1' / '2.jpg'}: unreadable (OSError: image file is truncated" in message
    assert f"{tmp_path / 'c3' / 'huge.png'}: unreadable (DecompressionBombError: Image size (225000000 pixels)" in message
    assert message.endswith("or set datasets.mine.skip_corrupt=true to skip and count them")
    # the header-only check lets the truncated JPEG through (what `decode` is for), not the bomb
    opened = datasets.check_images(tmp_path, ["c1/2.jpg", "c3/huge.png"], "open")
    assert list(opened) == ["c3/huge.png"]
    frame, meta = datasets.build_manifest("mine", DatasetCfg(source="folder", root=str(tmp_path), skip_corrupt=True))
    assert frame.height == 11 and meta["skipped_images"] == ["c1/2.jpg", "c3/huge.png"]


def test_the_image_check_keeps_a_bounded_window_in_flight_and_misses_nothing(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "CHECK_WINDOW", 3)  # 10 images: four windows, problems in the first and last
    names = [f"{i}.png" for i in range(10)]
    for i, name in enumerate(names):
        rf.image(tmp_path / name, i, fmt="PNG")
    (tmp_path / "0.png").write_bytes(b"not a png")
    (tmp_path / "9.png").unlink()
    assert datasets.check_images(tmp_path, names, "decode", workers=2) == {"0.png": "unreadable (UnidentifiedImageError: "
                                                                            f"cannot identify image file '{tmp_path / '0.png'}')",
                                                                            "9.png": "missing"}


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


def test_a_corrupt_unpinned_archive_is_removed_and_the_next_run_downloads_it_again(
        server: Server, tmp_path: Path, tiny_params_file: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    good = zipped(rf.make_sop(tmp_path / "src"))
    damaged = bytearray(good)
    damaged[len(good) // 3] ^= 0xFF  # one byte of a stored image: its CRC no longer matches
    server.files["Stanford_Online_Products.zip"] = bytes(damaged)
    tree = yaml.safe_load(tiny_params_file.read_text())
    tree["datasets"]["sop"] = {"source": "sop", "downloads": [{"url": server.url("Stanford_Online_Products.zip")}]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        cli.main(["prepare", "sop"])
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("error")]  # besides progress bars
    assert stopped.value.code == 1 and len(errors) == 1 and "Traceback" not in stderr, stderr
    error = errors[0]
    assert error.startswith("error [prepare]: datasets.sop: data/downloads/sop/Stanford_Online_Products.zip cannot be "
                            "read (BadZipFile: Bad CRC-32") and error.endswith("corrupt, removed; the next run downloads it again")
    assert sorted(p.name for p in (tmp_path / "data" / "downloads" / "sop").iterdir()) == ["files"]
    assert not (tmp_path / "data" / "prepared").exists() and not (tmp_path / "data" / ".tmp").exists()
    server.files["Stanford_Online_Products.zip"] = good  # the rerun fetches it again (a transient corruption)
    cli.main(["prepare", "sop"])
    assert [name for name, _ in server.requests] == ["Stanford_Online_Products.zip"] * 2
    assert pl.read_parquet(tmp_path / "data" / "prepared" / "sop" / "manifest.parquet").height == 40


def test_a_download_is_saved_under_a_bare_name_only(server: Server, tmp_path: Path, tiny_params_file: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    tree = yaml.safe_load(tiny_params_file.read_text())
    tree["datasets"]["sop"] = {"source": "sop", "downloads": [{"url": server.url("x.zip"), "filename": "../../x.zip"}]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match=r"datasets\.sop\.downloads\.0\.filename: must be a bare file name .*'\.\./\.\./x\.zip'"):
        load_params(tmp_path / "params.yaml")
    cfg = DatasetCfg(source="sop", downloads=[DownloadCfg(url=server.url("a/")), DownloadCfg(url=server.url("b/"))])
    with pytest.raises(ConfigError, match=r"datasets\.sop\.downloads\.0\.filename: '' is not a bare file name"):
        datasets.build_manifest("sop", cfg)
    assert server.requests == [] and not (tmp_path / "data").exists()  # refused before anything was fetched
