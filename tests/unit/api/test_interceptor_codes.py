"""Every status code the server can answer is counted: a ClearingError whose code the
interceptor's counters lack (OUT_OF_RANGE of the events cursor) made the call's bookkeeping
raise KeyError after the status was sent (review of the events merge)."""

from __future__ import annotations

import pkgutil
from importlib import import_module

import clearing
from clearing.api.interceptor import CALL_CODES
from clearing.errors import ClearingError


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_every_clearing_error_code_is_counted():
    for info in pkgutil.walk_packages(clearing.__path__, "clearing."):
        if ".console" in info.name or info.name.endswith("__main__"):
            continue
        import_module(info.name)
    codes = {cls.code for cls in _subclasses(ClearingError) if isinstance(cls.code, str)}
    assert codes - set(CALL_CODES) == set()
