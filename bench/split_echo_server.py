"""The Split baseline: a bare grpc.aio server (uvloop) with ONE unary method,
`/clearing.v1.SplitService/Split`, taking a `clearing.v1.SplitRequest` and answering a
`clearing.v1.SplitResponse` of the real one's shape and size: a copy of a real response
(from the bench's probe Split: one with the government top-slice, 4 legs, one without, 3
legs, picked by the order's tags) with the request's order, order id, request id and a
fresh split id and time. No interceptor, no auth, no database, no evaluation.

    python -m bench.split_echo_server --addr 127.0.0.1:PORT --gov FILE --plain FILE
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import time

import grpc

from bench.echo_server import FIRST_BATCH_ID, MAX_CONCURRENT_RPCS, MAX_MESSAGE_BYTES, \
    POSITIONS_PER_BATCH
from clearing.ledger.model import BATCH_SPAN
from clearing.v1 import split_pb2 as pb

SERVICE = "clearing.v1.SplitService"
METHOD = "Split"
GOV_TAG = "government purchase"


def make_handler(gov: pb.SplitResponse, plain: pb.SplitResponse):
    counter = itertools.count()

    async def split(request: pb.SplitRequest, context) -> pb.SplitResponse:
        n = next(counter)
        response = pb.SplitResponse()
        response.CopyFrom(gov if GOV_TAG in request.order.tags else plain)
        s = response.split
        s.split_id = (FIRST_BATCH_ID + n // POSITIONS_PER_BATCH) * BATCH_SPAN \
            + n % POSITIONS_PER_BATCH
        s.order_id = request.order.order_id
        s.request_id = request.request_id
        s.amount_minor = request.order.amount_minor
        s.order.CopyFrom(request.order)
        now = time.time_ns() // 1000 * 1000
        s.create_time.FromNanoseconds(now)
        s.update_time.FromNanoseconds(now)
        return response

    return grpc.unary_unary_rpc_method_handler(
        split, request_deserializer=pb.SplitRequest.FromString,
        response_serializer=pb.SplitResponse.SerializeToString)


async def serve(addr: str, gov: pb.SplitResponse, plain: pb.SplitResponse) -> None:
    server = grpc.aio.server(
        options=[("grpc.so_reuseport", 1),
                 ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.keepalive_time_ms", 60_000)],
        maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {METHOD: make_handler(gov, plain)}),))
    if server.add_insecure_port(addr) == 0:
        raise SystemExit(f"split echo server cannot listen on {addr}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    import uvloop

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--addr", required=True)
    ap.add_argument("--gov", required=True, help="serialized SplitResponse, 4 legs")
    ap.add_argument("--plain", required=True, help="serialized SplitResponse, 3 legs")
    args = ap.parse_args()
    with open(args.gov, "rb") as f:
        gov = pb.SplitResponse.FromString(f.read())
    with open(args.plain, "rb") as f:
        plain = pb.SplitResponse.FromString(f.read())
    uvloop.run(serve(args.addr, gov, plain))


if __name__ == "__main__":
    main()
