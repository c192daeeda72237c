"""The Broden fetcher against a real HTTP server on 127.0.0.1 serving a tiny Broden-format zip."""
from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import socket
import struct
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from helpers.images import broden
from helpers.images.broden import Release, fetch, main, verify_folder
from helpers.images.concepts import Broden
from tests.images.test_concepts import INDEX_COLUMNS, LABELS, write_csv, write_mask

ADE20K = 4  # rows of the tiny release under ade20k/; one more under pascal/


def write_release(root):
    """A Broden folder: four ade20k images and one pascal, 16 px JPEGs, 8 px RG-encoded masks."""
    root.mkdir(parents=True)
    write_csv(root / "label.csv", ["number", "name", "category", "frequency", "coverage", "syns"],
              [(k, n, c, 10, 0.1, "") for k, n, c in LABELS])
    rng = np.random.default_rng(0)
    rows = []
    for k, image in enumerate([*(f"ade20k/ADE_{i}.jpg" for i in range(ADE20K)), "pascal/P_0.jpg"]):
        stem = image[:-4]
        (root / "images" / image).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / "images" / image)
        write_mask(root / "images" / f"{stem}_object.png", rng.choice([0, 2, 3], size=(8, 8)))
        write_mask(root / "images" / f"{stem}_part_1.png", rng.choice([0, 4, 300], size=(8, 8)))
        write_mask(root / "images" / f"{stem}_part_2.png", rng.choice([0, 5], size=(8, 8)))
        rows.append([image, "train", 16, 16, 8, 8, "", f"{stem}_object.png",
                     f"{stem}_part_1.png;{stem}_part_2.png", "", str(6 + k % 2), "7;8"])
    write_csv(root / "index.csv", INDEX_COLUMNS, rows)
    return root


