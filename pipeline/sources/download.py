"""Fetching dataset archives: resumable HTTP(S) downloads with size and checksum checks, and safe extraction.

`download` keeps a `<file>.part` next to the destination while bytes arrive. An interrupted
transfer (network error, killed process) resumes from it with an HTTP Range request, and only if
the file on the server is still the one it started: the first response's ETag (or Last-Modified)
is kept in `<file>.part.json` and sent as If-Range, so a changed file comes back whole and the
transfer restarts from byte 0 instead of splicing two versions. Transient errors are retried with
exponential back-off; a 4xx answer is final; a redirect from https to anything else (http, ftp) is
refused. Only a file whose size and checksums (SHA-256, or the MD5 some publishers give) match
what was asked for is renamed into place; a mismatch deletes the partial file and raises, so
nothing unverified is ever left where a later step would pick it up.

Most dataset publishers give no checksum. Without an expected value the SHA-256 of what arrived is
recorded next to the file (`<file>.sha256`, written atomically) and printed, so the user can pin it
in params.yaml.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import lzma
import os
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from tqdm import tqdm

from pipeline import io as pio

CHUNK = 1 << 20
USER_AGENT = "infuse-pipeline/0.1 (+https://github.com/; dataset fetcher)"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# what a damaged archive raises while it is read (a truncated or altered download, an HTML error page)
CORRUPT_ARCHIVE = (zipfile.BadZipFile, tarfile.ReadError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)


class DownloadError(RuntimeError):
    """A transfer that could not complete; the message names the URL and what to do."""


class ChecksumError(DownloadError):
    """The bytes that arrived are not the ones asked for (size, SHA-256 or MD5)."""


class CorruptArchive(DownloadError):
    """An archive that cannot be read to the end."""


@dataclass(frozen=True)
class Fetched:
    path: Path
    sha256: str
    size: int
    pinned: bool      # True when a checksum was given and matched; False when only recorded


# ------------------------------------------------------------------------------ digests
def digests_of(path: Path, names: tuple[str, ...] = ("sha256",), chunk: int = CHUNK) -> dict[str, str]:
    """Hex digests of a file (hashlib algorithm names), all in one read."""
    digests = {name: hashlib.new(name) for name in names}
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            for digest in digests.values():
                digest.update(block)
    return {name: digest.hexdigest() for name, digest in digests.items()}


def sha256_of(path: Path, chunk: int = CHUNK) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    return digests_of(path, ("sha256",), chunk)["sha256"]


def digest_record(path: Path) -> Path:
    """Where `download` records a file's SHA-256 (`<file>.sha256`, sha256sum's format)."""
    return path.with_name(path.name + ".sha256")


def recorded_sha256(path: Path) -> str | None:
    """The SHA-256 recorded for `path` by an earlier `download`, if any."""
    record = digest_record(path)
    return record.read_text().split()[0] if record.is_file() else None


def record_sha256(path: Path, sha256: str) -> None:
    with pio.atomic_path(digest_record(path)) as tmp:
        tmp.write_text(f"{sha256}  {path.name}\n")


def forget(path: Path) -> None:
    """Remove a downloaded file with its recorded digest (a rerun then fetches it again)."""
    path.unlink(missing_ok=True)
    digest_record(path).unlink(missing_ok=True)


# ------------------------------------------------------------------------------ one transfer
class NoDowngradeRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects, except from https to another scheme (http, ftp): after such a downgrade
    anyone on the path could swap the bytes, and most of these files come with no checksum."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 - urllib's signature
        old, new = urlsplit(req.full_url).scheme, urlsplit(newurl).scheme
        if new != "https" and not (old == new == "http"):
            fp.close()
            raise DownloadError(f"refusing the redirect from {req.full_url} to {newurl} ({old} to {new}); "
                                "use the https URL of a mirror that stays on https (datasets.<name>.mirror)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _state_file(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _part_state(part: Path) -> dict[str, Any]:
    """What the first response said about the file `part` holds: url, etag, last_modified."""
    try:
        return json.loads(_state_file(part).read_text())
    except (OSError, ValueError):
        return {}


def _validator(state: dict[str, Any]) -> str | None:
    """The If-Range value: a strong ETag (a weak one may not be used), else the Last-Modified date."""
    etag = state.get("etag")
    return etag if etag and not etag.startswith("W/") else state.get("last_modified")


def _resumes(response: Any, offset: int, state: dict[str, Any]) -> bool:
    """A 206 continues our bytes: its range starts at `offset` and it names the same entity."""
    start = (response.headers.get("Content-Range") or "").removeprefix("bytes ").split("-")[0]
    etag = response.headers.get("ETag")
    return start == str(offset) and (etag is None or state.get("etag") in (None, etag))


def _open(url: str, part: Path, timeout: float) -> tuple[Any, int] | None:
    """The response for the bytes `part` lacks and the offset its body starts at (0: the whole file);
    None when nothing is left to fetch."""
    state = _part_state(part)
    offset = part.stat().st_size if part.exists() else 0
    if offset and (state.get("url") != url or _validator(state) is None):
        print(f"[download] {part.name}: cannot check it is part of the same file (no ETag or Last-Modified "
              "recorded); downloading again from byte 0")
        offset = 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
        request.add_header("If-Range", _validator(state))
    try:
        response = urllib.request.build_opener(NoDowngradeRedirects).open(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing left to send: the part is complete (or too long)
            return None
        raise
    status = getattr(response, "status", None) or 200  # ftp answers have no status
    if offset and status == 206 and not _resumes(response, offset, state):
        response.close()
        part.unlink()
        raise ConnectionError("the server resumed another version or range of the file; starting again")
    if status != 206:  # a whole file: If-Range found it changed, the server ignores ranges, or a fresh start
        offset = 0
        _state_file(part).write_text(json.dumps({"url": url, "etag": response.headers.get("ETag"),
                                                 "last_modified": response.headers.get("Last-Modified")}))
    return response, offset


def _transfer(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Append the missing bytes of `url` to `part` (or write it anew when it cannot be resumed)."""
    opened = _open(url, part, timeout)
    if opened is None:
        return
    response, offset = opened
    with response:
        length = response.headers.get("Content-Length")
        expected = offset + int(length) if length is not None else None
        with open(part, "ab" if offset else "wb") as out, tqdm(
                total=expected, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=f"download {Path(part.name).stem}", disable=not progress, leave=False) as bar:
            while block := response.read(CHUNK):
                out.write(block)
                bar.update(len(block))
        received = part.stat().st_size
        if expected is not None and received < expected:
            raise ConnectionError(f"connection closed after {received} of {expected} bytes")


