"""The transport baseline of every driver mode: a bare grpc.aio server (uvloop, the real
server's options) with the real method paths and messages, and nothing behind them.

- `/clearing.v1.LedgerService/Transfer`: takes a TransferRequest and answers a
  TransferResponse of the real one's shape (and so size): the request's fields, a transfer
  id of the same magnitude (batch_id * 65536 + position) and a creation time;
- `/clearing.v1.SplitService/Split`: a copy of a real SplitResponse (from the bench's probe
  Split: one with the government top-slice, 4 legs, one without, 3 legs, picked by the
  order's tags) with the request's order, order id, request id and a fresh split id and time;
- `/clearing.v1.SplitService/SplitBatch`: one such split outcome per order, in order;
- `/clearing.v1.SplitService/SplitStream`: one such outcome per order read, as it is read.

No interceptor, no auth, no database, no evaluation: what grpc.aio alone costs per call.

    python -m bench.echo_server --addr 127.0.0.1:PORT --gov FILE --plain FILE [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import os
import signal
import time

import grpc

from clearing.limits import BATCH_SPAN
from clearing.v1 import ledger_pb2 as lpb
from clearing.v1 import split_pb2 as pb

SPLIT_SERVICE = "clearing.v1.SplitService"
LEDGER_SERVICE = "clearing.v1.LedgerService"
GOV_TAG = "government purchase"
# Same channel options as clearing.server.start.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_CONCURRENT_RPCS = 10_000
# Real batch ids start at 1 and grow; a few hundred thousand batches gives a 9-byte varint.
FIRST_BATCH_ID = 200_000
POSITIONS_PER_BATCH = 64


def transfer_handler():
    counter = itertools.count()

    async def transfer(request: lpb.TransferRequest, context) -> lpb.TransferResponse:
        n = next(counter)
        response = lpb.TransferResponse(transfer=lpb.Transfer(
            transfer_id=(FIRST_BATCH_ID + n // POSITIONS_PER_BATCH) * BATCH_SPAN
            + n % POSITIONS_PER_BATCH,
            request_id=request.request_id, debit_account_id=request.debit_account_id,
            credit_account_id=request.credit_account_id, amount_minor=request.amount_minor,
            currency_code=request.currency_code, mode=request.mode,
            pending_transfer_id=request.pending_transfer_id, memo=request.memo))
        response.transfer.create_time.FromNanoseconds(time.time_ns() // 1000 * 1000)
        return response

    return grpc.unary_unary_rpc_method_handler(
        transfer, request_deserializer=lpb.TransferRequest.FromString,
        response_serializer=lpb.TransferResponse.SerializeToString)


def make_split(gov: pb.SplitResponse, plain: pb.SplitResponse):
    """request (SplitRequest or SplitStreamRequest) -> a Split of the real one's shape."""
    counter = itertools.count()

    def split_of(request) -> pb.Split:
        n = next(counter)
        s = pb.Split()
        s.CopyFrom((gov if GOV_TAG in request.order.tags else plain).split)
        s.split_id = (FIRST_BATCH_ID + n // POSITIONS_PER_BATCH) * BATCH_SPAN \
            + n % POSITIONS_PER_BATCH
        s.order_id = request.order.order_id
        s.request_id = request.request_id
        s.amount_minor = request.order.amount_minor
        s.order.CopyFrom(request.order)
        now = time.time_ns() // 1000 * 1000
        s.create_time.FromNanoseconds(now)
        s.update_time.FromNanoseconds(now)
        return s

    return split_of


def make_handlers(gov: pb.SplitResponse, plain: pb.SplitResponse) -> dict:
    split_of = make_split(gov, plain)

    async def split(request: pb.SplitRequest, context) -> pb.SplitResponse:
        return pb.SplitResponse(split=split_of(request))

    async def split_batch(request: pb.SplitBatchRequest, context) -> pb.SplitBatchResponse:
        return pb.SplitBatchResponse(outcomes=[
            pb.SplitOutcome(order_id=r.order.order_id, request_id=r.request_id,
                            split=split_of(r)) for r in request.requests])

    async def split_stream(request_iterator, context):
        async for r in request_iterator:
            yield pb.SplitStreamResponse(outcome=pb.SplitOutcome(
                order_id=r.order.order_id, request_id=r.request_id, split=split_of(r)))

    return {
        "Split": grpc.unary_unary_rpc_method_handler(
            split, request_deserializer=pb.SplitRequest.FromString,
            response_serializer=pb.SplitResponse.SerializeToString),
        "SplitBatch": grpc.unary_unary_rpc_method_handler(
            split_batch, request_deserializer=pb.SplitBatchRequest.FromString,
            response_serializer=pb.SplitBatchResponse.SerializeToString),
        "SplitStream": grpc.stream_stream_rpc_method_handler(
            split_stream, request_deserializer=pb.SplitStreamRequest.FromString,
            response_serializer=pb.SplitStreamResponse.SerializeToString),
    }


async def serve(addr: str, gov: pb.SplitResponse, plain: pb.SplitResponse,
                tls_files: tuple[str, str] | None = None) -> None:
    server = grpc.aio.server(
        options=[("grpc.so_reuseport", 1),
                 ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.keepalive_time_ms", 60_000)],
        maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS)
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler(SPLIT_SERVICE, make_handlers(gov, plain)),
        grpc.method_handlers_generic_handler(LEDGER_SERVICE, {"Transfer": transfer_handler()})))
    if tls_files:  # the real server's credentials (clearing.tls), for the same handshake
        from clearing.config import TlsSettings
        from clearing.tls import server_credentials

        port = server.add_secure_port(addr, server_credentials(
            TlsSettings(cert=tls_files[0], key=tls_files[1])))
    else:
        port = server.add_insecure_port(addr)
    if port == 0:
        raise SystemExit(f"echo server cannot listen on {addr}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def run_process(addr: str, gov_path: str, plain_path: str,
                tls_files: tuple[str, str] | None = None) -> None:
    import uvloop

    with open(gov_path, "rb") as f:
        gov = pb.SplitResponse.FromString(f.read())
    with open(plain_path, "rb") as f:
        plain = pb.SplitResponse.FromString(f.read())
    uvloop.run(serve(addr, gov, plain, tls_files))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--addr", required=True)
    ap.add_argument("--gov", required=True, help="serialized SplitResponse, 4 legs")
    ap.add_argument("--plain", required=True, help="serialized SplitResponse, 3 legs")
    ap.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    ap.add_argument("--tls-cert", help="serve TLS with this certificate (PEM)")
    ap.add_argument("--tls-key", help="and this key (PEM)")
    args = ap.parse_args()
    tls_files = (args.tls_cert, args.tls_key) if args.tls_cert else None
    if args.workers == 1:
        run_process(args.addr, args.gov, args.plain, tls_files)
        return
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=run_process, args=(args.addr, args.gov, args.plain, tls_files),
                         daemon=True) for _ in range(args.workers)]
    for p in procs:
        p.start()

    def forward(signum, _frame) -> None:
        for p in procs:
            if p.is_alive() and p.pid:
                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for p in procs:
        p.join()


if __name__ == "__main__":
    main()
