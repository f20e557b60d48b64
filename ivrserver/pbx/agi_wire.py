"""The FastAGI wire format, pure: request headers, command encoding, reply parsing.

Wire lines as Asterisk's res_agi.c writes them::

    agi_network: yes
    agi_network_script: hotline?lang=en
    agi_callerid: 15550001
    <blank line ends the header block>

    200 result=0 endpos=12032          (STREAM FILE, no key pressed)
    200 result=49 endpos=8000          (STREAM FILE, '1' pressed: ASCII code)
    200 result=123 (timeout)           (GET DATA, digits then the inter-digit timeout)
    200 result= (timeout)              (GET DATA, nothing entered)
    200 result=1 (the value)           (GET VARIABLE)
    100 result=0 Trying...             (GOSUB: intermediate, keep reading)
    510 Invalid or unknown command
    511 Command Not Permitted on a dead channel or intercept routine
    520-Invalid command syntax.  Proper usage follows:
    ...usage lines...
    520 End of proper usage.
    HANGUP                             (out of band: the channel hung up)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

MAX_LINE = 8192
MAX_ARGS = 128
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,79}$")
_ESCAPE_DIGITS = re.compile(r"^[0-9*#]*$")
# Relative to Asterisk's sounds directory, or absolute (rendered text prompts in a cache directory
# outside it: prompts.asterisk_dir); never with a "..".
_FILE_NAME = re.compile(r"^/?[A-Za-z0-9_][A-Za-z0-9_./-]{0,199}$")
_HEADER_NAME = re.compile(r"agi_[a-z0-9_]+")
_VERB = re.compile(r"[A-Z]+( [A-Z]+)*")
_DATA_TAIL = re.compile(r"(\s+\w+=\S*)*\s*")  # what may follow the ')' closing a reply's data


class AgiEncodingError(ValueError):
    """A value cannot be sent safely in an AGI command."""


class AgiProtocolError(ValueError):
    """Asterisk (or a peer) sent something that is not valid AGI."""


@dataclass(frozen=True)
class AgiRequest:
    """The header block Asterisk sends when a FastAGI connection opens."""

    headers: dict[str, str]
    script: str
    query: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()

    def get(self, name: str) -> str:
        """Header value without the `agi_` prefix, '' when absent."""
        return self.headers.get(name, "")

    @property
    def callerid(self) -> str:
        return self.get("callerid")

    @property
    def calleridname(self) -> str:
        return self.get("calleridname")

    @property
    def uniqueid(self) -> str:
        return self.get("uniqueid")

    @property
    def channel(self) -> str:
        return self.get("channel")

    @property
    def language(self) -> str:
        return self.get("language")

    @property
    def dnid(self) -> str:
        return self.get("dnid")

    @property
    def extension(self) -> str:
        return self.get("extension")


def parse_header_line(line: str) -> tuple[str, str]:
    """`agi_callerid: 15550001` → ("callerid", "15550001")."""
    name, sep, value = line.partition(":")
    if not sep or not name.startswith("agi_") or not _HEADER_NAME.fullmatch(name):
        raise AgiProtocolError(f"not an AGI header line: {line[:80]!r}")
    return name[4:], value.strip()


def build_request(headers: dict[str, str]) -> AgiRequest:
    """Turn parsed headers into a request: script path, query string and arguments."""
    raw = headers.get("network_script", "")
    path, _, query = raw.partition("?")
    script = path.strip("/")
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        params.setdefault(key, value)
    args = []
    n = 1
    while f"arg_{n}" in headers:
        args.append(headers[f"arg_{n}"])
        n += 1
    return AgiRequest(headers=headers, script=script, query=params, args=tuple(args))


def quote(value: str) -> str:
    """Encode one argument so that it stays ONE argument of ONE command line.

    A newline cannot be escaped in AGI, so CR, LF and NUL are refused outright.
    """
    if "\n" in value or "\r" in value or "\x00" in value:
        raise AgiEncodingError("CR, LF and NUL cannot be sent in an AGI argument")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_var_name(name: str) -> str:
    """Variable names are never built from caller data; still refuse anything but a plain name
    (a name ending in `)` would run a dialplan function)."""
    if not _VAR_NAME.match(name):
        raise AgiEncodingError(f"not a plain channel variable name: {name!r}")
    return name


def check_escape_digits(digits: str) -> str:
    if not _ESCAPE_DIGITS.match(digits):
        raise AgiEncodingError(f"escape digits must be 0-9, * or #: {digits!r}")
    return digits


def check_sound(name: str) -> str:
    """Sound file names come from validated menus; refuse path tricks anyway."""
    if not _FILE_NAME.match(name) or ".." in name:
        raise AgiEncodingError(f"not a sound file name: {name!r}")
    return name


def command(verb: str, *args: str | int) -> bytes:
    """Build one command line. `verb` is a constant of ours (e.g. 'STREAM FILE')."""
    if not _VERB.fullmatch(verb):
        raise AgiEncodingError(f"not an AGI verb: {verb!r}")
    parts = [verb]
    for arg in args:
        parts.append(str(arg) if isinstance(arg, int) else quote(arg))
    if len(parts) - 1 > MAX_ARGS:
        raise AgiEncodingError("too many AGI arguments")
    line = " ".join(parts) + "\n"
    data = line.encode("utf-8")
    if len(data) > MAX_LINE:
        raise AgiEncodingError(f"AGI command longer than {MAX_LINE} bytes")
    return data


@dataclass(frozen=True)
class AgiReply:
    code: int
    result: str = ""
    data: str | None = None  # the text in parentheses, e.g. "timeout" or a variable's value
    extra: dict[str, str] = field(default_factory=dict)  # e.g. endpos
    text: str = ""  # the raw reply (for 5xx, the message and usage lines)

    @property
    def timed_out(self) -> bool:
        return self.data == "timeout"


_REPLY = re.compile(r"^(\d{3})([ -])(.*)$")
_RESULT = re.compile(r"^result=(\S*)(.*)$")


def parse_reply_line(line: str) -> AgiReply:
    """Parse a single-line reply (`200 …`, `510 …`, `511 …`); a `520-` start is handled by the caller."""
    m = _REPLY.match(line)
    if not m:
        raise AgiProtocolError(f"not an AGI reply: {line[:80]!r}")
    code = int(m.group(1))
    rest = m.group(3)
    if code != 200:
        return AgiReply(code=code, text=rest)
    r = _RESULT.match(rest)
    if not r:
        raise AgiProtocolError(f"200 reply without result=: {line[:80]!r}")
    result, tail = r.group(1), r.group(2)
    data: str | None = None
    extra: dict[str, str] = {}
    tail = tail.strip()
    if tail.startswith("("):
        # A variable's value may itself hold ')' and spaces: the data runs to the last ')'
        # that is followed only by key=value pairs.
        end = tail.rfind(")")
        while end > 0 and not _DATA_TAIL.fullmatch(tail, end + 1):
            end = tail.rfind(")", 0, end)
        if end <= 0:
            raise AgiProtocolError(f"unbalanced parentheses in reply: {line[:80]!r}")
        data = tail[1:end]
        tail = tail[end + 1:]
    for token in tail.split():
        key, sep, value = token.partition("=")
        if sep:
            extra[key] = value
    return AgiReply(code=code, result=result, data=data, extra=extra, text=rest)