def _retryable(err: Exception) -> bool:
    """Network trouble and server-side errors are worth another try; 4xx answers (and refused redirects) are not."""
    if isinstance(err, urllib.error.HTTPError):
        return err.code >= 500 or err.code in (408, 429)
    return isinstance(err, (urllib.error.URLError, OSError, http.client.HTTPException))


def _fetch(url: str, part: Path, retries: int, backoff: float, timeout: float, progress: bool,
           sleep: Callable[[float], None]) -> None:
    """`_transfer` with retries; a final failure raises DownloadError (the part kept if it can resume)."""
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, timeout, progress)
            return
        except Exception as err:  # noqa: BLE001 - classified right below
            if not _retryable(err):
                _discard(part)
                reason = f"HTTP {err.code} {err.reason}" if isinstance(err, urllib.error.HTTPError) else str(err)
                raise DownloadError(f"cannot download {url}: {reason}") from None
            if attempt == retries:
                raise DownloadError(f"cannot download {url} after {retries + 1} tries: {getattr(err, 'reason', err)}. "
                                    f"Partial data is kept in {part} and the next run resumes it.") from None
            wait = backoff * 2 ** attempt
            print(f"[download] {url}: {err}; retrying in {wait:.0f} s ({attempt + 1}/{retries})")
            sleep(wait)


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _state_file(part).unlink(missing_ok=True)


# ------------------------------------------------------------------------------ download
def _pins(sha256: str | None, md5: str | None) -> dict[str, str]:
    return {name: value.lower() for name, value in (("sha256", sha256), ("md5", md5)) if value}


def _reuse(dest: Path, pins: dict[str, str]) -> Fetched | None:
    """`dest` if it is verified: it matches every pin, or (none given) the digest recorded when it arrived."""
    known = pins or ({"sha256": r} if (r := recorded_sha256(dest)) else {})
    if not known:
        return None
    digests = digests_of(dest, tuple({"sha256", *known}))
    if any(digests[name] != value for name, value in known.items()):
        return None
    if recorded_sha256(dest) != digests["sha256"]:
        record_sha256(dest, digests["sha256"])
    return Fetched(dest, digests["sha256"], dest.stat().st_size, pinned=bool(pins))


