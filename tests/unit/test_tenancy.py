"""clearing.tenancy is domain code: no grpc, no generated code, no servicers; its keys."""

from __future__ import annotations

import hashlib
import subprocess
import sys

from clearing import tenancy
from tests.support import ROOT

FORBIDDEN = ("grpc", "grpc_status", "google.protobuf", "clearing.v1", "clearing.api",
             "clearing_client")


def test_tenancy_imports_neither_grpc_nor_generated_code():
    probe = ("import sys, clearing.tenancy; print(' '.join(sorted(m for m in sys.modules"
             f" if any(m == f or m.startswith(f + '.') for f in {FORBIDDEN!r}))))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=60).stdout
    assert out.strip() == ""


def test_a_new_key_has_the_prefix_and_32_random_bytes():
    keys = {tenancy.new_key() for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert key.startswith(tenancy.KEY_PREFIX)
        assert len(key) == len(tenancy.KEY_PREFIX) + 43  # 32 bytes, urlsafe base64 unpadded
    assert tenancy.PREFIX_LEN == 8 and tenancy.PREFIX_LEN > len(tenancy.KEY_PREFIX)


def test_only_the_sha256_of_a_key_is_kept():
    assert tenancy.hash_key("ck_abc") == hashlib.sha256(b"ck_abc").digest()
    assert len(tenancy.hash_key("ck_abc")) == 32