def zip_folder(folder, members=()):
    """The folder as a zip under ``broden1_224/`` (images stored, CSV files deflated), plus extra members."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                kind = zipfile.ZIP_DEFLATED if path.suffix == ".csv" else zipfile.ZIP_STORED
                z.write(path, f"broden1_224/{path.relative_to(folder).as_posix()}", compress_type=kind)
        for name, data in members:
            z.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def release_files(tmp_path_factory):
    """(the unpacked tiny release, its zip's bytes)."""
    folder = write_release(tmp_path_factory.mktemp("source") / "broden1_224")
    return folder, zip_folder(folder)


@pytest.fixture
def server(release_files, monkeypatch):
    """A Range-capable HTTP server: ``.data`` to serve, ``.cuts`` (bytes to send before closing, one per
    request), ``.ranges`` (False: always 200 with the whole file), ``.log`` (each request's Range header)."""
    state = SimpleNamespace(data=release_files[1], cuts=[], ranges=True, log=[])
    monkeypatch.setattr(broden, "RETRY_PAUSE_S", 0.0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            asked = self.headers.get("Range")
            state.log.append(asked)
            data, start = state.data, 0
            wanted = re.fullmatch(r"bytes=(\d+)-", asked or "")
            if wanted and state.ranges:
                start = int(wanted[1])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            self.wfile.write(body[:state.cuts.pop(0)] if state.cuts else body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.release = Release(url=f"http://127.0.0.1:{httpd.server_address[1]}/broden1_224.zip", ade20k_rows=ADE20K)
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def test_a_cut_transfer_is_resumed_checked_and_unpacked(server, tmp_path, capsys):
    cut = len(server.data) // 3
    server.cuts = [cut]
    folder = fetch(tmp_path, server.release, timeout=5)
    assert server.log == [None, f"bytes={cut}-"]
    assert folder == tmp_path.resolve() / "broden1_224" and verify_folder(folder, server.release)["ade20k"] == ADE20K
    concepts = Broden(folder)
    assert len(concepts) == ADE20K and concepts.labels(0)[0].shape == (3, 8, 8)
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"-p broden_root={folder}"
    assert any(f"stopped at {cut} bytes" in line for line in out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broden1_224", "broden1_224.json"]  # no zip, no .part
    sidecar = json.loads((tmp_path / "broden1_224.json").read_text())
    assert sidecar["sha256"] == hashlib.sha256(server.data).hexdigest() and sidecar["size"] == len(server.data)
    assert sidecar["url"] == server.release.url and sidecar["folder"] == str(folder) and sidecar["downloaded"]


def test_a_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.cuts, server.ranges = [len(server.data) // 2], False
    folder = fetch(tmp_path, server.release, keep_archive=True, say=lambda line: None, timeout=5)
    assert server.log == [None, f"bytes={len(server.data) // 2}-"]
    assert (tmp_path / "broden1_224.zip").read_bytes() == server.data  # restarted, not appended
    assert len(Broden(folder)) == ADE20K


def test_a_transfer_cut_every_time_gives_up_and_a_rerun_continues(server, tmp_path):
    server.cuts = [100, 100]
    with pytest.raises(OSError, match=r"stopped at 200 bytes after 2 attempt\(s\) .*rerun `python -m "
                       r"helpers.images.broden .*` to continue from there, or download it by hand"):
        fetch(tmp_path, server.release, attempts=2, say=lambda line: None, timeout=5)
    assert (tmp_path / "broden1_224.zip.part").stat().st_size == 200 and not (tmp_path / "broden1_224").exists()
    folder = fetch(tmp_path, server.release, keep_archive=True, say=lambda line: None, timeout=5)
    assert server.log == [None, "bytes=100-", "bytes=200-"] and len(Broden(folder)) == ADE20K
    assert (tmp_path / "broden1_224.zip").read_bytes() == server.data


def corrupt(data: bytes, member: str) -> bytes:
    """The zip with one byte of ``member``'s data flipped; the structure and the recorded CRC unchanged."""
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(member)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    at = info.header_offset + 30 + name_len + extra_len + info.compress_size // 2
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


def test_a_corrupt_archive_is_refused_and_moved_aside(server, tmp_path, capsys):
    member = "broden1_224/images/ade20k/ADE_1_object.png"
    server.data = corrupt(server.data, member)
    assert main([str(tmp_path), "--url", server.release.url]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {tmp_path / 'broden1_224.zip'} is corrupt (CRC error in member {member}): it was "
                      f"moved to broden1_224.zip.corrupt; rerun `python -m helpers.images.broden {tmp_path}` to "
                      "download it again"]
    assert not (tmp_path / "broden1_224").exists() and not (tmp_path / "broden1_224.zip").exists()
    assert (tmp_path / "broden1_224.zip.corrupt").read_bytes() == server.data
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # nothing unpacked

    wrong = Release(server.release.url, sha256="0" * 64)
    server.data = zip_folder(write_release(tmp_path / "good" / "broden1_224"))
    with pytest.raises(ValueError, match=r"broden1_224.zip is corrupt \(its SHA-256 is [0-9a-f]{64}, "
                                         r"not the expected 0+\)"):
        fetch(tmp_path / "sha", wrong, say=lambda line: None)


def test_a_good_folder_is_not_fetched_again(server, tmp_path):
    folder = fetch(tmp_path, server.release, say=lambda line: None)
    requests = list(server.log)
    lines = []
    assert fetch(tmp_path, server.release, say=lines.append) == folder
    assert server.log == requests == [None]
    assert "already unpacked and verifies" in lines[0] and lines[-1] == f"-p broden_root={folder}"


def test_an_archive_put_in_by_hand_is_used_without_a_request(server, tmp_path):
    (tmp_path / "broden1_224.zip").write_bytes(server.data)
    folder = fetch(tmp_path, server.release, say=lambda line: None)
    assert server.log == [] and len(Broden(folder)) == ADE20K and not (tmp_path / "broden1_224.zip").exists()


def test_offline_the_message_says_to_download_by_hand(tmp_path, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/broden1_224.zip"
    assert main([str(tmp_path), "--url", url]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot reach {url}")
    assert f"download it by hand into {tmp_path} as broden1_224.zip and rerun" in err[0]


def test_members_outside_the_folder_are_refused(release_files, tmp_path):
    folder, _ = release_files
    (tmp_path / "broden1_224.zip").write_bytes(zip_folder(folder, [("broden1_224/../../evil.txt", b"x")]))
    with pytest.raises(ValueError, match=r"'broden1_224/../../evil.txt', a path outside its folder"):
        fetch(tmp_path, Release("http://127.0.0.1:9/broden1_224.zip", ade20k_rows=ADE20K), say=lambda line: None)
    assert not (tmp_path / "broden1_224").exists() and not (tmp_path.parent / "evil.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["broden1_224.zip"]


def test_verify_folder_names_a_missing_column_and_a_missing_mask(release_files, tmp_path):
    release = Release("http://127.0.0.1:9/broden1_224.zip", ade20k_rows=ADE20K)
    no_split = shutil.copytree(release_files[0], tmp_path / "a" / "broden1_224")
    rows = [line.split(",") for line in (no_split / "index.csv").read_text().splitlines()]
    write_csv(no_split / "index.csv", [c for c in rows[0] if c != "split"], [r[:1] + r[2:] for r in rows[1:]])
    index = re.escape(str(no_split / "index.csv"))
    with pytest.raises(ValueError, match=rf"{index} lacks the column\(s\) \['split'\]"):
        verify_folder(no_split, release)
    no_mask = shutil.copytree(release_files[0], tmp_path / "b" / "broden1_224")
    (no_mask / "images" / "ade20k" / "ADE_2_part_2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 file\(s\) named in .*index.csv do not exist, e.g. "
                       rf"{re.escape(str(no_mask / 'images' / 'ade20k' / 'ADE_2_part_2.png'))}: .*delete"):
        verify_folder(no_mask, release)
    assert verify_folder(release_files[0], release) == {"images": ADE20K + 1, "ade20k": ADE20K, "labels": len(LABELS)}


def test_the_ade20k_count_is_checked(release_files):
    with pytest.raises(ValueError, match=rf"has {ADE20K} rows of ade20k/ images where the release "
                                         "broden1_224 has 22210"):
        verify_folder(release_files[0], Release("http://127.0.0.1:9/broden1_224.zip"))
    assert verify_folder(release_files[0], Release("http://x/broden1_224.zip", ade20k_rows=None))["ade20k"] == ADE20K
