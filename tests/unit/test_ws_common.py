"""The websocket hubs' shared pieces that need no socket: the message rate window, the client
message parser and the error frame (web/ws_common.py)."""

from __future__ import annotations

import json

import pytest

from ivrserver.web.ws_common import MAX_MESSAGE, RateWindow, error_frame, parse_message


def test_the_window_allows_the_limit_then_refuses_until_it_has_passed() -> None:
    rate = RateWindow(100.0, limit=3, window=10.0)
    assert [rate.allow(100.0 + i) for i in range(4)] == [True, True, True, False]
    assert rate.allow(110.0) is False  # still the same window (10 s not yet exceeded)
    assert rate.allow(110.5) is True  # a new window starts, counting this message
    assert [rate.allow(111.0) for _ in range(3)] == [True, True, False]


def test_the_default_is_fifty_messages_per_ten_seconds() -> None:
    rate = RateWindow(0.0)
    assert all(rate.allow(0.1 * i) for i in range(50))
    assert not rate.allow(5.0)


@pytest.mark.parametrize("text", ["[]", "1", '"auth"', "{", "", None, b'{"type":"ping"}',
                                  '{"type":"ping","pad":"' + "x" * MAX_MESSAGE + '"}'])
def test_anything_but_a_json_object_of_at_most_4_kib_is_refused(text: object) -> None:
    assert parse_message(text) is None


def test_a_json_object_is_parsed() -> None:
    assert parse_message('{"type": "ping"}') == {"type": "ping"}


def test_error_frames_carry_a_status_only_when_given() -> None:
    assert json.dumps(error_frame("bad_json", "expected a JSON object")) == \
        '{"type": "error", "code": "bad_json", "message": "expected a JSON object"}'
    assert json.dumps(error_frame("too_fast", "too many messages", 429)) == \
        '{"type": "error", "code": "too_fast", "status": 429, "message": "too many messages"}'
