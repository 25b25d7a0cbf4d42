"""The board link's frame format: the one implementation for the host, the board testbench
and the tests (issue 16).

Request (host -> board), all integers little-endian::

    magic "HW" | version u8 | count u8 | image_len u16 | count * image_len bytes | crc u16

Reply (board -> host)::

    magic "HR" | version u8 | status u8 | count u8 | n_scores u8 |
    count * (n_scores * score i32 | argmax u8 | cycles u32) | crc u16

The CRC is CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no reflection, no final
xor) over every byte of the frame before it, the magic included. An error reply has a non-zero
status, ``count == 0`` and ``n_scores == 0``. A receiver that meets bytes which do not start a
frame skips them up to the next magic, so garbage between frames costs nothing but the garbage.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

from .errors import HwgenError

REQUEST_MAGIC = b"HW"
REPLY_MAGIC = b"HR"
VERSION = 1
MAX_COUNT = 255
HEADER = struct.Struct("<2sBBH")  # magic, version, count, image_len
REPLY_HEADER = struct.Struct("<2sBBBB")  # magic, version, status, count, n_scores
RESULT_TAIL = struct.Struct("<BI")  # argmax, cycles
CRC = struct.Struct("<H")


class Status(IntEnum):
    """A reply's status byte."""

    OK = 0
    BAD_CRC = 1
    SHORT = 2  # the frame stopped before its length (timeout or reset)
    BAD_VERSION = 3
    BAD_LENGTH = 4  # image_len is not the accelerator's input size, or count is 0


class FrameError(HwgenError, ValueError):
    """A frame that cannot be decoded; ``status`` says why, in the reply's own terms."""

    def __init__(self, status: Status, message: str):
        super().__init__(message)
        self.status = status


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (check value of b"123456789" is 0x29B1)."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _seal(body: bytes) -> bytes:
    return body + CRC.pack(crc16(body))


@dataclass(frozen=True)
class Result:
    """One image's answer: the output scores, their argmax, the accelerator's cycle count."""

    scores: tuple[int, ...]
    argmax: int
    cycles: int


@dataclass(frozen=True)
class Reply:
    status: Status
    results: tuple[Result, ...] = field(default=())


def image_bytes(image) -> bytes:
    """A ``(C, H, W)`` integer image (values 0..255) as a request carries it: raster order,
    the ``C`` values of a pixel together, channel 0 first, one byte each."""
    import numpy as np

    image = np.asarray(image)
    if image.ndim != 3 or image.min(initial=0) < 0 or image.max(initial=0) > 255:
        raise FrameError(Status.BAD_LENGTH, "an image is C×H×W values in 0..255")
    return np.transpose(image, (1, 2, 0)).astype(np.uint8).tobytes()


def encode_request(images: list[bytes]) -> bytes:
    """One request frame carrying ``images`` (each the accelerator's input bytes, all one size)."""
    if not 1 <= len(images) <= MAX_COUNT:
        raise FrameError(Status.BAD_LENGTH,
                         f"a frame carries 1..{MAX_COUNT} images, not {len(images)}")
    size = len(images[0])
    if any(len(im) != size for im in images) or not 1 <= size <= 0xFFFF:
        raise FrameError(Status.BAD_LENGTH,
                         "the images of a frame must share one size of 1..65535 bytes")
    return _seal(HEADER.pack(REQUEST_MAGIC, VERSION, len(images), size) + b"".join(images))


def encode_reply(reply: Reply) -> bytes:
    """The reply frame of ``reply``; an error reply carries no results."""
    results = reply.results if reply.status == Status.OK else ()
    n_scores = len(results[0].scores) if results else 0
    if any(len(r.scores) != n_scores for r in results):
        raise FrameError(Status.BAD_LENGTH, "the results of a reply must share one score count")
    body = [REPLY_HEADER.pack(REPLY_MAGIC, VERSION, int(reply.status), len(results), n_scores)]
    for r in results:
        body.append(struct.pack(f"<{n_scores}i", *r.scores) + RESULT_TAIL.pack(r.argmax, r.cycles))
    return _seal(b"".join(body))


