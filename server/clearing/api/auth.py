"""API keys on the servers: a bearer key resolved to its principal through a small cache
that honours revocation within REVOCATION_BOUND_S. Keys are made, listed and revoked in
`clearing.tenancy`. Under mutual TLS, `check_certificate` refuses a key of another platform
than the one the connection's client certificate is bound to."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

import asyncpg

from clearing.config import TLS_BINDING_OFF, TLS_BINDING_REQUIRED
from clearing.errors import PermissionDenied, Unauthenticated
from clearing.ledger.model import Principal, Role
from clearing.limits import KEY_LAST_USE_FLUSH_S
from clearing.tasks import cancel_and_wait
from clearing.tenancy import ADMIN_KEY_PREFIX, hash_key
from clearing.reasons import Reason
from clearing.tls import PLATFORM_URI_PREFIX, ClientCertificate

KEY_LEN_MAX = 128
# A revoked (or deleted) key is refused by every process within REVOCATION_BOUND_S: a cached
# answer is used only while a read that started at most CONFIRMED_MAX_AGE_S ago confirms it
# (its own load, or the poll of the key table's change counter that runs every POLL_INTERVAL_S
# and drops the cache when the counter moves). Entries are reloaded after CACHE_TTL_S
# at the latest; unknown keys are remembered for NEGATIVE_TTL_S.
REVOCATION_BOUND_S = 1.0
CONFIRMED_MAX_AGE_S = 0.8
POLL_INTERVAL_S = 0.25
CACHE_TTL_S = 30.0
NEGATIVE_TTL_S = 2.0
CACHE_ENTRIES_MAX = 10_000
# Moves forward with every change to api_keys (a trigger: migration 0010).
_SQL_FINGERPRINT = "SELECT version FROM api_key_changes"

log = logging.getLogger("clearing.api.auth")


class KeyStore:
    """Resolves bearer keys to principals through a cache that never answers for a key
    longer than REVOCATION_BOUND_S after it was revoked (see the constants above). The hot
    path is a dictionary look-up; the database sees one small query per POLL_INTERVAL_S
    per process, and a look-up per key when the poll falls behind."""

    def __init__(self, pool: asyncpg.Pool, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._pool = pool
        self._clock = clock
        # digest -> (time its load started, generation, principal or None)
        self._cache: dict[bytes, tuple[float, int, Principal | None]] = {}
        self._generation = 0
        self._fingerprint: int | None = None
        self._confirmed_at = float("-inf")  # start of the last poll that saw no change
        self._poller: asyncio.Task | None = None
        self._poll_failing = False
        # keys authenticated since the last write of their last use: (admin?, key id)
        self._used: set[tuple[bool, int]] = set()
        self._used_flushed_at = clock()
        self._names: dict[int, str] = {}  # platform id -> name (mutual TLS bindings)

    async def principal(self, key: str) -> Principal:
        if not key or len(key) > KEY_LEN_MAX:
            raise Unauthenticated("missing or malformed API key", reason=Reason.API_KEY_INVALID)
        digest = hash_key(key)
        now = self._clock()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] == self._generation and self._fresh(hit, now):
            found = hit[2]
        else:
            generation = self._generation
            found = await self._load(digest, key.startswith(ADMIN_KEY_PREFIX))
            if generation == self._generation:  # no change seen while it loaded
                if len(self._cache) >= CACHE_ENTRIES_MAX:
                    self._cache.clear()
                self._cache[digest] = (now, generation, found)
        if found is None:
            raise Unauthenticated("unknown or revoked API key", reason=Reason.API_KEY_INVALID)
        self._used.add((found.is_admin, found.key_id))
        return found

    def _fresh(self, hit: tuple[float, int, Principal | None], now: float) -> bool:
        loaded_at, _, found = hit
        if loaded_at <= now - (CACHE_TTL_S if found is not None else NEGATIVE_TTL_S):
            return False
        return max(loaded_at, self._confirmed_at) > now - CONFIRMED_MAX_AGE_S

    async def platform_name(self, platform_id: int) -> str:
        """A platform's name (names never change: cached for the process's life)."""
        name = self._names.get(platform_id)
        if name is None:
            name = await self._pool.fetchval(
                "SELECT name FROM platforms WHERE platform_id = $1", platform_id) or ""
            if len(self._names) >= CACHE_ENTRIES_MAX:
                self._names.clear()
            self._names[platform_id] = name
        return name

    async def check_certificate(self, who: Principal, cert: ClientCertificate | None,
                                binding: str) -> None:
        """Mutual TLS: a client certificate bound to a platform (its URI SAN
        urn:clearing:platform:NAME) carries only that platform's keys; with binding
        `required`, a platform's key must come on a certificate naming one. The core's
        admin keys (PlatformService) belong to no platform: they come on a certificate that
        names none, `required` or not, never on a platform's. PERMISSION_DENIED otherwise."""
        if cert is None or binding == TLS_BINDING_OFF:
            return
        if not cert.readable:
            raise PermissionDenied(
                "this connection's client certificate has names (subjectAltName) that cannot "
                "be read, so the platform it is bound to cannot be known",
                reason=Reason.CLIENT_CERTIFICATE_UNREADABLE)
        if not cert.platforms:
            if binding == TLS_BINDING_REQUIRED and not who.is_admin:
                raise PermissionDenied(
                    "this connection's client certificate names no platform "
                    f"(a URI SAN {PLATFORM_URI_PREFIX}NAME) and the server requires one",
                    reason=Reason.CLIENT_CERTIFICATE_UNBOUND)
            return
        if cert.platforms != (await self.platform_name(who.platform_id),):
            raise PermissionDenied(
                "the API key belongs to another platform than the one this connection's "
                "client certificate is bound to",
                reason=Reason.CLIENT_CERTIFICATE_PLATFORM_MISMATCH,
                metadata={"certificate_platform": ",".join(cert.platforms)})

    async def _load(self, digest: bytes, admin: bool) -> Principal | None:
        if admin:  # an admin key (`clearing admin init`): PlatformService's, platform 0
            row = await self._pool.fetchrow(
                "SELECT admin_key_id FROM admin_keys WHERE key_hash = $1 AND revoked_at IS NULL",
                digest)
            return None if row is None else Principal(0, row["admin_key_id"],
                                                      frozenset({Role.ADMIN}))
        row = await self._pool.fetchrow(
            "SELECT key_id, platform_id, roles FROM api_keys"
            " WHERE key_hash = $1 AND revoked_at IS NULL", digest)
        if row is None:
            return None
        return Principal(row["platform_id"], row["key_id"], frozenset(row["roles"]))

    # ---- revocation: the poll of the key table -------------------------------------------

    async def poll(self) -> None:
        """Read the key table's fingerprint; a change drops every cached answer."""
        started = self._clock()
        fingerprint = await self._pool.fetchval(_SQL_FINGERPRINT)
        if fingerprint != self._fingerprint:
            if self._fingerprint is not None:
                log.info("api keys changed: cached keys dropped")
            self._fingerprint = fingerprint
            self._generation += 1
            self._cache.clear()
        self._confirmed_at = started

    def start(self) -> None:
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll_loop(),
                                                                  name="api-key-poll")

    async def stop(self) -> None:
        if self._poller is not None:
            await cancel_and_wait(self._poller)
            self._poller = None
            try:
                await self.flush_last_use()
            except Exception as exc:  # noqa: BLE001 - a key's last use is a hint
                log.warning("could not write the keys' last use: %r", exc)

    async def _poll_loop(self) -> None:
        while True:
            try:
                await self.poll()
                if self._poll_failing:
                    log.info("api key poll works again")
                self._poll_failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keys are then read per call
                if not self._poll_failing:
                    log.warning("api key poll failed (%r): keys are looked up per call", exc)
                self._poll_failing = True
            if self._clock() - self._used_flushed_at >= KEY_LAST_USE_FLUSH_S:
                try:
                    await self.flush_last_use()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a key's last use is a hint
                    log.warning("could not write the keys' last use: %r", exc)
            await asyncio.sleep(POLL_INTERVAL_S)

    async def flush_last_use(self) -> None:
        """Write the last use of the keys authenticated since the previous write (the
        update names no column the key table's change counter watches: caches stay)."""
        used, self._used = self._used, set()
        self._used_flushed_at = self._clock()
        platform_keys = sorted(k for admin, k in used if not admin)
        admin_keys = sorted(k for admin, k in used if admin)
        if platform_keys:
            await self._pool.execute("UPDATE api_keys SET last_used_at = now()"
                                     " WHERE key_id = ANY($1::bigint[])", platform_keys)
        if admin_keys:
            await self._pool.execute("UPDATE admin_keys SET last_used_at = now()"
                                     " WHERE admin_key_id = ANY($1::bigint[])", admin_keys)
