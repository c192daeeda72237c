"""The Broden release of the compositional-explanations reference code: download, check, unpack.

``python -m helpers.images.broden [DIR] [--url URL] [--sha256 HEX] [--keep-archive]`` downloads
``broden1_224.zip`` (NetDissect's ``script/dlbroden.sh``, as Mu & Andreas 2020 use it) into ``DIR``
(default ``data/broden``), resuming a cut transfer; checks its size, SHA-256 (when given) and every
member's CRC-32; unpacks it into ``DIR/broden1_224``; checks the folder (:func:`verify_folder`); and
prints, last, the setting to pass: ``-p broden_root=<folder>``. Offline, put the zip into ``DIR`` by
hand and rerun: it is checked and unpacked without a request.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tqdm.auto import tqdm

from ..pipeline.settings import ROOT
from .concepts import Broden, read_csv

CHUNK = 1 << 20  # bytes read at a time
RETRY_PAUSE_S = 2.0
"""Seconds before the first retry of a cut transfer; the k-th retry waits k times as long."""


@dataclass(frozen=True)
class Release:
    """One Broden release: where it is, what it unpacks into, what to check.

    Parameters
    ----------
    url : str
        Address of the zip archive.
    folder : str
        The folder the archive unpacks into; the archive is saved as ``<folder>.zip``.
    sha256 : str or None
        The archive's SHA-256 (hex); None: not checked (the release publishes no checksum).
    ade20k_rows : int or None
        Rows of ``index.csv`` with an image under ``ade20k/`` (those probed); None: not checked.
    """

    url: str
    folder: str = "broden1_224"
    sha256: str | None = None
    ade20k_rows: int | None = 22210

    @property
    def archive(self) -> str:  # the downloaded file's name
        return f"{self.folder}.zip"


RELEASE = Release("http://netdissect.csail.mit.edu/data/broden1_224.zip")
"""The release of NetDissect's ``script/dlbroden.sh``, used by the reference code."""

DEFAULT_DIR = ROOT / "data" / "broden"
"""Where ``python -m helpers.images.broden`` downloads to when no folder is given."""


def default_root() -> Path:
    """The Broden folder the default download unpacks into (where the paper profile looks by default)."""
    return DEFAULT_DIR / RELEASE.folder


def _command(dest: Path) -> str:
    return f"python -m helpers.images.broden {dest}"


def _table(path: Path, columns: tuple, fix: str) -> list[dict]:
    rows = read_csv(path, columns, fix)
    if not rows:
        raise ValueError(f"{path} has no rows; {fix}")
    return rows


def verify_folder(folder, release: Release = RELEASE) -> dict:
    """Check an unpacked Broden folder; ``{"images": n, "ade20k": n, "labels": n}`` (rows of the CSV files).

    ``index.csv`` needs Broden's columns (:attr:`Broden.INDEX_COLUMNS`), ``label.csv`` ``number, name,
    category``, each with rows; ``release.ade20k_rows`` (unless None) rows name an image under ``ade20k/``;
    every image and mask file named in ``index.csv`` (mask columns: files joined by ``;``) is in ``images/``.

    Raises
    ------
    FileNotFoundError
        A CSV file, or a file it names, is missing (the first one is named).
    ValueError
        A CSV file lacks a column or rows, or the ADE20K count differs (both numbers given).
    """
    folder = Path(folder).expanduser()
    fix = f"delete {folder} and rerun `{_command(folder.parent)}`"
    index = _table(folder / "index.csv", Broden.INDEX_COLUMNS, fix)
    labels = _table(folder / "label.csv", ("number", "name", "category"), fix)
    ade20k = sum(r["image"].startswith("ade20k/") for r in index)
    if release.ade20k_rows is not None and ade20k != release.ade20k_rows:
        raise ValueError(f"{folder / 'index.csv'} has {ade20k} rows of ade20k/ images where the release "
                         f"{release.folder} has {release.ade20k_rows}: it is not the release the reference "
                         f"results probe; {fix}")
    images, missing = str(folder / "images"), []
    for row in tqdm(index, desc=f"check {folder.name}", unit="row", leave=False):
        names = [row["image"], *(s.strip() for c in Broden.PIXEL for s in (row[c] or "").split(";") if s.strip())]
        missing += [n for n in names if not os.path.isfile(os.path.join(images, n))]
    if missing:
        raise FileNotFoundError(f"{len(missing)} file(s) named in {folder / 'index.csv'} do not exist, e.g. "
                                f"{Path(images) / missing[0]}: the folder is incomplete; {fix}")
    return {"images": len(index), "ade20k": ade20k, "labels": len(labels)}


class _Cut(Exception):
    """A transfer that ended before its announced size, or a reply that cannot be appended."""


