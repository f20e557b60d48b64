"""Every port of one local stack: `StackPorts.default()` for `make run`, `.free()` for tests."""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass

from ivrserver.devstack.process import DevStackError

AGENT_NUMBERS = tuple(range(1001, 1011))

# Ports for StackPorts.free() blocks and for SIPp media sockets: above the RTP range
# (10000-29999), below the kernel's ephemeral range (32768+) so that outgoing sockets of other
# programs do not take them; two separate ranges so a SIPp media socket never takes the port of
# another stack's (not yet started) phone.
FREE_BLOCK_RANGE = (30000, 32000)
MEDIA_PORT_RANGE = (32000, 32760)


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port nothing holds right now, as the kernel picks it (TCP by default, UDP with
    SOCK_DGRAM): for a server of ours that is about to bind it."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing holds `port` on `host`, for UDP and for TCP."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def tcp_listen_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a TCP server could listen on `port` now, binding as servers do (SO_REUSEADDR):
    connections of a previous server in TIME_WAIT do not count as taken, a listener does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            s.listen(1)
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class StackPorts:
    """Every address of one stack (all on 127.0.0.1 except agi_host, which is the FastAGI target)."""

    sip_port: int            # Asterisk's pjsip UDP transport
    caller_port: int         # SIPp caller, endpoint `callers` (RFC 4733 DTMF)
    caller_info_port: int    # SIPp caller, endpoint `callers-info` (SIP INFO DTMF)
    agent_base_port: int     # agent1001 listens here, agent1002 on +1 ... agent1010 on +9
    customer_port: int       # SIPp UAS playing the customers' phones (trunk `customers`)
    ami_port: int            # Asterisk Manager Interface (TCP)
    agi_host: str            # where Asterisk connects for FastAGI (ivrserver)
    agi_port: int
    rtp_start: int = 10000
    rtp_end: int = 29999

    @classmethod
    def default(cls) -> StackPorts:
        """The fixed ports of `make run` (SIP 5060, AMI 5038, FastAGI 4573)."""
        return cls(sip_port=5060, caller_port=5061, caller_info_port=5062, agent_base_port=5071,
                   customer_port=5090, ami_port=5038, agi_host="127.0.0.1", agi_port=4573)

    @classmethod
    def free(cls, *, attempts: int = 200) -> StackPorts:
        """16 consecutive ports, all free for UDP and TCP right now, chosen at random.

        Layout from the block's base b: sip b, callers b+1, callers-info b+2, customer b+3,
        AMI b+4, FastAGI b+5, agents b+6..b+15.
        """
        low, high = FREE_BLOCK_RANGE
        for _ in range(attempts):
            base = random.randrange(low, high - 16)
            if all(port_free(p) for p in range(base, base + 16)):
                return cls(sip_port=base, caller_port=base + 1, caller_info_port=base + 2,
                           customer_port=base + 3, ami_port=base + 4, agi_host="127.0.0.1",
                           agi_port=base + 5, agent_base_port=base + 6)
        raise DevStackError(f"no block of 16 free ports found in {low}-{high}")

    def agent_port(self, agent: int | str) -> int:
        """Port of an agent phone: `agent_port(1003)` or `agent_port("agent1003")`."""
        number = int(str(agent).removeprefix("PJSIP/").removeprefix("agent"))
        if number not in AGENT_NUMBERS:
            raise ValueError(f"no agent {agent!r}: agents are agent1001..agent1010")
        return self.agent_base_port + number - AGENT_NUMBERS[0]

