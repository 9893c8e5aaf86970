"""Server processes never trust a workspace file: every kind of name user code can plant there
(the same uid writes the data directory) is refused before a byte is read, without blocking."""

from __future__ import annotations

import io
import os
import signal
import socket
import stat
import subprocess
from typing import Callable, Iterator

import pytest

from pod_sandbox import wire
from pod_sandbox.executor.files import UnsafeFile, Workspace, open_regular, read_regular

KIB = 1024


def _plant_symlink_dev_zero(d: str, name: str) -> None:
    os.symlink("/dev/zero", os.path.join(d, name))


def _plant_symlink_regular(d: str, name: str) -> None:
    with open(os.path.join(d, "real.csv"), "w") as fh:
        fh.write("a\n1\n")
    os.symlink("real.csv", os.path.join(d, name))


def _plant_dangling_symlink_to_fifo(d: str, name: str) -> None:
    os.mkfifo(os.path.join(d, "pipe"))
    os.symlink(os.path.join(d, "pipe"), os.path.join(d, name))


def _plant_fifo(d: str, name: str) -> None:
    os.mkfifo(os.path.join(d, name))


def _plant_socket(d: str, name: str) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(os.path.join(d, name))
    sock.close()


def _plant_directory(d: str, name: str) -> None:
    os.mkdir(os.path.join(d, name))


def _plant_hardlink(d: str, name: str) -> None:
    with open(os.path.join(d, "other.csv"), "w") as fh:
        fh.write("a\n1\n")
    os.link(os.path.join(d, "other.csv"), os.path.join(d, name))


def _plant_char_device(d: str, name: str) -> None:
    try:
        os.mknod(os.path.join(d, name), 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero's numbers
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD (the sandbox uid has none either)")


def _plant_oversized(d: str, name: str) -> None:
    with open(os.path.join(d, name), "wb") as fh:
        fh.truncate(64 * KIB + 1)


PLANTS: dict[str, Callable[[str, str], None]] = {
    "symlink_to_dev_zero": _plant_symlink_dev_zero,
    "symlink_to_regular_file": _plant_symlink_regular,
    "symlink_to_fifo": _plant_dangling_symlink_to_fifo,
    "fifo": _plant_fifo,
    "unix_socket": _plant_socket,
    "directory": _plant_directory,
    "hard_link": _plant_hardlink,
    "char_device": _plant_char_device,
    "oversized_sparse_file": _plant_oversized,
}


@pytest.fixture
def dir_fd(tmp_path) -> Iterator[tuple[str, int]]:
    fd = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
    yield str(tmp_path), fd
    os.close(fd)


@pytest.fixture(autouse=True)
def _never_block() -> Iterator[None]:
    """A test that blocks (a FIFO opened for reading without a writer) fails instead of hanging."""
    def on_alarm(*_: object) -> None:
        raise TimeoutError("blocked in a workspace read")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("kind", sorted(PLANTS))
def test_every_non_regular_name_is_refused_unread(dir_fd, kind) -> None:
    d, fd = dir_fd
    PLANTS[kind](d, "x.csv")
    with pytest.raises(UnsafeFile) as info:
        open_regular(fd, "x.csv", 64 * KIB)
    assert info.value.name == "x.csv" and info.value.reason
    with pytest.raises(UnsafeFile):
        read_regular(fd, "x.csv", 64 * KIB)


@pytest.mark.parametrize("kind", sorted(PLANTS))
def test_workspace_download_refuses_every_non_regular_name(tmp_path, kind) -> None:
    ws = Workspace(str(tmp_path / "data"), max_upload_bytes=64 * KIB)
    ws.ensure()
    PLANTS[kind](ws.data_dir, "x.csv")
    with pytest.raises(wire.WireError) as info:
        ws.open("x.csv")
    assert info.value.http_status in (404, 413) and "x.csv" in info.value.message
    if kind != "oversized_sparse_file":  # a regular file is listed; only its download is bounded
        assert "x.csv" not in [f.name for f in ws.list()]


def test_a_regular_file_is_read_up_to_the_size_fstat_gave(dir_fd) -> None:
    d, fd = dir_fd
    with open(os.path.join(d, "a.csv"), "wb") as fh:
        fh.write(b"a\n1\n")
    data, st = read_regular(fd, "a.csv", 64 * KIB)
    assert data == b"a\n1\n" and st.st_size == 4
    with pytest.raises(FileNotFoundError):
        open_regular(fd, "missing.csv", 64 * KIB)


def test_a_growing_file_is_read_no_further_than_its_size_at_open(dir_fd) -> None:
    d, fd = dir_fd
    path = os.path.join(d, "grow.csv")
    with open(path, "wb") as fh:
        fh.write(b"x" * 1000)
    rfd, st = open_regular(fd, "grow.csv", 64 * KIB)
    try:
        with open(path, "ab") as fh:
            fh.write(b"y" * (1 << 20))
        got = os.read(rfd, 1 << 21)
    finally:
        os.close(rfd)
    assert st.st_size == 1000 and len(got) > 1000  # the fd could read on: read_regular must not
    assert read_regular(fd, "grow.csv", 2 << 20)[0].startswith(b"x" * 1000)


def test_the_data_directory_replaced_by_a_symlink_is_not_followed(tmp_path) -> None:
    ws = Workspace(str(tmp_path / "data"), max_upload_bytes=64 * KIB)
    ws.ensure()
    ws.put("a.csv", io.BytesIO(b"a\n1\n"), 4)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "b.csv").write_text("secret\n")
    os.rename(ws.data_dir, str(tmp_path / "moved"))
    os.symlink(str(elsewhere), ws.data_dir)
    assert [f.name for f in ws.list()] == ["a.csv"]  # the directory it opened, not the link
    assert ws.open("b.csv") is None


