from pathlib import Path

import pytest

from agent.media.selftest import main


def test_selftest_passes_on_the_synthetic_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--seconds", "3", "--size", "320x240", "--chunk-seconds", "2", "--keep", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "encoder libx264" in out
    assert out.strip().endswith("PASS")
    assert "A/V +0.1" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunk-0001.mp4", "chunk-0002.mp4"]


def test_selftest_reports_a_missing_camera_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--source", "v4l2:/dev/video99"]) == 2
    assert capsys.readouterr().err == "selftest: camera /dev/video99: no such device\n"
