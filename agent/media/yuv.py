"""Views into a yuv420p frame held as one numpy array, the layout PyAV's ``from_ndarray`` takes.

A frame of ``width`` x ``height`` is an array of shape ``(height * 3 // 2, width)``: the Y plane,
then the U plane, then the V plane, each chroma plane ``(height // 2, width // 2)`` stored
contiguously. Drawing directly in this layout avoids a colour conversion (rgb to yuv costs 4 to
12 ms a frame at 720p; see PLATFORM-NOTES).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]

# Limited ("TV") range, which H.264 encoders and players assume for yuv420p.
Y_BLACK = 16
Y_WHITE = 235
C_NEUTRAL = 128


def new_image(width: int, height: int) -> Image:
    """A black yuv420p frame."""
    check_size(width, height)
    img = np.empty((height * 3 // 2, width), dtype=np.uint8)
    img[:height] = Y_BLACK
    img[height:] = C_NEUTRAL
    return img


def check_size(width: int, height: int) -> None:
    """4:2:0 chroma needs even dimensions."""
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise ValueError(f"yuv420p needs positive even dimensions, got {width}x{height}")


def planes(img: Image, width: int, height: int) -> tuple[Image, Image, Image]:
    """The Y, U and V planes of ``img`` as writable 2-D views (no copy)."""
    cw, ch = width // 2, height // 2
    flat = img.reshape(-1)
    y = flat[: width * height].reshape(height, width)
    u = flat[width * height : width * height + cw * ch].reshape(ch, cw)
    v = flat[width * height + cw * ch : width * height + 2 * cw * ch].reshape(ch, cw)
    return y, u, v
