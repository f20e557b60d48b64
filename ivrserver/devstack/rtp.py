"""RFC 4733 DTMF for SIPp callers: the pcap files tests/sipp/caller.xml replays, renumbered so that
Asterisk takes every digit (pure bytes in, bytes out)."""

from __future__ import annotations

from pathlib import Path

from ivrserver.devstack.process import DevStackError

DTMF_PCAP_DIR = Path("/usr/share/sip-tester")
DTMF_POSITIONS = 16     # tests/sipp/caller.xml replays dtmf_1.pcap .. dtmf_16.pcap
_DTMF_NAMES = {**{d: d for d in "0123456789"}, "*": "star", "#": "pound"}


def dtmf_pcaps(digits: str, source: Path = DTMF_PCAP_DIR) -> dict[str, bytes]:
    """The dtmf_1.pcap .. dtmf_16.pcap files tests/sipp/caller.xml replays for RFC 4733 DTMF.

    sip-tester's dtmf_2833_<digit>.pcap files come from one recording: their RTP sequence numbers
    and timestamps are those of that recording, so "2" replayed after "4" goes back in sequence
    and Asterisk drops it. Here digit i gets sequence numbers and a timestamp after digit i-1's.
    Positions past len(digits) are filled with "0" (never played, but SIPp loads every file).
    """
    if len(digits) > DTMF_POSITIONS or any(d not in _DTMF_NAMES for d in digits):
        raise ValueError(f"at most {DTMF_POSITIONS} DTMF digits from 0-9 * #, got {digits!r}")
    files: dict[str, bytes] = {}
    for index, digit in enumerate(digits.ljust(DTMF_POSITIONS, "0")):
        pcap = (source / f"dtmf_2833_{_DTMF_NAMES[digit]}.pcap").read_bytes()
        files[f"dtmf_{index + 1}.pcap"] = _renumber_rtp(pcap, seq_base=1000 + 32 * index,
                                                        timestamp=160_000 + 16_000 * index)
    return files


def _renumber_rtp(pcap: bytes, *, seq_base: int, timestamp: int) -> bytes:
    """Rewrite RTP sequence numbers (keeping their spacing) and the timestamp in an Ethernet pcap."""
    if pcap[:4] != b"\xd4\xc3\xb2\xa1" or int.from_bytes(pcap[20:24], "little") != 1:
        raise DevStackError("expected a little-endian Ethernet pcap")
    out = bytearray(pcap)
    offset, first_seq = 24, None
    while offset + 16 <= len(out):
        length = int.from_bytes(out[offset + 8:offset + 12], "little")
        frame = offset + 16
        ip = frame + 14
        udp = ip + (out[ip] & 0x0F) * 4
        rtp = udp + 8
        seq = int.from_bytes(out[rtp + 2:rtp + 4], "big")
        first_seq = seq if first_seq is None else first_seq
        out[rtp + 2:rtp + 4] = ((seq - first_seq + seq_base) & 0xFFFF).to_bytes(2, "big")
        out[rtp + 4:rtp + 8] = timestamp.to_bytes(4, "big")
        out[udp + 6:udp + 8] = b"\x00\x00"   # UDP checksum: "none" (it no longer matches)
        offset = frame + length
    return bytes(out)

