"""The evidence watermark burnt into every frame: local time with its UTC offset, device, officer.

Body-worn recorders under GA/T 947 show the time, the device number and the officer number on the
picture itself, so a still or a screen recording keeps its context. The text is drawn white on an
opaque dark box straight into the yuv420p planes with the embedded bitmap font: no font file, no
colour conversion. The box is rendered once per distinct text (the time changes once a second) and
pasted into each frame, which costs a few microseconds of copying.
"""

from __future__ import annotations

from datetime import datetime, tzinfo

import numpy as np

from agent.media import font
from agent.media.yuv import C_NEUTRAL, Y_BLACK, Y_WHITE, Image, check_size, planes


def format_local_time(time_ms: int, tz: tzinfo | None = None) -> str:
    """``2026-11-22 23:50:01 +08:00``: local time to the second with its UTC offset.

    ``tz=None`` means the system's local zone, with the offset valid at that instant (so a DST
    change shows the right offset); pass a fixed zone for reproducible output.
    """
    moment = datetime.fromtimestamp(time_ms / 1000, tz) if tz else datetime.fromtimestamp(time_ms / 1000)
    if tz is None:
        moment = moment.astimezone()
    offset = moment.strftime("%z")  # "+0800"
    return f"{moment:%Y-%m-%d %H:%M:%S} {offset[:3]}:{offset[3:5]}"


def default_scale(height: int) -> int:
    """Glyph scale for a frame height: 1 at 240p, 3 at 720p, 4 at 1080p (about 2% of the height)."""
    return max(1, height // 240)


class Watermark:
    """Draws the evidence watermark into yuv420p frames of one size."""

    def __init__(
        self,
        width: int,
        height: int,
        *,
        device_id: str,
        officer_id: str | None = None,
        tz: tzinfo | None = None,
        scale: int | None = None,
    ) -> None:
        check_size(width, height)
        self.width = width
        self.height = height
        self.device_id = device_id
        self.officer_id = officer_id
        self.tz = tz
        self._scale = scale or default_scale(height)
        self._cached_lines: tuple[str, ...] = ()
        self._patch: Image | None = None

    def lines(self, time_ms: int) -> tuple[str, ...]:
        """The text lines shown for a frame captured at ``time_ms``."""
        who = f"DEV {self.device_id}"
        if self.officer_id:
            who += f"  OFC {self.officer_id}"
        return (format_local_time(time_ms, self.tz), who)

    def apply(self, image: Image, time_ms: int) -> None:
        """Burn the watermark for ``time_ms`` into ``image`` in place."""
        lines = self.lines(time_ms)
        if lines != self._cached_lines or self._patch is None:
            self._patch = self._render(lines)
            self._cached_lines = lines
        patch = self._patch
        y, u, v = planes(image, self.width, self.height)
        r0, c0 = self._origin()
        ph, pw = patch.shape
        y[r0 : r0 + ph, c0 : c0 + pw] = patch
        # Neutral chroma makes the box grey-black whatever colour was under it.
        u[r0 // 2 : (r0 + ph) // 2, c0 // 2 : (c0 + pw) // 2] = C_NEUTRAL
        v[r0 // 2 : (r0 + ph) // 2, c0 // 2 : (c0 + pw) // 2] = C_NEUTRAL

    def box(self) -> tuple[int, int, int, int]:
        """``(top, left, height, width)`` of the last drawn box (for tests and layout)."""
        if self._patch is None:
            raise RuntimeError("nothing drawn yet")
        r0, c0 = self._origin()
        return r0, c0, self._patch.shape[0], self._patch.shape[1]

    def _origin(self) -> tuple[int, int]:
        # Even coordinates keep the box aligned with the 2x2 chroma grid.
        margin = 2 * self._scale
        return margin, margin

    def _render(self, lines: tuple[str, ...]) -> Image:
        scale = self._scale
        pad = 2 * scale
        r0, c0 = self._origin()
        max_w = self.width - c0 - 2 * pad
        max_h = self.height - r0 - 2 * pad
        # Shrink the glyphs until the longest line fits; as a last resort cut lines at the edge
        # rather than fail, since a partly visible watermark beats a missing frame.
        while scale > 1 and max(len(s) for s in lines) * font.CELL_W * scale > max_w:
            scale -= 1
        masks = [font.render_text(s, scale) for s in lines]
        text_h = min(sum(m.shape[0] for m in masks), max_h)
        text_w = min(max(m.shape[1] for m in masks), max_w)
        # Even sizes so the chroma rectangle covers exactly the luma one.
        box_h = (text_h + 2 * pad + 1) & ~1
        box_w = (text_w + 2 * pad + 1) & ~1
        patch = np.full((box_h, box_w), Y_BLACK, dtype=np.uint8)
        row = pad
        for m in masks:
            h = min(m.shape[0], box_h - pad - row)
            w = min(m.shape[1], box_w - 2 * pad)
            if h <= 0:
                break
            region = patch[row : row + h, pad : pad + w]
            region[m[:h, :w]] = Y_WHITE
            row += m.shape[0]
        return patch
