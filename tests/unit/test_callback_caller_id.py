"""The callbacks' caller id comes from `asterisk.hotline`, which must be a plain number."""

from __future__ import annotations

import pytest

from ivrserver import config
from ivrserver.pbx.callback_dialer import callback_caller_id


@pytest.mark.parametrize(("hotline", "caller_id"), [
    ("1860", "Callback <1860>"),
    ("95555", "Callback <95555>"),
    ("+861860", "Callback <+861860>"),
    ("*86#", "Callback <*86#>"),
])
def test_caller_id_shows_the_hotline(hotline: str, caller_id: str) -> None:
    assert callback_caller_id(hotline) == caller_id


@pytest.mark.parametrize("hotline", ["", "1860>", "1860\r\nAction: Originate", "hotline", "1" * 33, "18 60"])
def test_anything_but_a_number_is_refused(hotline: str) -> None:
    with pytest.raises(ValueError, match=r"asterisk\.hotline"):
        callback_caller_id(hotline)
    with pytest.raises(config.ConfigError, match=r"asterisk\.hotline: expected digits"):
        config.from_mapping({"asterisk": {"hotline": hotline}})


def test_the_setting_takes_a_number_written_without_quotes() -> None:
    assert config.from_mapping({"asterisk": {"hotline": 10086}}).asterisk.hotline == "10086"
