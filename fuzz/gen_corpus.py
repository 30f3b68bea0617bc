#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (run once; the files are committed)."""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def frame(kind, body=b""):
    return struct.pack(">IB", len(body), kind) + body


def short(s):
    return bytes([len(s)]) + s


def hello(name, flags=0, token=b""):
    return frame(0x01, bytes([1, flags]) + short(name) + short(token))


def join(room, flags=0):
    return frame(0x02, bytes([flags]) + room)


def leave(room):
    return frame(0x03, room)


def publish(room, payload):
    return frame(0x04, short(room) + payload)


def ping(nonce):
    return frame(0x05, struct.pack(">Q", nonce))


def pong(nonce):
    return frame(0x06, struct.pack(">Q", nonce))


def step(conn, data=b"", action=0):
    """One session-target step: [ctrl][len][bytes]."""
    assert len(data) <= 255
    return bytes([(action << 2) | conn, len(data)]) + data


TICK = lambda conn, units: step(conn, action=47 + units)  # advances 3 * units seconds
STALL = lambda conn: step(conn, action=44)  # the client stops reading, or reads again
HANGUP = lambda conn: step(conn, action=62)
REOPEN = lambda conn: step(conn, action=63)

seeds = {
    "client_frame": {
        "hello_join_publish": hello(b"alice") + join(b"lobby") + publish(b"lobby", b"hi") + ping(0x0102030405060708)
        + pong(7) + leave(b"lobby"),
        "hello_echo_token": hello(b"bob.b-1_", flags=1, token=b"secret") + join(b"room!~", flags=1),
        "publish_empty_payload": publish(b"r", b"") + publish(b"lobby", bytes(range(256))),
        "frame_too_large": bytes.fromhex("0010000001"),
        "unknown_type": frame(0x3F) + frame(0x10, b"x"),
        "partial": hello(b"carol")[:9],
        # A 4 GiB declaration (the hostile test's), refused from its header alone.
        "declares_4gib": hello(b"mallory") + join(b"lobby") + bytes.fromhex("ffffffff04"),
        # Exactly the max body (66,560): framed and parsed, refused only by the payload limit.
        "body_at_limit": frame(0x04, short(b"r") + b"p" * (66_560 - 2)) + ping(1),
        # Regressions of the fixed encoder finding: parsed names and rooms longer than the protocol allows.
        "regress_publish_room_67": hello(b"alice") + join(b"lobby") + publish(bytes(range(0x43, 0x86)), b"payload"),
        "regress_publish_room_255": publish(bytes((0x5C + i) % 256 for i in range(255)), b""),
        "regress_hello_name_255": hello(b"n" * 255, token=b"t" * 255),
    },
    "line_splitter": {
        "lines": b"\x40hello\r\nworld\n\npartial",
        "long_line": b"\x80" + b"a" * 4097 + b"\n",
        "limit_line": b"\x10" + b"b" * 4096 + b"\r\n" + b"c" * 4097,
        "crlf_split": b"\xff" + b"x\r\r\n\r\n\n",
    },
    "session": {
        "worked_example": step(0, hello(b"alice") + join(b"lobby")) + step(1, hello(b"bob") + join(b"lobby"))
        + step(0, publish(b"lobby", b"hi")) + step(0, ping(0x0102030405060708)) + step(1, frame(0x3F)),
        "line_and_binary": step(0, b"hello from nc\n") + step(1, hello(b"dave", flags=1) + join(b"lobby"))
        + step(1, publish(b"lobby", b"x\ny\rz")) + step(0, b"line two\r\n") + step(2, b"x" * 200),
        "timeouts": step(0, hello(b"erin")) + TICK(0, 11) + TICK(0, 11) + step(1, hello(b"frank")) + TICK(1, 1),
        "hangup_reopen": step(0, hello(b"gina") + join(b"r")) + step(1, hello(b"hal") + join(b"r")) + HANGUP(0)
        + REOPEN(0) + step(0, hello(b"gina") + join(b"r")) + step(1, publish(b"r", b"again")),
        # A join flood: 70 distinct rooms, past the 64-per-connection limit.
        "join_flood": step(0, hello(b"jack")) + b"".join(
            step(0, b"".join(join(b"flood-%02d" % (i + k)) for k in range(10))) for i in range(0, 70, 10)
        ) + step(1, hello(b"kim") + join(b"flood-00")) + step(0, publish(b"flood-00", b"after the flood")),
        # Slowloris: HELLO one byte per step, 3 s apart: cut by the 10 s handshake timeout.
        "slowloris": b"".join(step(0, bytes([b])) + TICK(0, 1) for b in hello(b"slow")),
        # A 4 GiB declaration after joining, then the clock runs on.
        "declares_4gib": step(0, hello(b"mallory") + join(b"lobby")) + step(1, hello(b"nick") + join(b"lobby"))
        + step(0, bytes.fromhex("ffffffff04")) + step(1, publish(b"lobby", b"still here")) + TICK(0, 1),
        # A reader that stops reading while another publishes: cut at the (harness's 4 KiB) output limit.
        "stalled_reader": step(0, hello(b"olga") + join(b"r")) + step(1, hello(b"pete") + join(b"r")) + STALL(1)
        + b"".join(step(0, publish(b"r", bytes([i]) * 200)) for i in range(30)) + STALL(1) + step(1, ping(9)),
        # A client that stalls before its WELCOME and then lets the handshake timeout pass.
        "stalled_handshake": STALL(2) + step(2, hello(b"quinn")) + TICK(2, 4) + STALL(2) + step(0, hello(b"rita")),
        "request_errors": step(2, hello(b"ivy") + leave(b"nope") + join(b"a") + join(b"a") + join(b"bad room"))
        + step(2, join(b"s", flags=1) + publish(b"s", b"m") + publish(b"t", b"m") + hello(b"ivy")),
    },
}

for target, files in seeds.items():
    os.makedirs(os.path.join(ROOT, target), exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(ROOT, target, name), "wb") as f:
            f.write(data)
        print(f"{target}/{name}: {len(data)} bytes")
