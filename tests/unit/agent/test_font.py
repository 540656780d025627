import string

import numpy as np
import pytest

from agent.media import font


def test_every_printable_ascii_character_has_a_glyph():
    printable = set(string.printable) - set("\t\n\r\x0b\x0c")
    missing = [ch for ch in printable if not font.supported(ch)]
    assert missing == []


def test_render_text_shape_scales_with_length_and_scale():
    mask = font.render_text("AB", 3)
    assert mask.shape == (font.CELL_H * 3, font.CELL_W * 3 * 2)
    assert mask.dtype == np.bool_


def test_glyph_shapes_are_distinct():
    glyphs = {ch: font.render_text(ch).tobytes() for ch in string.ascii_letters + string.digits}
    assert len(set(glyphs.values())) == len(glyphs)


def test_space_is_blank_and_letters_are_not():
    assert not font.render_text(" ").any()
    assert font.render_text("W").any()


def test_unknown_characters_render_as_the_fallback_glyph():
    assert np.array_equal(font.render_text("执"), font.render_text(font.FALLBACK))


def test_rendered_masks_are_read_only_because_they_are_cached():
    mask = font.render_text("X", 2)
    with pytest.raises(ValueError, match="read-only"):
        mask[0, 0] = True