def test_upload_replaces_a_planted_symlink_instead_of_writing_through_it(tmp_path) -> None:
    ws = Workspace(str(tmp_path / "data"), max_upload_bytes=64 * KIB)
    ws.ensure()
    victim = tmp_path / "victim"
    victim.write_text("keep")
    os.symlink(str(victim), os.path.join(ws.data_dir, "a.csv"))
    ws.put("a.csv", io.BytesIO(b"new"), 3)
    assert victim.read_text() == "keep"
    assert not os.path.islink(os.path.join(ws.data_dir, "a.csv"))


def test_upload_over_a_planted_directory_is_409(tmp_path) -> None:
    ws = Workspace(str(tmp_path / "data"), max_upload_bytes=64 * KIB)
    ws.ensure()
    os.mkdir(os.path.join(ws.data_dir, "a.csv"))
    with pytest.raises(wire.WireError) as info:
        ws.put("a.csv", io.BytesIO(b"x"), 1)
    assert info.value.http_status == 409
    assert os.listdir(ws.data_dir) == ["a.csv"]  # the temporary file is gone


def test_upload_on_a_full_disk_is_507_and_leaves_nothing(tmp_path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        ws = Workspace(str(mnt / "data"), max_upload_bytes=4 << 20)
        ws.ensure()
        with pytest.raises(wire.WireError) as info:
            ws.put("big.csv", io.BytesIO(b"x" * (1 << 20)), 1 << 20)
        assert info.value.http_status == 507 and "full" in info.value.message
        assert os.listdir(ws.data_dir) == []
        os.close(ws.dir_fd)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_file_name_pattern_refuses_a_trailing_newline() -> None:
    for bad in ("a.csv\n", "a.csv\r\n", "\na.csv", "a.csv\x00"):
        with pytest.raises(wire.WireError):
            wire.validate_file_name(bad)
    with pytest.raises(wire.WireError):
        wire.validate_token("A" * 40 + "\n")
    assert wire.validate_file_name("a.csv") == "a.csv"


def test_workspace_not_open_is_not_writable() -> None:
    ws = Workspace("/nonexistent", 1)
    assert ws.writable() is False
    with pytest.raises(wire.WireError) as info:
        ws.list()
    assert info.value.http_status == 503



def test_sweep_keeps_uploads_and_uploads_in_progress_and_removes_the_rest(tmp_path) -> None:
    ws = Workspace(str(tmp_path / "data"), max_upload_bytes=64 * KIB)
    ws.ensure()
    ws.put("kept.csv", io.BytesIO(b"a\n1\n"), 4)
    ws.put("turned.csv", io.BytesIO(b"a\n1\n"), 4)
    d = ws.data_dir
    open(os.path.join(d, "junk.csv"), "w").close()
    os.mkdir(os.path.join(d, "deep"))
    open(os.path.join(d, "deep", "x"), "w").close()
    os.symlink("/dev/zero", os.path.join(d, "link.csv"))
    os.mkfifo(os.path.join(d, "fifo.csv"))
    os.unlink(os.path.join(d, "turned.csv"))
    os.symlink("kept.csv", os.path.join(d, "turned.csv"))  # an uploaded name, now a symlink

    class SweepMidUpload(io.BytesIO):
        swept = -1

        def read(self, n: int = -1) -> bytes:
            if self.swept < 0:
                self.swept = ws.sweep()  # an execution ends while this upload is written
            return super().read(n)

    body = SweepMidUpload(b"b\n2\n")
    ws.put("new.csv", body, 4)
    assert body.swept == 5
    assert sorted(os.listdir(d)) == ["kept.csv", "new.csv"]
    assert ws.sweep() == 0
