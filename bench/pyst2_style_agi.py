"""A classic (process-per-call) AGI script with pyst2 0.5.1, for bench/fastagi_bench.py.

Asterisk fork/execs a classic AGI for every call and speaks AGI on its stdin/stdout; the bench's
bridge does the same with the FastAGI socket as stdin/stdout. The script walks the same hotline
path as ivrserver (same commands, same order) using pyst2's `asterisk.agi.AGI`.

The caller's balance is read from Redis with a 20-line RESP client over a socket (stdlib only):
importing redis-py would add ~0.2 s of CPU to every call's start-up (measured here), which would
make the process-per-call row look even worse than the model itself does.
Environment: BENCH_REDIS_URL (redis://host:port/db), BENCH_PREFIX (key prefix).
"""

from __future__ import annotations

import json
import os
import random
import socket
import sys
from collections.abc import Sequence
from typing import BinaryIO
from urllib.parse import urlparse

from asterisk.agi import AGI, AGIAppError, AGIHangup

MAIN_PROMPTS = ("hello", "vm-press", "digits/1", "for", "vm-youhave", "digits/dollars")
FAULTS_PROMPTS = ("vm-press", "digits/1", "for", "telephone-number", "vm-tocallback")
AFTER_BALANCE_PROMPTS = ("vm-press", "digits/1", "to-listen-to-it", "vm-press", "digits/2", "vm-goodbye")
MENU_KEYS = "0123456789*#"


def redis_command(sock: socket.socket, reader: BinaryIO, *args: str) -> object:
    """One RESP command; returns str, int, None or a list."""
    out = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    sock.sendall(out.encode())
    return read_reply(reader)


def read_reply(reader: BinaryIO) -> object:
    line = reader.readline().decode().rstrip("\r\n")
    kind, rest = line[0], line[1:]
    if kind in "+-":
        return rest
    if kind == ":":
        return int(rest)
    if kind == "$":
        n = int(rest)
        return None if n < 0 else reader.read(n + 2)[:-2].decode()
    if kind == "*":
        return [read_reply(reader) for _ in range(int(rest))] if int(rest) >= 0 else None
    raise ValueError(f"bad RESP reply {line!r}")


def balance_of(number: str) -> str | None:
    url = urlparse(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    prefix = os.environ.get("BENCH_PREFIX", "ivr")
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379), 2) as sock:
        reader = sock.makefile("rb")
        db = (url.path or "/0").strip("/") or "0"
        if db != "0":
            redis_command(sock, reader, "SELECT", db)
        ids = redis_command(sock, reader, "SMEMBERS", f"{prefix}:phone:{number}")
        if not isinstance(ids, list) or len(ids) != 1:
            return None
        raw = redis_command(sock, reader, "GET", f"{prefix}:customer:{ids[0]}")
        if not isinstance(raw, str):
            return None
        return (json.loads(raw).get("attributes") or {}).get("balance")


def menu(agi: AGI, prompts: Sequence[str], keys: str) -> str | None:
    for _ in range(3):
        for prompt in prompts:
            key = agi.stream_file(prompt, keys)
            if key:
                return str(key)
        key = agi.wait_for_digit(5000)
        if key and key in keys:
            return str(key)
        agi.stream_file("vm-pls-try-again")
    return None


def set_all(agi: AGI, values: Sequence[tuple[str, str]]) -> None:
    for name, value in values:
        agi.set_variable(name, value)


def main() -> int:
    with open(os.devnull, "w") as devnull:
        agi = AGI(stdin=sys.stdin, stdout=sys.stdout, stderr=devnull)
        balance = balance_of(agi.env.get("agi_callerid", ""))
        try:
            agi.set_variable("IVR_CONTEXT_ID", f"c-{random.getrandbits(64):016x}")
            agi.set_variable("IVR_REASON", "no rule matched -> menu")
            key = menu(agi, MAIN_PROMPTS, MENU_KEYS)
            if key == "3":
                if menu(agi, FAULTS_PROMPTS, MENU_KEYS) == "1":
                    agi.stream_file("one-moment-please")
                    set_all(agi, (("IVR_ACTION", "queue"), ("IVR_QUEUE", "faults"), ("IVR_PRIORITY", "2"),
                                  ("IVR_REASON", "ivr:faults:1")))
                    return 0
            elif key == "1" and balance is not None:
                agi.stream_file("vm-youhave")
                agi.say_number(int(balance))
                agi.stream_file("digits/dollars")
                menu(agi, AFTER_BALANCE_PROMPTS, MENU_KEYS)
            set_all(agi, (("IVR_ACTION", "queue"), ("IVR_QUEUE", "general"), ("IVR_PRIORITY", "0"),
                          ("IVR_REASON", "ivr:human")))
        except (AGIHangup, AGIAppError):
            return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
