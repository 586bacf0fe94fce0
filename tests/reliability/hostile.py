"""Hostile and broken payloads, made in the test: images that lie about themselves, and raw HTTP.

Raw sockets are for what httpx will not send: unnormalised paths (`..`),
declared lengths that the body never meets, bodies larger than memory should hold.
"""
from __future__ import annotations

import json
import select
import socket
import struct
import zlib
from dataclasses import dataclass

from PIL import Image

from tests.conftest import encoded

CHUNK = bytes(1 << 20)  # one MiB of zeros, sent again and again: a 100 MB upload never exists in memory


def noise(fmt: str, size: tuple[int, int] = (128, 128)) -> bytes:
    """Incompressible pixels, so that cutting the file loses image data, not just padding."""
    return encoded(Image.effect_noise(size, 60).convert("RGB"), fmt)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A ~60-byte PNG whose header declares width x height 8-bit grey pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))


def gif_declaring(width: int, height: int) -> bytes:
    """A GIF whose logical screen is width x height, with one 1x1 frame."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return screen + frame + b"\x3b"


def with_bad_crc(png: bytes) -> bytes:
    """The PNG with one byte of its first IDAT chunk flipped: the chunk's CRC no longer matches."""
    corrupt = bytearray(png)
    corrupt[png.index(b"IDAT") + 10] ^= 0xFF
    return bytes(corrupt)


@dataclass(frozen=True)
class RawReply:
    status: int
    headers: dict[str, str]
    body: dict
    sent: int  # request bytes the server had taken when its answer arrived


def exchange(port: int, head: bytes, body: bytes = b"", zeros: int = 0, chunked: bool = False,
             timeout: float = 30) -> RawReply:
    """Send `head` and `body`, then up to `zeros` zero bytes (chunked or not) until the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + (b"%x\r\n%s\r\n" % (len(body), body) if chunked and body else body))
        sent = len(body)
        try:
            while sent < len(body) + zeros and not select.select([sock], [], [], 0)[0]:
                piece = CHUNK[: len(body) + zeros - sent]
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and hung up: its answer is already in our receive buffer
        return _read_reply(sock, sent)


def _read_reply(sock: socket.socket, sent: int) -> RawReply:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            raise ConnectionError(f"the server closed the connection without an answer: {data!r}")
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return RawReply(int(lines[0].split()[1]), headers, json.loads(body), sent)