def _check(frame: bytes, magic: bytes, header: struct.Struct) -> tuple:
    if len(frame) < header.size + CRC.size:
        raise FrameError(Status.SHORT, f"a frame of {len(frame)} bytes is shorter than its header")
    fields = header.unpack_from(frame)
    if fields[0] != magic:
        raise FrameError(Status.SHORT, f"a frame starts with {fields[0]!r}, not {magic!r}")
    if fields[1] != VERSION:
        raise FrameError(Status.BAD_VERSION,
                         f"frame version {fields[1]}, this hwgen speaks {VERSION}")
    return fields


def _verify_crc(frame: bytes, end: int) -> None:
    if len(frame) < end + CRC.size:
        raise FrameError(Status.SHORT, f"the frame stops at byte {len(frame)} of {end + CRC.size}")
    (got,) = CRC.unpack_from(frame, end)
    if got != crc16(frame[:end]):
        raise FrameError(Status.BAD_CRC,
                         f"CRC {got:#06x}, the bytes give {crc16(frame[:end]):#06x}")


def request_length(header: bytes) -> int:
    """The whole request's length from its first ``HEADER.size`` bytes."""
    _, _, count, size = HEADER.unpack_from(header)
    return HEADER.size + count * size + CRC.size


def decode_request(frame: bytes, image_len: int | None = None) -> list[bytes]:
    """The images of one request frame; FrameError (with the status to reply) if it is bad."""
    _, _, count, size = _check(frame, REQUEST_MAGIC, HEADER)
    end = HEADER.size + count * size
    _verify_crc(frame, end)
    if count == 0 or (image_len is not None and size != image_len):
        raise FrameError(Status.BAD_LENGTH, f"{count} images of {size} bytes; expected {image_len}")
    return [frame[HEADER.size + i * size:HEADER.size + (i + 1) * size] for i in range(count)]


def reply_length(header: bytes) -> int:
    """The whole reply's length from its first ``REPLY_HEADER.size`` bytes."""
    _, _, _, count, n_scores = REPLY_HEADER.unpack_from(header)
    return REPLY_HEADER.size + count * (4 * n_scores + RESULT_TAIL.size) + CRC.size


def decode_reply(frame: bytes) -> Reply:
    """The Reply in one reply frame; FrameError if the frame is damaged."""
    _, _, status, count, n_scores = _check(frame, REPLY_MAGIC, REPLY_HEADER)
    end = reply_length(frame) - CRC.size
    _verify_crc(frame, end)
    try:
        status = Status(status)
    except ValueError:
        raise FrameError(Status.BAD_VERSION, f"unknown reply status {status}") from None
    results, at = [], REPLY_HEADER.size
    for _ in range(count):
        scores = struct.unpack_from(f"<{n_scores}i", frame, at)
        at += 4 * n_scores
        argmax, cycles = RESULT_TAIL.unpack_from(frame, at)
        at += RESULT_TAIL.size
        results.append(Result(tuple(scores), argmax, cycles))
    return Reply(status, tuple(results))


def read_reply(read) -> Reply:
    """Read one reply through ``read(n) -> bytes`` (a serial port's read), skipping bytes before
    the reply magic. A read that returns fewer bytes than asked (a timeout) raises FrameError."""

    def exactly(n: int) -> bytes:
        data = read(n)
        if len(data) != n:
            raise FrameError(Status.SHORT, "the board stopped answering in the middle of a reply")
        return data

    window = exactly(1)
    while True:
        if window == REPLY_MAGIC:
            break
        window = (window + exactly(1))[-2:]
    head = window + exactly(REPLY_HEADER.size - 2)
    return decode_reply(head + exactly(reply_length(head) - len(head)))