def _verify(url: str, dest: Path, part: Path, size: int | None, pins: dict[str, str]) -> dict[str, str]:
    """The digests of `part`; raises ChecksumError (and removes it) when its size or a pin differs."""
    got_size = part.stat().st_size
    if size is not None and got_size != size:
        _discard(part)
        raise ChecksumError(f"{url}: expected {size} bytes, got {got_size}; the download was removed")
    digests = digests_of(part, tuple({"sha256", *pins}))
    for name, want in pins.items():
        if digests[name] != want:
            _discard(part)
            raise ChecksumError(f"{url}: {name.upper().replace('SHA', 'SHA-')} mismatch for {dest.name}: expected "
                                f"{want}, got {digests[name]}; the download was removed (a wrong mirror, a changed "
                                "file or a corrupted transfer)")
    return digests


def download(url: str, dest: Path, sha256: str | None = None, size: int | None = None, retries: int = 4,
             backoff: float = 1.0, timeout: float = 60.0, progress: bool = True,
             sleep: Callable[[float], None] = time.sleep, md5: str | None = None) -> Fetched:
    """Fetch `url` to `dest` (resuming `dest.part`), verify it, and rename it into place.

    A `dest` already there is reused only when it matches `sha256` / `md5` (or, without them, its
    recorded digest). Raises DownloadError (with the reason) or ChecksumError.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    pins = _pins(sha256, md5)
    if dest.is_file():
        if (reused := _reuse(dest, pins)) is not None:
            return reused
        forget(dest)  # unverifiable or different: fetch again
    part = dest.with_name(dest.name + ".part")
    _fetch(url, part, retries, backoff, timeout, progress, sleep)
    digests = _verify(url, dest, part, size, pins)
    os.replace(part, dest)
    _state_file(part).unlink(missing_ok=True)
    record_sha256(dest, digests["sha256"])
    if not pins:
        print(f"[download] {dest.name}: no checksum was given; got SHA-256 {digests['sha256']} "
              f"({dest.stat().st_size} bytes). Pin it in params.yaml (sha256: ...) so later downloads are checked.")
    return Fetched(dest, digests["sha256"], dest.stat().st_size, pinned=bool(pins))


# ------------------------------------------------------------------------------ extraction
def is_archive(path: Path | str) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def _unpack(archive: Path, into: Path, dest: Path, progress: bool) -> None:
    """Every member of a zip or tar archive into the folder `into`, refusing members that would land outside it."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for member in tqdm(zf.infolist(), desc=f"extract {archive.name}", unit="file", disable=not progress,
                               leave=False):
                if not (into / member.filename).resolve().is_relative_to(into.resolve()):
                    raise DownloadError(f"{archive}: member {member.filename!r} would extract outside {dest}")
                zf.extract(member, into)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            for member in tqdm(tf.getmembers(), desc=f"extract {archive.name}", unit="file", disable=not progress,
                               leave=False):
                try:
                    tf.extract(member, into, filter="data")  # refuses absolute paths, `..` and unsafe links
                except tarfile.FilterError as err:
                    raise DownloadError(f"{archive}: unsafe member {member.name!r}: {err}") from None
    else:
        raise CorruptArchive(f"{archive} is neither a zip nor a tar archive")


def extract(archive: Path, dest: Path, progress: bool = True) -> Path:
    """Unpack a zip/tar archive into `dest`, atomically (`pipeline.io.atomic_path`).

    A marker holding the archive's digest makes a second call a no-op. Members that would land
    outside `dest` (absolute paths, `..`, links out of the tree) are refused; an archive that
    cannot be read to the end raises CorruptArchive.
    """
    archive, dest = Path(archive), Path(dest)
    digest = recorded_sha256(archive) or sha256_of(archive)
    marker = dest / ".extracted"
    if marker.is_file() and marker.read_text().strip() == digest:
        return dest
    with pio.atomic_path(dest, directory=True) as tmp:
        try:
            _unpack(archive, tmp, dest, progress)
        except CORRUPT_ARCHIVE as err:
            raise CorruptArchive(f"{archive} cannot be read ({type(err).__name__}: {err})") from None
        (tmp / ".extracted").write_text(digest + "\n")
    return dest
