"""Where a caller is, as a stable area key: what mass-fault detection counts by.

Pure (stdlib and phonenumbers only). Two sources, in order:

1. the customer's profile attribute ``area`` (what the operator knows: "Chaoyang", "朝阳区",
   "chaoyang-liaoning"), normalised by `area_key`;
2. else the number's own region from libphonenumber's geocoding data: a mainland mobile prefix
   (``+86 139 0421 …``) maps to a city ("Chaoyang, Liaoning" / "辽宁省朝阳市"), a fixed line's
   area code to its city ("010" → "Beijing" / "北京市"). The key is the normalised English
   description (``chaoyang-liaoning``); the names are what an announcement says ("Chaoyang",
   "朝阳市").

A number the data places only in a country (or nowhere), a withheld number and a caller without
profile area give no area: such callers are not counted and hear no incident announcement.

    >>> area_key(" Chaoyang, Liaoning ")
    'chaoyang-liaoning'
    >>> area_key("朝阳区")
    '朝阳区'
    >>> from_number("+8613904210000").key
    'chaoyang-liaoning'
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field

import phonenumbers
from phonenumbers import geocoder

PROFILE_ATTRIBUTE = "area"
MAX_KEY_LENGTH = 64
LANGUAGES = ("en", "zh")
_NOT_KEY = re.compile(r"[^\w]+")
# A key as stored in Redis key names and policy files: letters/digits (any script), '-' between.
KEY_RE = re.compile(r"^[^\W_](?:[\w-]{0,62}[^\W_])?$")


@dataclass(frozen=True)
class Area:
    key: str
    names: Mapping[str, str] = field(default_factory=dict)  # language → what to call it
    source: str = "number"  # profile | number

    def name(self, language: str) -> str:
        return self.names.get(language) or self.names.get("en") or self.key


def area_key(text: str) -> str:
    """A stable key for an area name: NFKC, case-folded, runs of anything but letters and
    digits → '-', trimmed to 64 characters; '' when nothing is left."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    key = _NOT_KEY.sub("-", folded).replace("_", "-").strip("-")
    key = re.sub(r"-{2,}", "-", key)[:MAX_KEY_LENGTH].strip("-")
    return key if key and KEY_RE.match(key) else ""


def from_profile(attributes: Mapping[str, str] | None) -> Area | None:
    raw = (attributes or {}).get(PROFILE_ATTRIBUTE)
    if not isinstance(raw, str):
        return None
    key = area_key(raw)
    if not key:
        return None
    # what an announcement says: printable characters only (profile text is outside input)
    text = " ".join("".join(c if c.isprintable() else " " for c in raw).split())[:MAX_KEY_LENGTH]
    return Area(key, {"en": text, "zh": text}, source="profile")


def _zh_city(description: str) -> str:
    """'辽宁省朝阳市' → '朝阳市' (the province goes; a municipality stays as it is)."""
    _, sep, rest = description.partition("省")
    if sep and rest:
        return rest
    _, sep, rest = description.partition("自治区")
    return rest if sep and rest else description


def from_number(number: str | None) -> Area | None:
    """The area libphonenumber's geocoder gives an E.164 number, or None (unknown, country only)."""
    if not number or not number.startswith("+"):
        return None
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    en = geocoder.description_for_number(parsed, "en")
    country = geocoder.country_name_for_number(parsed, "en")
    if not en or en == country:
        return None
    key = area_key(en)
    if not key:
        return None
    zh = geocoder.description_for_number(parsed, "zh")
    zh_country = geocoder.country_name_for_number(parsed, "zh")
    names = {"en": en.split(",")[0].strip()}
    if zh and zh != zh_country:
        names["zh"] = _zh_city(zh)
    return Area(key, names, source="number")


def caller_area(attributes: Mapping[str, str] | None, number: str | None,
                names: Mapping[str, Mapping[str, str]] | None = None) -> Area | None:
    """The profile's area, else the number's; `names` (area key → language → name, from the
    incident policy) overrides what the area is called."""
    area = from_profile(attributes) or from_number(number)
    if area is None or not names or area.key not in names:
        return area
    return Area(area.key, {**area.names, **names[area.key]}, area.source)
