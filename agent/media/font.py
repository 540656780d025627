"""A 5x7 bitmap font for printable ASCII, kept as Python data so no font file is needed at run time.

The glyph shapes follow the classic HD44780 character ROM (public-domain shapes used by countless
displays), which stays legible at the 1x to 4x scales the watermark uses. Each glyph is seven
rows, top to bottom, two hex digits per row; bit 4 is the leftmost of the five columns.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt

GLYPH_W = 5
GLYPH_H = 7
# A cell adds one blank column and one blank row so neighbouring glyphs and lines never touch.
CELL_W = GLYPH_W + 1
CELL_H = GLYPH_H + 1

_GLYPHS: dict[str, str] = {
    " ": "00000000000000", "!": "04040404000004", '"': "0A0A0A00000000", "#": "0A0A1F0A1F0A0A",
    "$": "040F140E051E04", "%": "18190204081303", "&": "0C12140815120D", "'": "0C040800000000",
    "(": "02040808080402", ")": "08040202020408", "*": "0004150E150400", "+": "0004041F040400",
    ",": "000000000C0408", "-": "0000001F000000", ".": "00000000000C0C", "/": "00010204081000",
    "0": "0E11131519110E", "1": "040C040404040E", "2": "0E11010204081F",
    "3": "1F02040201110E", "4": "02060A121F0202", "5": "1F101E0101110E",
    "6": "0608101E11110E", "7": "1F010204080808", "8": "0E11110E11110E", "9": "0E11110F01020C",
    ":": "000C0C000C0C00", ";": "000C0C000C0408", "<": "02040810080402", "=": "00001F001F0000",
    ">": "08040201020408", "?": "0E110102040004", "@": "0E11010D15150E", "A": "0E1111111F1111",
    "B": "1E11111E11111E", "C": "0E11101010110E", "D": "1C12111111121C", "E": "1F10101E10101F",
    "F": "1F10101E101010", "G": "0E11101711110F", "H": "1111111F111111",
    "I": "0E04040404040E", "J": "0702020202120C", "K": "11121418141211", "L": "1010101010101F",
    "M": "111B1515111111", "N": "11111915131111", "O": "0E11111111110E", "P": "1E11111E101010",
    "Q": "0E11111115120D", "R": "1E11111E141211", "S": "0F10100E01011E", "T": "1F040404040404",
    "U": "1111111111110E", "V": "11111111110A04", "W": "1111111515150A", "X": "11110A040A1111",
    "Y": "1111110A040404", "Z": "1F01020408101F", "[": "0E08080808080E", "\\": "00100804020100",
    "]": "0E02020202020E", "^": "040A1100000000", "_": "0000000000001F", "`": "08040200000000",
    "a": "00000E010F110F", "b": "1010161911111E", "c": "00000E1010110E",
    "d": "01010D1311110F", "e": "00000E111F100E", "f": "0609081C080808", "g": "000F11110F010E",
    "h": "10101619111111", "i": "04000C0404040E", "j": "0200060202120C", "k": "10101214181412",
    "l": "0C04040404040E", "m": "00001A15151111", "n": "00001619111111", "o": "00000E1111110E",
    "p": "00001E111E1010", "q": "00000D130F0101", "r": "00001619101010", "s": "00000E100E011E",
    "t": "08081C08080906", "u": "0000111111130D", "v": "00001111110A04",
    "w": "0000111115150A", "x": "0000110A040A11", "y": "000011110F010E",
    "z": "00001F0204081F", "{": "02040408040402", "|": "04040404040404", "}": "08040402040408",
    "~": "00000815020000",
}

# Characters outside the table (non-ASCII names, control characters) are drawn as this glyph,
# so a watermark never silently drops a character.
FALLBACK = "?"


def _build_table() -> npt.NDArray[np.bool_]:
    table = np.zeros((128, CELL_H, CELL_W), dtype=np.bool_)
    for ch, rows in _GLYPHS.items():
        if len(rows) != 2 * GLYPH_H:
            raise AssertionError(f"glyph {ch!r} has {len(rows)} hex digits, expected {2 * GLYPH_H}")
        for r in range(GLYPH_H):
            bits = int(rows[2 * r : 2 * r + 2], 16)
            for c in range(GLYPH_W):
                table[ord(ch), r, c] = bool(bits & (1 << (GLYPH_W - 1 - c)))
    return table


_TABLE = _build_table()


def supported(ch: str) -> bool:
    """Whether ``ch`` has its own glyph (otherwise it renders as ``?``)."""
    return ch in _GLYPHS


@lru_cache(maxsize=256)
def render_text(text: str, scale: int = 1) -> npt.NDArray[np.bool_]:
    """Render one line of text as a boolean mask of shape ``(CELL_H*scale, CELL_W*scale*len(text))``.

    The result is cached and must not be modified by callers.
    """
    if scale < 1:
        raise ValueError("scale must be at least 1")
    codes = np.fromiter(
        (ord(ch) if ch in _GLYPHS else ord(FALLBACK) for ch in text), dtype=np.intp, count=len(text)
    )
    cells = _TABLE[codes]  # (n, CELL_H, CELL_W)
    line = cells.transpose(1, 0, 2).reshape(CELL_H, CELL_W * len(text))
    if scale > 1:
        line = np.repeat(np.repeat(line, scale, axis=0), scale, axis=1)
    line.flags.writeable = False
    return line
