"""``custody verify PACKAGE --server-key KEY [--checkpoint FILE ...]``: check a case export offline.

A court runs this with nothing but the package and the server's public key: it imports only
protocol/ and the standard library (and PyAV, when installed, to check that chunks decode). It
prints the numbered checklist of protocol/verify_package.py and exits 0 only when every step
passed. ``--checkpoint`` takes checkpoints obtained elsewhere (a witness's state directory, a
device, an earlier download) and fails loudly when one shows another history (a fork).
"""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from protocol.errors import CustodyError
from protocol.verify_package import Report, TrustedKey, verify_package

if TYPE_CHECKING:
    Sub = argparse._SubParsersAction[argparse.ArgumentParser]

EXIT_OK, EXIT_FAILED = 0, 1
MAX_MEMBER_BYTES = 2 << 30


def register(sub: Sub) -> None:
    """Add ``custody verify``."""
    p = sub.add_parser("verify", help="verify a case export package offline (needs only the server's public key)",
                       description="Check every byte, signature, chain link, receipt and log proof of a case "
                                   "export, trusting only the server key you give. Exit status 0 only when every "
                                   "step passes.")
    p.add_argument("package", type=Path, help="the export (.zip, or a directory it was unpacked to)")
    p.add_argument("--server-key", required=True,
                   help="the server's public key, or a file holding it: its note verifier key (GET /api/v1/log/key), "
                        "its 64-hex fingerprint, or the raw key in base64")
    p.add_argument("--checkpoint", action="append", default=[], type=Path, metavar="FILE",
                   help="a checkpoint obtained elsewhere (witness, device); must be consistent with the package's")
    p.add_argument("--consistency", action="append", default=[], type=Path, metavar="FILE",
                   help="a consistency proof (JSON from GET /api/v1/log/proof/consistency) for a newer checkpoint")
    p.add_argument("--no-media", action="store_true", help="do not decode the chunks (faster; needs no PyAV)")
    p.set_defaults(handler=run)


class PackageError(CustodyError):
    """The package cannot be read at all."""

    code = "bad_package"


class ZipFiles:
    """A package in a ZIP archive."""

    def __init__(self, path: Path) -> None:
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise PackageError(f"{path} is not a readable ZIP archive: {exc}") from None
        self._infos = {i.filename: i for i in self._zip.infolist() if not i.is_dir()}

    def names(self) -> list[str]:
        """Member names."""
        return list(self._infos)

    def read(self, name: str) -> bytes:
        """A member's bytes."""
        info = self._infos[name]
        if info.file_size > MAX_MEMBER_BYTES:
            raise PackageError(f"{name} is larger than {MAX_MEMBER_BYTES} bytes")
        try:
            return self._zip.read(info)
        except (zipfile.BadZipFile, OSError) as exc:  # a damaged archive is reported, not a crash
            raise PackageError(f"{name} cannot be read from the archive: {exc}") from None


class DirFiles:
    """A package unpacked into a directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def names(self) -> list[str]:
        """Relative file names."""
        return [p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()]

    def read(self, name: str) -> bytes:
        """A file's bytes."""
        path = self.root / name
        if ".." in Path(name).parts or not path.is_file():
            raise KeyError(name)
        return path.read_bytes()


def media_checker() -> object | None:
    """A chunk media check with PyAV (demux every packet, decode the first frame), or None without PyAV."""
    try:
        import av
    except ImportError:
        return None

    def check(data: bytes) -> str | None:
        try:
            with av.open(io.BytesIO(data), mode="r", format="mp4") as container:
                video = container.streams.video[0]
                for _ in container.demux(video):
                    pass
            with av.open(io.BytesIO(data), mode="r", format="mp4") as container:
                for frame in container.decode(video=0):
                    if frame.width and frame.height:
                        return None
            return "no video frame decodes"
        except (av.FFmpegError, IndexError, ValueError) as exc:
            return f"does not decode: {exc}"

    return check


def read_key(text: str) -> TrustedKey:
    """The --server-key value, or the contents of the file it names."""
    path = Path(text)
    if len(text) < 512 and path.is_file():
        text = path.read_text(encoding="utf-8")
    return TrustedKey.parse(text)


def verify_path(package: Path, key: TrustedKey, checkpoints: list[Path], consistency: list[Path],
                media: bool) -> Report:
    """Verify a package on disk."""
    files = DirFiles(package) if package.is_dir() else ZipFiles(package)
    check = media_checker() if media else None
    return verify_package(files, key, checkpoints=[(str(p), p.read_bytes()) for p in checkpoints],
                          consistency=[p.read_bytes() for p in consistency],
                          media_check=check)  # type: ignore[arg-type]


def run(args: argparse.Namespace) -> int:
    """The command."""
    key = read_key(args.server_key)
    report = verify_path(args.package, key, args.checkpoint, args.consistency, not args.no_media)
    print(f"custody verify {args.package}")
    for line in report.lines():
        print(line)
    if not args.no_media and all(s.number != 13 for s in report.steps):
        print("(media not decoded: PyAV is not installed; hashes and signatures were checked)")
    if report.ok:
        print("VERIFIED: every step passed")
        return EXIT_OK
    failed = [s for s in report.steps if s.status == "FAIL"]
    first = failed[0]
    print(f"NOT VERIFIED: {len(failed)} step(s) failed; the first is ({first.number}) {first.title}")
    return EXIT_FAILED