_RETRIED = (_Cut, http.client.HTTPException, ConnectionError, TimeoutError)


def _transfer(url: str, part: Path, timeout: float, say) -> int | None:
    """One request: append to ``part`` from its size (or restart it); the announced total size."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        reply = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code != 416:
            raise
        part.unlink(missing_ok=True)
        raise _Cut(f"the server refused the range from byte {offset}; starting again from zero") from None
    with reply:
        length = reply.headers.get("Content-Length")
        if reply.status == 206:
            sent = (reply.headers.get("Content-Range") or "").strip()
            span = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", sent)
            if not span or int(span[1]) != offset:
                part.unlink(missing_ok=True)
                raise _Cut(f"the server sent the range {sent!r} for a request from byte {offset}; "
                           "starting again from zero")
            total = int(span[2]) if span[2] != "*" else (offset + int(length) if length else None)
        else:
            if offset:
                say(f"the server ignored the range request: downloading {part.name} from the start")
            offset, total = 0, (int(length) if length else None)
        with open(part, "ab" if offset else "wb") as f, \
                tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                     desc=part.name) as bar:
            for chunk in iter(lambda: reply.read(CHUNK), b""):
                f.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:
        if size > total:
            part.unlink()
        raise _Cut(f"{total - size} bytes short of {total}" if size < total else f"{size} bytes, more than {total}")
    return total


def _download(release: Release, dest: Path, attempts: int, timeout: float, say) -> int | None:
    """Download ``release.url`` to ``dest/<archive>`` through ``<archive>.part``; the total size."""
    part, name = dest / f"{release.archive}.part", release.archive
    by_hand = (f"download it by hand into {dest} as {name} and rerun `{_command(dest)}`: it is then "
               "checked and unpacked without a request")
    for attempt in range(1, attempts + 1):
        try:
            total = _transfer(release.url, part, timeout, say)
        except urllib.error.HTTPError as e:
            if e.code < 500:
                raise OSError(f"the server answered {e.code} {e.reason} for {release.url}: check the "
                              f"address (--url), or {by_hand}") from None
            why = f"{e.code} {e.reason}"
        except urllib.error.URLError as e:
            if not isinstance(e.reason, (TimeoutError, ConnectionResetError)):
                raise OSError(f"cannot reach {release.url} ({e.reason}); {by_hand}") from None
            why = str(e.reason)
        except _RETRIED as e:
            why = str(e) or type(e).__name__
        else:
            part.replace(dest / name)
            return total
        have = part.stat().st_size if part.exists() else 0
        if attempt == attempts:
            raise OSError(f"the download of {release.url} stopped at {have} bytes after {attempts} attempt(s) "
                          f"({why}); rerun `{_command(dest)}` to continue from there, or {by_hand}")
        say(f"the transfer stopped at {have} bytes ({why}); continuing in {RETRY_PAUSE_S * attempt:g} s "
            f"(attempt {attempt + 1} of {attempts})")
        time.sleep(RETRY_PAUSE_S * attempt)


def _check_archive(archive: Path, release: Release, dest: Path) -> str:
    """The archive's SHA-256; a wrong checksum or a member that fails its CRC moves it aside (ValueError)."""
    digest, why = hashlib.sha256(), None
    with open(archive, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    digest = digest.hexdigest()
    if release.sha256 and digest != release.sha256.lower():
        why = f"its SHA-256 is {digest}, not the expected {release.sha256}"
    else:
        try:
            with zipfile.ZipFile(archive) as z:
                for info in tqdm(z.infolist(), desc=f"check {archive.name}", unit="file", leave=False):
                    try:
                        with z.open(info) as member:
                            while member.read(CHUNK):
                                pass
                    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
                        why = (f"CRC error in member {info.filename}" if "CRC" in str(e) else
                               f"member {info.filename} does not decompress: {e}")
                        break
        except zipfile.BadZipFile as e:
            why = f"not a complete zip archive: {e}"
    if why:
        corrupt = archive.with_name(f"{archive.name}.corrupt")
        archive.replace(corrupt)
        raise ValueError(f"{archive} is corrupt ({why}): it was moved to {corrupt.name}; rerun "
                         f"`{_command(dest)}` to download it again")
    return digest


def _unpack(archive: Path, dest: Path, release: Release) -> Path:
    """Unpack into a temporary folder inside ``dest``, then rename ``<folder>`` into place."""
    for old in dest.glob(f".{release.folder}.*.unpacking"):
        shutil.rmtree(old, ignore_errors=True)
    with zipfile.ZipFile(archive) as z:
        infos = z.infolist()
        for info in infos:
            name = info.filename
            if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) or ".." in re.split(r"[/\\]", name):
                raise ValueError(f"{archive} holds the member {name!r}, a path outside its folder: it is "
                                 f"refused and nothing was unpacked; delete {archive} and download {release.url}")
        tmp = Path(tempfile.mkdtemp(prefix=f".{release.folder}.", suffix=".unpacking", dir=dest))
        try:
            for info in tqdm(infos, desc=f"unpack {archive.name}", unit="file"):
                z.extract(info, tmp)
            if not (tmp / release.folder).is_dir():
                raise ValueError(f"{archive} holds no folder {release.folder}/: it is not the Broden release; "
                                 f"delete it and download {release.url}")
            (tmp / release.folder).rename(dest / release.folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest / release.folder


def fetch(dest_dir, release: Release = RELEASE, keep_archive: bool = False, say=print, attempts: int = 5,
          timeout: float = 60) -> Path:
    """Download, check and unpack ``release`` into ``dest_dir``; the unpacked folder, absolute.

    A folder already unpacked that verifies is kept and nothing is requested; an archive already in
    ``dest_dir`` (``<folder>.zip``, e.g. downloaded by hand) is checked and used without a request.

    Parameters
    ----------
    dest_dir : path
        Folder to download and unpack into (created if missing).
    release : Release
        What to download and what to expect of it.
    keep_archive : bool
        Keep the zip after unpacking it.
    say : callable
        Receives each line of progress; the last is ``-p broden_root=<folder>``.
    attempts, timeout : int, float
        Requests made for a transfer that keeps being cut; the socket timeout in seconds.

    Raises
    ------
    ValueError, FileNotFoundError
        The archive or the folder does not check; the message names the fix.
    OSError
        The download failed.
    """
    if int(attempts) < 1:
        raise ValueError(f"attempts={attempts!r}: give 1 or more.")
    dest = Path(dest_dir).expanduser().resolve()
    folder, archive = dest / release.folder, dest / release.archive
    if folder.exists():
        summary = verify_folder(folder, release)
        say(f"{folder} is already unpacked and verifies ({summary['images']} images); nothing to download.")
    else:
        dest.mkdir(parents=True, exist_ok=True)
        if archive.exists():
            say(f"found {archive}: checking it, without a request")
            source = "found in the folder"
        elif not re.match(r"https?://", release.url):
            raise ValueError(f"url={release.url!r} is not an http(s) address; give the archive's address (--url)")
        else:
            say(f"downloading {release.url} into {dest}")
            _download(release, dest, int(attempts), timeout, say)
            source = release.url
        digest = _check_archive(archive, release, dest)
        size = archive.stat().st_size
        say(f"{archive.name}: {size} bytes, SHA-256 {digest}; unpacking it")
        _unpack(archive, dest, release)
        date = datetime.fromtimestamp(archive.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
        (dest / f"{release.folder}.json").write_text(json.dumps({
            "url": release.url, "source": source, "archive": archive.name, "size": size, "sha256": digest,
            "downloaded": date, "folder": str(folder)}, indent=1) + "\n")
        summary = verify_folder(folder, release)
        say(f"{folder} verifies: {summary['images']} images ({summary['ade20k']} from ADE20K), "
            f"{summary['labels']} labels")
        if not keep_archive:
            archive.unlink()
            say(f"removed {archive.name} (--keep-archive keeps it)")
    say("the paper profile finds it there by default; elsewhere, pass:" if folder == default_root().resolve()
        else f"the paper profile looks in {default_root()} by default; pass:")
    say(f"-p broden_root={folder}")
    return folder


def main(argv=None) -> int:
    """``python -m helpers.images.broden``: 0 on success, 1 with ``error: <message>`` on stderr."""
    parser = argparse.ArgumentParser(prog="python -m helpers.images.broden", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", nargs="?", default=str(DEFAULT_DIR), metavar="DIR",
                        help="folder to download and unpack into (default: %(default)s)")
    parser.add_argument("--url", default=RELEASE.url, help="address of the archive (default: %(default)s)")
    parser.add_argument("--sha256", metavar="HEX", help="the archive's SHA-256 (default: unchecked, none is published)")
    parser.add_argument("--keep-archive", action="store_true", help="keep the zip after unpacking it")
    parser.add_argument("--ade20k-rows", type=int, default=RELEASE.ade20k_rows, metavar="N",
                        help="rows of ade20k/ images index.csv must have (default: %(default)s, the release the "
                             "reference results probe; 0: not checked)")
    args = parser.parse_args(argv)
    if args.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", args.sha256):
        parser.error(f"--sha256 {args.sha256!r} is not 64 hexadecimal digits; give the archive's SHA-256")
    try:
        fetch(args.dir, dataclasses.replace(RELEASE, url=args.url, sha256=args.sha256 or RELEASE.sha256,
                                            ade20k_rows=args.ade20k_rows or None), keep_archive=args.keep_archive)
    except (ValueError, OSError) as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
