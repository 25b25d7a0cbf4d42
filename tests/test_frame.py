"""The board link's frame format (hwgen.frame): round trips and every corrupt-frame case."""

import io

import pytest

from hwgen import frame
from hwgen.frame import FrameError, Reply, Result, Status

IMAGES = [bytes(range(i, i + 64)) for i in (0, 7, 100)]
RESULTS = (Result((5, -3, 120000, 0), 2, 4321), Result((-1, -2, -3, -4), 0, 4400))


def test_crc16_check_value():
    assert frame.crc16(b"123456789") == 0x29B1


def test_request_round_trip():
    wire = frame.encode_request(IMAGES)
    assert frame.request_length(wire[:frame.HEADER.size]) == len(wire)
    assert frame.decode_request(wire, image_len=64) == IMAGES


def test_reply_round_trip():
    for reply in (Reply(Status.OK, RESULTS), Reply(Status.BAD_CRC)):
        wire = frame.encode_reply(reply)
        assert frame.reply_length(wire[:frame.REPLY_HEADER.size]) == len(wire)
        assert frame.decode_reply(wire) == reply


@pytest.mark.parametrize("damage, status", [
    (lambda w: w[:8] + bytes([w[8] ^ 1]) + w[9:], Status.BAD_CRC),   # a payload bit flipped
    (lambda w: w[:-1] + bytes([w[-1] ^ 0x80]), Status.BAD_CRC),      # a CRC bit flipped
    (lambda w: w[:-3], Status.SHORT),                                  # cut off
    (lambda w: w[:3], Status.SHORT),                                   # shorter than the header
    (lambda w: b"xx" + w[2:], Status.SHORT),                           # not a frame at all
    (lambda w: w[:2] + b"\x09" + w[3:], Status.BAD_VERSION),
])
def test_corrupt_request(damage, status):
    with pytest.raises(FrameError) as err:
        frame.decode_request(damage(frame.encode_request(IMAGES)), image_len=64)
    assert err.value.status == status


def test_wrong_image_size_is_bad_length():
    with pytest.raises(FrameError) as err:
        frame.decode_request(frame.encode_request(IMAGES), image_len=63)
    assert err.value.status == Status.BAD_LENGTH


@pytest.mark.parametrize("images", [[], [b"a", b"bc"], [b""], [b"x"] * 256])
def test_encode_request_refuses_bad_batches(images):
    with pytest.raises(FrameError):
        frame.encode_request(images)


def test_read_reply_skips_garbage_and_reads_exactly_one_frame():
    good = frame.encode_reply(Reply(Status.OK, RESULTS))
    port = io.BytesIO(b"\x00HHxR" + good + b"next")
    assert frame.read_reply(port.read) == Reply(Status.OK, RESULTS)
    assert port.read() == b"next"


def test_read_reply_timeout_is_short():
    good = frame.encode_reply(Reply(Status.OK, RESULTS))
    with pytest.raises(FrameError) as err:
        frame.read_reply(io.BytesIO(good[:-4]).read)
    assert err.value.status == Status.SHORT
