"""Fetching dataset archives: resumable HTTP(S) downloads with size and SHA-256 checks, and safe extraction.

`download` keeps a `<file>.part` next to the destination while bytes arrive. An interrupted
transfer (network error, killed process) resumes from it with an HTTP Range request; transient
errors are retried with exponential back-off; a 4xx answer is final. Only a file whose size and
SHA-256 match what was asked for is renamed into place; a mismatch deletes the partial file and
raises, so nothing unverified is ever left where a later step would pick it up.

Most dataset publishers give no SHA-256. Without an expected value the digest of what arrived is
recorded next to the file (`<file>.sha256`) and printed, so the user can pin it in params.yaml.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm import tqdm

CHUNK = 1 << 20
USER_AGENT = "infuse-pipeline/0.1 (+https://github.com/; dataset fetcher)"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


class DownloadError(RuntimeError):
    """A transfer that could not complete; the message names the URL and what to do."""


class ChecksumError(DownloadError):
    """The bytes that arrived are not the ones asked for (size or SHA-256)."""


@dataclass(frozen=True)
class Fetched:
    path: Path
    sha256: str
    size: int
    pinned: bool      # True when the SHA-256 was given and matched; False when only recorded


def sha256_of(path: Path, chunk: int = CHUNK) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def digest_record(path: Path) -> Path:
    """Where `download` records a file's SHA-256 (`<file>.sha256`, sha256sum's format)."""
    return path.with_name(path.name + ".sha256")


def recorded_sha256(path: Path) -> str | None:
    """The SHA-256 recorded for `path` by an earlier `download`, if any."""
    record = digest_record(path)
    return record.read_text().split()[0] if record.is_file() else None


def _retryable(err: Exception) -> bool:
    """Network trouble and server-side errors are worth another try; 4xx answers are not."""
    if isinstance(err, urllib.error.HTTPError):
        return err.code >= 500 or err.code in (408, 429)
    return isinstance(err, (urllib.error.URLError, OSError, http.client.HTTPException))


def _transfer(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Append the missing bytes of `url` to `part` (Range request when part has some already)."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing left to send: the part is complete (or too long)
            return
        raise
    with response:
        status = getattr(response, "status", 200)
        if offset and status != 206:  # the server ignored the Range header: start again
            offset = 0
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


def download(url: str, dest: Path, sha256: str | None = None, size: int | None = None, retries: int = 4,
             backoff: float = 1.0, timeout: float = 60.0, progress: bool = True,
             sleep: Callable[[float], None] = time.sleep) -> Fetched:
    """Fetch `url` to `dest` (resuming `dest.part`), verify it, and rename it into place.

    A `dest` already there is reused only when it matches `sha256` (or, without one, when its
    recorded digest file exists). Raises DownloadError (with the reason) or ChecksumError.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if dest.is_file():
        known = sha256 or recorded_sha256(dest)
        if known and sha256_of(dest) == known.lower():
            return Fetched(dest, known.lower(), dest.stat().st_size, pinned=sha256 is not None)
        dest.unlink()  # unverifiable or different: fetch again
    last: Exception | None = None
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, timeout, progress)
            last = None
            break
        except Exception as err:  # noqa: BLE001 - classified right below
            if not _retryable(err):
                part.unlink(missing_ok=True)
                reason = f"HTTP {err.code} {err.reason}" if isinstance(err, urllib.error.HTTPError) else str(err)
                raise DownloadError(f"cannot download {url}: {reason}") from None
            last = err
            if attempt < retries:
                wait = backoff * 2 ** attempt
                print(f"[download] {url}: {err}; retrying in {wait:.0f} s ({attempt + 1}/{retries})")
                sleep(wait)
    if last is not None:
        raise DownloadError(f"cannot download {url} after {retries + 1} tries: {getattr(last, 'reason', last)}. "
                            f"Partial data is kept in {part} and the next run resumes it.")
    got_size, got_sha = part.stat().st_size, sha256_of(part)
    if size is not None and got_size != size:
        part.unlink()
        raise ChecksumError(f"{url}: expected {size} bytes, got {got_size}; the download was removed")
    if sha256 is not None and got_sha != sha256.lower():
        part.unlink()
        raise ChecksumError(f"{url}: SHA-256 mismatch for {dest.name}: expected {sha256.lower()}, got {got_sha}; "
                            "the download was removed (a wrong mirror, a changed file or a corrupted transfer)")
    os.replace(part, dest)
    digest_record(dest).write_text(f"{got_sha}  {dest.name}\n")
    if sha256 is None:
        print(f"[download] {dest.name}: no SHA-256 was given; got {got_sha} ({got_size} bytes). "
              "Pin it in params.yaml (sha256: ...) so later downloads are checked.")
    return Fetched(dest, got_sha, got_size, pinned=sha256 is not None)


def is_archive(path: Path | str) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def extract(archive: Path, dest: Path, progress: bool = True) -> Path:
    """Unpack a zip/tar archive into `dest` (atomically: a temporary sibling renamed at the end).

    A marker holding the archive's digest makes a second call a no-op. Members that would land
    outside `dest` (absolute paths, `..`, links out of the tree) are refused.
    """
    archive, dest = Path(archive), Path(dest)
    digest = recorded_sha256(archive) or sha256_of(archive)
    marker = dest / ".extracted"
    if marker.is_file() and marker.read_text().strip() == digest:
        return dest
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for member in tqdm(zf.infolist(), desc=f"extract {archive.name}", unit="file", disable=not progress,
                                   leave=False):
                    target = (tmp / member.filename).resolve()
                    if not target.is_relative_to(tmp.resolve()):
                        raise DownloadError(f"{archive}: member {member.filename!r} would extract outside {dest}")
                    zf.extract(member, tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                for member in tqdm(members, desc=f"extract {archive.name}", unit="file", disable=not progress,
                                   leave=False):
                    try:
                        tf.extract(member, tmp, filter="data")  # refuses absolute paths, `..` and unsafe links
                    except tarfile.FilterError as err:
                        raise DownloadError(f"{archive}: unsafe member {member.name!r}: {err}") from None
        else:
            raise DownloadError(f"{archive} is neither a zip nor a tar archive")
        (tmp / ".extracted").write_text(digest + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
