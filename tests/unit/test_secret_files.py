"""Key files are 0600 even when they replace a file that was there with a wider mode
(found in review: os.open's mode applies only to a file it creates; `make demo` rewrote a
refused key into the old file, and a leftover temporary file kept its mode as a TLS key)."""

from __future__ import annotations

import os
import stat

import pytest

from clearing import tls
from clearing.cli import serve
from clearing.dev import demo


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("write", [demo._write_secret, serve._write_secret])
def test_a_key_written_over_a_readable_file_is_private(tmp_path, write):
    path = tmp_path / "demo.key"
    path.write_text("ck_old\n")
    os.chmod(path, 0o644)
    write(path, "ck_new")
    assert path.read_text() == "ck_new\n" and _mode(path) == 0o600


def test_a_tls_key_is_private_despite_a_leftover_temporary_file(tmp_path):
    leftover = tmp_path / ".server.key.tmp"
    leftover.write_bytes(b"half a key")
    os.chmod(leftover, 0o644)
    tls._write(tmp_path / "server.key", b"key", secret=True)
    assert _mode(tmp_path / "server.key") == 0o600
