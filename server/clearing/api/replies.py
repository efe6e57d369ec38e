"""First responses of writes, as `clearing.idempotency` records them: the response message's
deterministic bytes, made here (the servicer layer) and stored and replayed as bytes."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from google.protobuf.message import Message

from clearing.ledger.model import Replay, TransferRecord

M = TypeVar("M", bound=Message)


def encode(message: Message) -> bytes:
    """The bytes a first response is recorded as."""
    return message.SerializeToString(deterministic=True)


class Reply(Generic[M]):
    """A posting's `respond`: builds the first response from the committed records (in the
    writer's batch), keeps the message and returns its bytes. `answer` is the response of
    the writer's answer: the message built here if this posting committed, else the first
    response replayed."""

    __slots__ = ("_build", "message")

    def __init__(self, build: Callable[[list[TransferRecord]], M]) -> None:
        self._build = build
        self.message: M | None = None

    def __call__(self, records: list[TransferRecord]) -> bytes:
        self.message = self._build(records)
        return encode(self.message)

    def answer(self, sent: object, cls: type[M]) -> M:
        if isinstance(sent, Replay):
            return cls.FromString(sent.response)
        if self.message is None:  # records of a request recorded without a response
            self.message = self._build(sent)  # type: ignore[arg-type]
        return self.message
