"""SplitStream reads each SplitStreamRequest as the SplitRequest of its order (no copy into a
SplitRequest, clearing.api.split `_answer`): the two messages must have the same fields, so
that an order's payload hash (what its request id is bound to) is the same whether it came
by Split, SplitBatch or SplitStream."""

from clearing.api import validate
from clearing.v1 import split_pb2 as pb


def _fields(message_cls) -> list[tuple]:
    return sorted((f.number, f.name, f.type, getattr(f, "is_repeated", None),
                   f.message_type.full_name if f.message_type else "")
                  for f in message_cls.DESCRIPTOR.fields)


def test_a_stream_request_has_the_fields_of_a_split_request():
    assert _fields(pb.SplitStreamRequest) == _fields(pb.SplitRequest)
    assert [f[1] for f in _fields(pb.SplitRequest)] == ["request_id", "order"]


def test_a_stream_request_hashes_as_the_split_request_of_its_order():
    order = pb.Order(order_id="o-1", amount_minor=10_000, currency_code="CNY", channel="card",
                     attributes={"b": "2", "a": "1"}, parties={"SUPPLIER": "s-1"})
    unary = validate.payload_hash("Split", pb.SplitRequest(request_id="r-1", order=order))
    stream = validate.payload_hash("Split", pb.SplitStreamRequest(request_id="r-1", order=order))
    other = validate.payload_hash("Split", pb.SplitStreamRequest(request_id="r-2", order=order))
    assert stream == unary and other != unary
