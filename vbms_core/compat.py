"""The one place that papers over CPython / MicroPython differences."""

try:
    from micropython import const  # noqa: F401
except ImportError:

    def const(value):
        return value


def ascii_field(raw):
    """A NUL-terminated ASCII field as text; bytes outside 0x20..0x7E become '?'.

    Written out by hand because MicroPython's bytes.decode() knows no error
    handlers, and the result must be identical on both interpreters: decode()
    only takes a field that is printable ASCII throughout.
    """
    raw = bytes(raw)
    end = raw.find(b"\x00")
    if end >= 0:
        raw = raw[:end]
    if not raw:
        return ""
    if min(raw) >= 0x20 and max(raw) < 0x7F:
        return raw.decode()  # all printable: as it is (the common case, a loop in C)
    chars = []
    for byte in raw:
        chars.append(chr(byte) if 0x20 <= byte < 0x7F else "?")
    return "".join(chars)


def hexlify(raw):
    """Upper-case hex without separators (binascii differs between ports)."""
    return "".join("%02X" % byte for byte in raw)


def unhexlify(text):
    """Hex text (spaces, colons and a 0x prefix tolerated) to bytes.

    Raises ValueError on anything that is not an even number of hex digits.
    """
    text = text.strip()
    if text[:2] in ("0x", "0X"):
        text = text[2:]
    digits = "".join(ch for ch in text if ch not in " :\t\r\n-")
    if len(digits) % 2:
        raise ValueError("odd number of hex digits")
    try:
        return bytes(int(digits[i : i + 2], 16) for i in range(0, len(digits), 2))
    except ValueError:
        raise ValueError("not a hex string") from None


def bit_names(mask, names):
    """Names of the set bits of mask, in bit order; names is a tuple indexed by bit."""
    found = []
    bit = 0
    while mask:
        if mask & 1:
            found.append(names[bit] if bit < len(names) and names[bit] else "bit%d" % bit)
        mask >>= 1
        bit += 1
    return found


def f32_scaled(bits, scale):
    """round(f32(bits) * scale) computed with integers only, or None for NaN/inf.

    JK04 frames carry IEEE-754 singles.  Converting through the host float would
    give different last digits on an ESP32 (single-precision floats) and on
    CPython; integer arithmetic gives the same answer everywhere.  Rounds half
    away from zero.
    """
    negative = bits >> 31
    exponent = (bits >> 23) & 0xFF
    mantissa = bits & 0x7FFFFF
    if exponent == 0xFF:
        return None
    if exponent:
        mantissa |= 0x800000
        shift = exponent - 150
    else:
        shift = -149
    numerator = mantissa * scale
    if shift >= 0:
        value = numerator << shift
    else:
        denominator = 1 << -shift
        value = (2 * numerator + denominator) // (2 * denominator)
    return -value if negative else value


def _f32_exact(bits):
    """An IEEE-754 single as (signed integer, power of two): value = integer * 2**power.

    None for NaN and infinity.
    """
    exponent = (bits >> 23) & 0xFF
    mantissa = bits & 0x7FFFFF
    if exponent == 0xFF:
        return None
    if exponent:
        mantissa |= 0x800000
        power = exponent - 150
    else:
        power = -149
    return (-mantissa if bits >> 31 else mantissa), power


def f32_sum_scaled(bits_list, scale):
    """round(sum(f32(bits) for bits in bits_list) * scale), exactly, or None if one is NaN/inf.

    The singles are added without any intermediate rounding (integers over the
    common power of two), then the sum is scaled and rounded once, half away
    from zero.  JK04 pack voltage = the sum of its float cell voltages, as
    esphome computes it; summing the cells already rounded to millivolts gives
    a different last digit.
    """
    parts = []
    for bits in bits_list:
        exact = _f32_exact(bits)
        if exact is None:
            return None
        parts.append(exact)
    if not parts:
        return 0
    lowest = min(power for _, power in parts)
    numerator = 0
    for integer, power in parts:
        numerator += integer << (power - lowest)
    numerator *= scale
    if lowest >= 0:
        return numerator << lowest
    return div_round(numerator, 1 << -lowest)


def clamp(value, low, high):
    return low if value < low else high if value > high else value


def div_round(numerator, denominator):
    """Integer division rounding half away from zero (// floors on both ports)."""
    if numerator < 0:
        return -((-numerator * 2 + denominator) // (2 * denominator))
    return (numerator * 2 + denominator) // (2 * denominator)
