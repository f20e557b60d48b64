"""Log lines: one event per line, whatever a caller or a peer put in the values."""

from __future__ import annotations

import logging

from ivrserver.logs import JsonFormatter, TextFormatter, call_id_var


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("ivrserver.test", logging.INFO, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    rec.call_id = call_id_var.get()
    return rec


def test_text_lines_quote_values_with_spaces_and_escape_line_breaks() -> None:
    line = TextFormatter().format(record("caller %s", "15550001\nINFO forged", number="1555 0001",
                                         channel="PJSIP/x\r\nINFO forged", empty=""))
    assert "\n" not in line and "\r" not in line
    assert "caller 15550001\\nINFO forged" in line
    assert "number='1555 0001'" in line and "channel='PJSIP/x\\r\\nINFO forged'" in line and "empty=''" in line


def test_plain_values_stay_plain() -> None:
    line = TextFormatter().format(record("call finished", result="ok", script="hotline"))
    assert line.endswith("call=- call finished result=ok script=hotline")


def test_json_lines_are_one_document() -> None:
    line = JsonFormatter().format(record("caller %s", "a\nb", channel="x\ny"))
    assert "\n" not in line and '"msg": "caller a\\nb"' in line and '"channel": "x\\ny"' in line
