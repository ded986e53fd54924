import re
from datetime import timedelta

_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PATTERN = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")


def parse_duration(text: str) -> timedelta:
    """'30d', '12h', '45m', '2w' -> timedelta. Raises ValueError with the accepted forms."""
    match = _PATTERN.match(text or "")
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration; use a positive number with m, h, d or w (e.g. 30d, 12h).")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
