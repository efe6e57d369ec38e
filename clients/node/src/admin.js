// PlatformService, the core's admin API, as methods of ClearingClient (installed on its
// prototype by client.js). They answer admin keys only (`clearing admin init` makes the first
// one, var/admin.key); a platform's key is refused (PERMISSION_DENIED ROLE_REQUIRED). The same
// as the Python client's (clients/python/clearing_client/admin.py) in camelCase.
//
// Retries are safe like every other call's: createPlatform, createApiKey and setPayoutConfig
// carry a request id (a new UUID unless given; a retry sends the same one and the server
// answers the first result: createApiKey's replay has `keyShownBefore` set and no key, a key
// being shown once). revokeApiKey and setBusinessCalendar are idempotent. Approving or
// rejecting a change twice is refused (FAILED_PRECONDITION PAYOUT_CONFIG_CHANGE_NOT_PENDING,
// `metadata.state` the decision made), so a retry after a lost answer never decides twice.

import { create } from "@bufbuild/protobuf";

import * as platform from "../gen/clearing/v1/platform_pb.js";
import { int64, newRequestId } from "./values.js";

/** A day as YYYY-MM-DD: a string as it is, a Date by its UTC date. */
function day(value) {
  return value instanceof Date ? value.toISOString().slice(0, 10) : value;
}

export const adminMethods = {
  /** A new platform (tenant): `name` 1 to 64 letters, digits, '.', '_' or '-'. */
  async createPlatform(name, { requestId } = {}) {
    return (await this.call(this.platform.createPlatform, create(
      platform.CreatePlatformRequestSchema, { name, requestId: requestId || newRequestId() },
    ))).platform;
  },

  /** One platform, by id or by name (`{ name }`). */
  async getPlatform(platformId = 0n, { name = "" } = {}) {
    return (await this.call(this.platform.getPlatform, create(platform.GetPlatformRequestSchema, {
      platformId: int64(platformId, "platformId"), name,
    }))).platform;
  },

  /** A page of the platforms, by id (pageSize 0: the server's default). */
  listPlatforms({ pageSize = 0, pageToken = "" } = {}) {
    return this.call(this.platform.listPlatforms,
      create(platform.ListPlatformsRequestSchema, { pageSize, pageToken }));
  },

  /** A new key of a platform with `roles` (gateway, operator, approver, ...). The response's
   * `key` is the secret, shown once (empty, `keyShownBefore`, on a replay of the request id). */
  createApiKey(platformId, roles, { requestId } = {}) {
    return this.call(this.platform.createApiKey, create(platform.CreateApiKeyRequestSchema, {
      platformId: int64(platformId, "platformId"), roles, requestId: requestId || newRequestId(),
    }));
  },

  /** A page of API keys (never the secrets): a platform's (0: every platform's), those whose
   * prefix is `keyPrefix` when given. */
  listApiKeys(platformId = 0n, { keyPrefix = "", pageSize = 0, pageToken = "" } = {}) {
    return this.call(this.platform.listApiKeys, create(platform.ListApiKeysRequestSchema, {
      platformId: int64(platformId, "platformId"), keyPrefix, pageSize, pageToken,
    }));
  },

  /** Revoke a key (refused from then on); `revokedBefore` if it already was. */
  revokeApiKey(keyId) {
    return this.call(this.platform.revokeApiKey,
      create(platform.RevokeApiKeyRequestSchema, { keyId: int64(keyId, "keyId") }));
  },

  /** The payout configuration in force (`config`) and the change waiting for approval
   * (`pendingChange`, undefined if none). */
  getPayoutConfig(platformId, currencyCode) {
    return this.call(this.platform.getPayoutConfig, create(platform.GetPayoutConfigRequestSchema, {
      platformId: int64(platformId, "platformId"), currencyCode,
    }));
  },

  /** Set every field of a payout configuration (get it first, change what you mean to): the
   * change is APPLIED, or PENDING another admin key's approval when it changes the fee. */
  async setPayoutConfig(config, { requestId } = {}) {
    return (await this.call(this.platform.setPayoutConfig,
      create(platform.SetPayoutConfigRequestSchema, {
        requestId: requestId || newRequestId(), config,
      }))).change;
  },

  /** Approve (and apply) a pending change; not with the admin key that made it
   * (PERMISSION_DENIED MAKER_CHECKER). */
  async approvePayoutConfigChange(changeId, { note = "" } = {}) {
    return (await this.call(this.platform.approvePayoutConfigChange,
      create(platform.ApprovePayoutConfigChangeRequestSchema, {
        changeId: int64(changeId, "changeId"), note,
      }))).change;
  },

  /** Reject a pending change; nothing changes. */
  async rejectPayoutConfigChange(changeId, { note = "" } = {}) {
    return (await this.call(this.platform.rejectPayoutConfigChange,
      create(platform.RejectPayoutConfigChangeRequestSchema, {
        changeId: int64(changeId, "changeId"), note,
      }))).change;
  },

  /** The calendar's exceptions (holidays, working weekend days) between two days, both
   * included (YYYY-MM-DD strings, or Dates by their UTC day). */
  async getBusinessCalendar(startDay, endDay) {
    return (await this.call(this.platform.getBusinessCalendar,
      create(platform.GetBusinessCalendarRequestSchema, {
        startDay: day(startDay), endDay: day(endDay),
      }))).days;
  },

  /** Set days of the calendar in one transaction: `{ day, kind, note }` each (`kind`: a
   * CalendarDayKind, UNSET back to Monday to Friday). The days as set. */
  async setBusinessCalendar(days) {
    return (await this.call(this.platform.setBusinessCalendar,
      create(platform.SetBusinessCalendarRequestSchema, {
        days: days.map((d) => ({ ...d, day: day(d.day) })),
      }))).days;
  },
};
