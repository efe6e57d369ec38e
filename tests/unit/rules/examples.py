"""Example rule sets shared by the engine's tests and the SplitService tests (YAML, the
`clearing.v1.RuleSet` message's field names)."""

from tests.unit.rules.helpers import EXAMPLES

COUPONS_BASE = """
name: coupons-base
currency_code: CNY
party_roles: [seller]
rules:
  - rule_name: commission-on-full-price
    priority: 1
    shares:
      - {label: platform, type: SHARE_TYPE_RATIO, ratio_bps: 1000,
         receiver: {account_ref: PLAT_001}}
      - {label: seller, type: SHARE_TYPE_REMAINDER, receiver: {party_role: seller}}
    subsidies:
      - {label: coupon, source_account_ref: MKT, basis: SUBSIDY_BASIS_PLATFORM_COUPONS,
         target: SUBSIDY_TARGET_SPLIT_BASE, cap_minor: 1500}
"""
SHARING = """
name: sharing
currency_code: CNY
rules:
  - rule_name: sharing
    priority: 1
    shares:
      - {label: owner, type: SHARE_TYPE_RATIO, ratio_bps: 5000, receiver: {account_ref: OWNER_01}}
      - {label: platform, type: SHARE_TYPE_RATIO, ratio_bps: 3000,
         receiver: {account_ref: PLAT_001}}
      - {label: service, type: SHARE_TYPE_RATIO, ratio_bps: 1500,
         receiver: {account_ref: SERVICE_01}}
      - {label: channel, type: SHARE_TYPE_RATIO, ratio_bps: 500,
         receiver: {account_ref: CHANNEL_01}}
"""
RATIOS = """
name: ratios
currency_code: CNY
rules:
  - rule_name: fixed-ratio
    priority: 1
    condition: {channels: [ALIPAY]}
    shares:
      - {label: platform, type: SHARE_TYPE_RATIO, ratio_bps: 1000,
         receiver: {account_ref: PLAT_001}}
      - {label: merchant, type: SHARE_TYPE_REMAINDER, receiver: {account_ref: M_10086}}
  - rule_name: multi-party
    priority: 2
    shares:
      - {label: platform, type: SHARE_TYPE_RATIO, ratio_bps: 5000,
         receiver: {account_ref: PLAT_001}}
      - {label: merchant, type: SHARE_TYPE_RATIO, ratio_bps: 3000,
         receiver: {account_ref: M_10086}}
      - {label: logistics, type: SHARE_TYPE_RATIO, ratio_bps: 2000,
         receiver: {account_ref: LOGISTICS_B}}
"""
# Shipped with the product (server/clearing/rules/examples/held.yaml): the bench publishes it too.
HELD = (EXAMPLES / "held.yaml").read_text()
SUPPLIER_OWN = """
name: supplier-own
currency_code: CNY
rules:
  - rule_name: distributor-cut
    priority: 1
    shares:
      - {label: distributor, type: SHARE_TYPE_RATIO, ratio_bps: 1000,
         receiver: {account_ref: DIST_01}}
      - {label: supplier, type: SHARE_TYPE_REMAINDER, receiver: {account_ref: SUP_2025001}}
"""
PLATFORM_LEVELS = """
name: platform
currency_code: CNY
rules:
  - rule_name: platform-cut
    priority: 1
    shares:
      - {label: platform, type: SHARE_TYPE_RATIO, ratio_bps: 1000,
         receiver: {account_ref: PLAT_001}}
      - label: supplier
        type: SHARE_TYPE_REMAINDER
        receiver: {rule_set: {rule_set_name: supplier-own}}
"""
FROZEN = """
name: frozen
currency_code: CNY
party_roles: [merchant]
rules:
  - rule_name: platform-and-merchant
    priority: 1
    shares:
      - {label: platform, type: SHARE_TYPE_RATIO, ratio_bps: 1000,
         receiver: {account_ref: PLAT_001}}
      - {label: merchant, type: SHARE_TYPE_REMAINDER, receiver: {party_role: merchant}}
"""
