"""Byte sizes: tmpfs size= specs (--size) and limits in sdoverlay.conf."""

from __future__ import annotations

# No `re` here or in anything else the generator imports: re with enum was a
# quarter of the generator's run (issue 9, benchmarks/README.md).
_DIGITS = frozenset("0123456789")
_FACTORS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
PAGE = 4096
# Default cap for an overlay's tmpfs: a quarter of RAM, as tmpfs counts it.
# tmpfs only uses memory for what is written, and a quarter leaves room for
# a package or two in an unlocked /usr without letting one overlay take the
# machine's memory (tmpfs' own default is half).
DEFAULT_SIZE = "25%"


def _is_number(text: str, leading_zero: bool = True) -> bool:
    """TEXT is ASCII digits (str.isdigit also takes other scripts' digits)."""
    return bool(text) and _DIGITS.issuperset(text) and (leading_zero or text[0] != "0")


def is_tmpfs_size(value: str) -> bool:
    """What tmpfs' size= accepts and sdoverlay passes on: bytes with an
    optional k/M/G suffix (powers of 1024), or a percentage of RAM, 1-100%."""
    if value.endswith("%"):
        return _is_number(value[:-1], leading_zero=False) and int(value[:-1]) <= 100
    has_suffix = value != "" and value[-1] in "kKmMgG"
    return _is_number(value[:-1] if has_suffix else value, leading_zero=False)


def parse_bytes(value: str) -> int:
    """'512M' -> 536870912 (a K, M, G or T suffix in either case). Raises ValueError."""
    text = value.strip()
    suffix = text[-1].upper() if text != "" and text[-1].upper() in "KMGT" else ""
    digits = text[:len(text) - len(suffix)]
    if not _is_number(digits):
        raise ValueError(f"not a size: {value!r}")
    return int(digits) * _FACTORS[suffix]


def _meminfo(key: str) -> int:
    with open("/proc/meminfo", encoding="ascii") as file:
        for line in file:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no {key} in /proc/meminfo")


def mem_total_bytes() -> int:
    return _meminfo("MemTotal")


def memory_and_swap_bytes() -> int:
    """The most a tmpfs can ever hold on this machine: its memory and swap."""
    return _meminfo("MemTotal") + _meminfo("SwapTotal")


def tmpfs_size_bytes(spec: str) -> int:
    """The byte limit tmpfs will enforce for size=SPEC, rounded up to pages as tmpfs does."""
    if spec.endswith("%"):
        total = mem_total_bytes() * int(spec[:-1]) // 100
    else:
        total = parse_bytes(spec)
    return -(-total // PAGE) * PAGE


def human_bytes(count: int | None) -> str:
    """1536 -> "1.5K"; None -> "-" (an empty table cell)."""
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "K", "M", "G"):
        if value < 1024:
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}T"
