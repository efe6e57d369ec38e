"""The baseline: a bare grpc.aio server (uvloop, like the real one) with ONE unary method.

It is registered as `/clearing.v1.LedgerService/Transfer`, takes a `clearing.v1.TransferRequest`
and answers a `clearing.v1.TransferResponse` of the shape (and so the size) of the real one:
the request's fields, a transfer id of the same magnitude (batch_id * 65536 + position) and a
creation time. No interceptor, no auth, no database: what grpc.aio alone costs per call.
The load generator is the same code for both servers; it sends the same bearer metadata,
which this server ignores.

    python -m bench.echo_server --addr 127.0.0.1:PORT [--workers N]
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

from clearing.ledger.model import BATCH_SPAN
from clearing.v1 import ledger_pb2 as pb

SERVICE = "clearing.v1.LedgerService"
METHOD = "Transfer"
# Same channel options as clearing.server.start.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_CONCURRENT_RPCS = 10_000
# Real batch ids start at 1 and grow; a few hundred thousand batches gives a 9-byte varint.
FIRST_BATCH_ID = 200_000
POSITIONS_PER_BATCH = 64


def make_handler():
    counter = itertools.count()

    async def transfer(request: pb.TransferRequest, context) -> pb.TransferResponse:
        n = next(counter)
        response = pb.TransferResponse(transfer=pb.Transfer(
            transfer_id=(FIRST_BATCH_ID + n // POSITIONS_PER_BATCH) * BATCH_SPAN
            + n % POSITIONS_PER_BATCH,
            request_id=request.request_id, debit_account_id=request.debit_account_id,
            credit_account_id=request.credit_account_id, amount_minor=request.amount_minor,
            currency_code=request.currency_code, mode=request.mode,
            pending_transfer_id=request.pending_transfer_id, memo=request.memo))
        response.transfer.create_time.FromNanoseconds(time.time_ns() // 1000 * 1000)
        return response

    return grpc.unary_unary_rpc_method_handler(
        transfer, request_deserializer=pb.TransferRequest.FromString,
        response_serializer=pb.TransferResponse.SerializeToString)


async def serve(addr: str) -> None:
    server = grpc.aio.server(
        options=[("grpc.so_reuseport", 1),
                 ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.keepalive_time_ms", 60_000)],
        maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {METHOD: make_handler()}),))
    if server.add_insecure_port(addr) == 0:
        raise SystemExit(f"echo server cannot listen on {addr}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def run_process(addr: str) -> None:
    import uvloop

    uvloop.run(serve(addr))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--addr", required=True, help="host:port to listen on")
    ap.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    args = ap.parse_args()
    if args.workers == 1:
        run_process(args.addr)
        return
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=run_process, args=(args.addr,), daemon=True)
             for _ in range(args.workers)]
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
