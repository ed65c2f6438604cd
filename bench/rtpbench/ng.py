"""rtpengine's ng control protocol, client side, just enough for a benchmark:
bencode, then offer/answer over UDP with retries.

A datagram is ``COOKIE SPACE BENCODED-DICT``; the reply repeats the cookie.
"""
from __future__ import annotations

import os
import socket
import time
from typing import Any, Optional


class NgFailure(Exception):
    pass


def bencode(value: Any) -> bytes:
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, (bytes, bytearray)):
        return b"%d:%s" % (len(value), bytes(value))
    if isinstance(value, (list, tuple)):
        return b"l" + b"".join(bencode(item) for item in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Any:
    value, end = _decode(data, 0)
    if end != len(data):
        raise ValueError("trailing bytes after the bencoded value")
    return value


def _decode(data: bytes, i: int) -> tuple[Any, int]:
    lead = data[i:i + 1]
    if lead == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1:end]), end + 1
    if lead == b"l":
        items, i = [], i + 1
        while data[i:i + 1] != b"e":
            item, i = _decode(data, i)
            items.append(item)
        return items, i + 1
    if lead == b"d":
        result, i = {}, i + 1
        while data[i:i + 1] != b"e":
            key, i = _decode(data, i)
            result[key.decode() if isinstance(key, bytes) else key], i = _decode(data, i)
        return result, i + 1
    if lead.isdigit():
        colon = data.index(b":", i)
        length = int(data[i:colon])
        return data[colon + 1:colon + 1 + length], colon + 1 + length
    raise ValueError(f"bad bencode at offset {i}")


class NgClient:
    """Blocking ng requests to (host, port): retried, bounded in time."""

    def __init__(self, address: tuple[str, int], timeout: float = 1.0, tries: int = 3) -> None:
        self.address = address
        self.timeout = timeout
        self.tries = tries
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.prefix = os.urandom(3).hex()
        self.serial = 0

    def close(self) -> None:
        self.sock.close()

    def request(self, message: dict) -> dict:
        self.serial += 1
        cookie = f"{self.prefix}{self.serial}".encode()
        data = cookie + b" " + bencode(message)
        for _ in range(self.tries):
            self.sock.sendto(data, self.address)
            deadline = time.monotonic() + self.timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.sock.settimeout(left)
                try:
                    reply = self.sock.recv(65535)
                except (socket.timeout, ConnectionRefusedError):
                    break
                got, _, body = reply.partition(b" ")
                if got != cookie:
                    continue  # a late answer to an earlier try
                answer = bdecode(body)
                result = answer.get("result", b"").decode()
                if result not in ("ok", "pong"):
                    reason = answer.get("error-reason", b"?")
                    raise NgFailure(f"{message.get('command')}: {result} {reason!r}")
                return answer
        raise NgFailure(f"{message.get('command')}: no answer from {self.address} in {self.tries} tries")

    def ping(self) -> bool:
        try:
            return self.request({"command": "ping"}).get("result") == b"pong"
        except (NgFailure, OSError, ValueError):
            return False


def offer_sdp(ip: str, port: int, session: int) -> bytes:
    """A one-stream PCMU offer/answer, as a phone would send it."""
    return (f"v=0\r\no=bench {session} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n").encode()


def media_target(sdp: bytes) -> tuple[str, int]:
    """(address, port) of the first m= line: where media for that side must be sent."""
    address: Optional[str] = None
    port: Optional[int] = None
    for raw in sdp.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if line.startswith("c=") and (port is None or address is None):
            address = line.split()[-1].split("/")[0]
        elif line.startswith("m=") and port is None:
            port = int(line.split()[1])
    if address is None or port is None:
        raise NgFailure(f"no c=/m= in the SDP returned: {sdp[:200]!r}")
    return address, port


def setup_stream(client: NgClient, index: int, a: tuple[str, int], b: tuple[str, int],
                 flags: tuple[str, ...] = ("trust-address",)) -> tuple[tuple[str, int], tuple[str, int]]:
    """offer (A's SDP) then answer (B's SDP) like a proxy does for INVITE and
    200; returns (where A sends, where B sends)."""
    call_id = f"bench-rtp-{index}-{client.prefix}"
    offer = client.request({"command": "offer", "call-id": call_id, "from-tag": f"a{index}",
                            "sdp": offer_sdp(a[0], a[1], index), "flags": list(flags)})
    b_send_to = media_target(offer["sdp"])  # the offer's rewritten SDP goes to B
    answer = client.request({"command": "answer", "call-id": call_id, "from-tag": f"a{index}",
                             "to-tag": f"b{index}", "sdp": offer_sdp(b[0], b[1], index + 100000),
                             "flags": list(flags)})
    a_send_to = media_target(answer["sdp"])  # the answer's rewritten SDP goes to A
    return a_send_to, b_send_to
