"""clearing_client: a typed asyncio client for the clearing core.

    creds = tls_credentials("var/tls/ca.pem")  # the CA of the server's certificate
    async with ClearingClient("127.0.0.1:50051", api_key, credentials=creds) as c:
        custodial = await c.create_account("custodial", kind=ACCOUNT_KIND_CUSTODIAL)
        t = await c.transfer(custodial.account_id, merchant_id, 1470, "CNY")

Every write carries a request id (a new UUID unless given). Calls that fail with a
retryable status (UNAVAILABLE, RESOURCE_EXHAUSTED, ABORTED, DEADLINE_EXCEEDED) are sent
again with the SAME request, so the same request id: the server commits a write once and
answers a replay with the first result, so retrying is always safe.

The messages and stubs are in `clearing_client.v1` (generated from proto/clearing/v1, the
contract): `from clearing_client.v1 import ledger_pb2, rule_set_pb2, split_pb2, payout_pb2,
reconciliation_pb2, report_pb2`
(rule_set_pb2: RuleSet and its parts, split_pb2: SplitService and splits, event_pb2: the
events feed; `ClearingClient.watch(cursor)` follows it, `verify_webhook` checks a webhook
delivery's signature). With an admin key the client calls PlatformService too
(clearing_client.admin: create_platform, create_api_key, set_payout_config, ...). The package
installs on its own (`pip install clients/python`), without the server.
"""

from clearing_client.client import (RETRYABLE_CODES, ClearingClient, ClearingRpcError,
                                    new_request_id, tls_credentials)
from clearing_client.webhooks import (WebhookSignatureError, verify_signature,
                                      verify_webhook)
from clearing_client.v1.ledger_pb2 import (ACCOUNT_KIND_CUSTODIAL, ACCOUNT_KIND_FEE,
                                           ACCOUNT_KIND_FUNCTIONAL, ACCOUNT_KIND_MARKETING,
                                           ACCOUNT_KIND_MERCHANT, ACCOUNT_KIND_ORDINARY,
                                           ACCOUNT_KIND_PLATFORM, OWNER_TYPE_ENTERPRISE,
                                           OWNER_TYPE_INDIVIDUAL, TRANSFER_MODE_IMMEDIATE,
                                           TRANSFER_MODE_PENDING, TRANSFER_MODE_POST_PENDING,
                                           TRANSFER_MODE_VOID_PENDING)

__all__ = [
    "ClearingClient", "ClearingRpcError", "RETRYABLE_CODES", "new_request_id", "tls_credentials",
    "WebhookSignatureError", "verify_signature", "verify_webhook",
    "ACCOUNT_KIND_CUSTODIAL", "ACCOUNT_KIND_PLATFORM", "ACCOUNT_KIND_MERCHANT",
    "ACCOUNT_KIND_ORDINARY", "ACCOUNT_KIND_FEE", "ACCOUNT_KIND_MARKETING",
    "ACCOUNT_KIND_FUNCTIONAL", "OWNER_TYPE_ENTERPRISE", "OWNER_TYPE_INDIVIDUAL",
    "TRANSFER_MODE_IMMEDIATE", "TRANSFER_MODE_PENDING", "TRANSFER_MODE_POST_PENDING",
    "TRANSFER_MODE_VOID_PENDING",
]
