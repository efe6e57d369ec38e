"""One load-generator process for bench.split_bench: bench.loadgen's closed loop and
protocol (config JSON, READY, GO, result JSON), with Split / SplitBatch requests.

Config keys on top of bench.loadgen's: `kind` ("split" or "batch"), `batch_size`,
`rule_set_name`, `gov_fraction`. Every order has a unique order id and every request a
unique request id. Orders match the B2B rule set: a `gov_fraction` of them carry the
"government purchase" tag (top-slice rule), amounts from 1,000.00 to 900,000.00 CNY with
customer_type enterprise (promotion rule at >= 500,000.00, base rule below).

For SplitBatch one call is one batch; a call whose outcomes are not all splits counts as a
failed call (CLIENT_BatchItemFailed) with the first item error as its sample.
"""

from __future__ import annotations

import asyncio
import random

import grpc

from bench import loadgen
from clearing.v1 import split_pb2 as pb


class SplitRequests:
    def __init__(self, cfg: dict) -> None:
        self._rng = random.Random(cfg["seed"])
        self._prefix = cfg["rid_prefix"]
        self._kind = cfg["kind"]
        self._batch_size = cfg.get("batch_size", 1)
        self._rule_set = cfg["rule_set_name"]
        self._gov = cfg["gov_fraction"]
        self._currency = cfg["currency"]
        self._n = 0  # calls made
        self._orders = 0

    def _one(self) -> pb.SplitRequest:
        self._orders += 1
        rng = self._rng
        tag = f"{self._prefix}{self._orders:010x}"
        tags = ["enterprise purchase"]
        if rng.random() < self._gov:
            tags.append("government purchase")
        return pb.SplitRequest(request_id="r" + tag, order=pb.Order(
            order_id="o" + tag, amount_minor=rng.randint(100_000, 90_000_000),
            currency_code=self._currency, channel="UNIONPAY", tags=tags,
            attributes={"customer_type": "enterprise"}, rule_set_name=self._rule_set))

    def next(self):
        self._n += 1
        if self._kind == "split":
            return self._one()
        return pb.SplitBatchRequest(request_id=f"b{self._prefix}{self._n:08x}",
                                    requests=[self._one() for _ in range(self._batch_size)])


class BatchItemFailed(Exception):
    pass


def _checked(call):
    async def wrapped(request, *, metadata, timeout):
        response = await call(request, metadata=metadata, timeout=timeout)
        for o in response.outcomes:
            if o.WhichOneof("result") != "split":
                raise BatchItemFailed(f"{o.error.reason}: {o.error.message}")
        if len(response.outcomes) != len(request.requests):
            raise BatchItemFailed(f"{len(response.outcomes)} outcomes for "
                                  f"{len(request.requests)} orders")
        return response
    return wrapped


async def main_async(cfg: dict) -> dict:
    channels = [grpc.aio.insecure_channel(cfg["target"], options=[
        ("grpc.use_local_subchannel_pool", 1), ("grpc.keepalive_time_ms", 60_000),
        ("grpc.max_receive_message_length", 16 * 1024 * 1024),
        ("grpc.max_send_message_length", 16 * 1024 * 1024)])
        for _ in range(cfg["channels"])]
    try:
        for ch in channels:
            await asyncio.wait_for(ch.channel_ready(), timeout=cfg["connect_timeout_s"])
        if cfg["kind"] == "split":
            calls = [ch.unary_unary(cfg["method"],
                                    request_serializer=pb.SplitRequest.SerializeToString,
                                    response_deserializer=pb.SplitResponse.FromString)
                     for ch in channels]
        else:
            calls = [_checked(ch.unary_unary(
                cfg["method"], request_serializer=pb.SplitBatchRequest.SerializeToString,
                response_deserializer=pb.SplitBatchResponse.FromString)) for ch in channels]
        start = await loadgen.ready_then_go()
        return await loadgen.closed_loop(cfg, calls, start, requests=SplitRequests)
    finally:
        for ch in channels:
            await ch.close()


def main() -> None:
    loadgen.run_child(main_async)


if __name__ == "__main__":
    main()
