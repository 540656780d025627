"""The registry of finding codes: every problem Custody reports has exactly one code here.

A finding is a fact with evidence (a gap at seq 41, a step with no footage). Codes are stable
strings used in the API, the audit report, the CLI and the dashboard; nobody invents a code
elsewhere. Titles are given in English and Chinese (zh-CN) for the reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from protocol.errors import LocalProtocolError


class Severity(IntEnum):
    """How bad a finding is (higher is worse)."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        """Lowercase name."""
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class FindingCode:
    """A registered finding code."""

    code: str
    severity: Severity
    title_en: str
    title_zh: str
    meaning: str


_REGISTRY: dict[str, FindingCode] = {}


def _register(code: str, severity: Severity, title_en: str, title_zh: str, meaning: str) -> FindingCode:
    fc = FindingCode(code, severity, title_en, title_zh, meaning)
    _REGISTRY[code] = fc
    return fc


# -- chain and signatures ---------------------------------------------------------------------
CHAIN_GAP = _register(
    "chain.gap", Severity.HIGH, "Missing entries in a device's chain", "设备记录链存在缺失",
    "Sequence numbers are missing between entries that exist. Provisional: closes when the entry arrives.",
)
CHAIN_SEQ_REUSE = _register(
    "chain.seq_reuse", Severity.CRITICAL, "Sequence number used twice", "序号被重复使用",
    "Two different entries carry the same device sequence number.",
)
CHAIN_FORK = _register(
    "chain.fork", Severity.CRITICAL, "Chain forked", "记录链出现分叉",
    "Two different entries name the same previous entry: the device's history branched.",
)
CHAIN_REORDERED = _register(
    "chain.reordered", Severity.MEDIUM, "Entries out of order", "记录顺序错乱",
    "An entry arrived after one with a higher sequence number in a list that must be ordered.",
)
CHAIN_REPLAY = _register(
    "chain.replay", Severity.MEDIUM, "Entry replayed", "记录被重放",
    "The exact same signed entry was presented more than once.",
)
CHAIN_WRONG_DEVICE = _register(
    "chain.wrong_device", Severity.CRITICAL, "Entry of another device", "混入其他设备的记录",
    "An entry names a different device than the chain it was presented in.",
)
CHAIN_PREV_MISMATCH = _register(
    "chain.prev_mismatch", Severity.CRITICAL, "Broken chain link", "记录链哈希不连续",
    "An entry's prev hash is not the hash of the entry before it: something was altered or substituted.",
)
ENTRY_MALFORMED = _register(
    "entry.malformed", Severity.CRITICAL, "Malformed entry", "记录格式错误",
    "An entry's bytes are not a valid signed chain entry (encoding, schema or payload type).",
)
SIGNATURE_INVALID = _register(
    "signature.invalid", Severity.CRITICAL, "Invalid signature", "签名无效",
    "A signed message does not verify with the key it claims.",
)
# -- ingest and storage ------------------------------------------------------------------------
CHUNK_PENDING = _register(
    "chunk.pending_upload", Severity.MEDIUM, "Chunk announced but not uploaded", "片段已登记但未上传",
    "The server knows a chunk exists (its entry arrived) but its bytes have not been verified in time.",
)
CHUNK_VERIFY_FAILED = _register(
    "chunk.verification_failed", Severity.HIGH, "Chunk failed verification", "片段校验失败",
    "Stored bytes do not match the entry (hash, size) or the media check failed.",
)
CHUNK_CONFLICT = _register(
    "chunk.conflict", Severity.CRITICAL, "Different bytes for an existing chunk", "同一片段出现不同内容",
    "A body different from the verified one was offered for the same sequence number; the original is kept.",
)
MEDIA_DECODE_FAILED = _register(
    "media.decode_failed", Severity.HIGH, "Footage does not decode", "视频无法解码",
    "Decoding the chunk (first keyframe after receipt, or every frame by the scrubber) failed.",
)
SCRUB_MISMATCH = _register(
    "scrub.mismatch", Severity.CRITICAL, "Stored footage altered", "存储的视频被篡改",
    "Re-verification found stored bytes that no longer match their receipt.",
)
SCRUB_MISSING = _register(
    "scrub.missing", Severity.CRITICAL, "Stored footage missing", "存储的视频丢失",
    "Re-verification found no object where a receipt says footage was stored.",
)
NO_SECOND_COPY = _register(
    "storage.no_second_copy", Severity.MEDIUM, "No verified second copy", "缺少已校验的第二份副本",
    "Verified footage has no verified copy in the second store after the configured delay.",
)
# -- devices and officers --------------------------------------------------------------------
DEVICE_OFFLINE_PENDING = _register(
    "device.offline_with_pending", Severity.HIGH, "Device offline with footage not uploaded",
    "设备离线且有未上传视频",
    "A device is offline while chunks it announced (or reported in its status) are not uploaded.",
)
DEVICE_CLOCK_SKEW = _register(
    "device.clock_skew", Severity.LOW, "Device clock skewed", "设备时钟偏差",
    "The device clock differs from the server clock by more than the configured tolerance.",
)
ENTRY_UNTRUSTED = _register(
    "entry.untrusted", Severity.HIGH, "Entry after device was reported lost or revoked",
    "设备挂失或吊销后产生的记录",
    "Entries after a device's trust cutoff are stored and verified but are not trusted as evidence.",
)
OFFICER_MISMATCH = _register(
    "officer.mismatch", Severity.MEDIUM, "Officer does not match device assignment", "执法人员与设备分配不符",
    "An entry names an officer other than the one the device was assigned to at that time.",
)
OFFICER_CERT_EXPIRED = _register(
    "officer.certificate_expired", Severity.HIGH, "Recording by an officer without a valid certificate",
    "执法证件过期人员执法记录",
    "Footage was recorded by an officer whose enforcement certificate had expired.",
)
# -- cases and recording requirements -----------------------------------------------------------
STEP_MISSING_FOOTAGE = _register(
    "step.missing_footage", Severity.HIGH, "Required recording missing", "应录未录",
    "A case step that the recording-requirement list says must be recorded has no footage.",
)
STEP_INCOMPLETE_COVERAGE = _register(
    "step.incomplete_coverage", Severity.HIGH, "Full-process recording incomplete", "全过程记录不完整",
    "A step that must be recorded start to finish has gaps in its coverage.",
)
STEP_UNVERIFIED_FOOTAGE = _register(
    "step.unverified_footage", Severity.MEDIUM, "Linked footage not verified", "关联视频未校验",
    "Footage linked to a step is announced but not yet verified.",
)
RECORDING_UNLINKED = _register(
    "recording.unlinked", Severity.LOW, "Recording linked to no case", "视频未关联案件",
    "A recording is not linked to any case step.",
)
REVIEW_OVERRIDE = _register(
    "review.override", Severity.MEDIUM, "Legal review signed off despite findings", "法制审核强制通过",
    "A legal reviewer signed off a major decision while its footage was incomplete, with a recorded reason.",
)
# -- transparency log -------------------------------------------------------------------------
LOG_FORK = _register(
    "log.fork", Severity.CRITICAL, "Transparency log forked", "透明日志出现分叉",
    "Two checkpoints of the log are inconsistent with each other: the operator showed two histories.",
)
ACCESS_DENIED = _register(
    "access.denied", Severity.LOW, "Access refused", "访问被拒绝",
    "A user tried to read footage outside their role or scope.",
)


def lookup(code: str) -> FindingCode:
    """The registered code, or :class:`LocalProtocolError` (inventing codes is a bug)."""
    try:
        return _REGISTRY[code]
    except KeyError:
        raise LocalProtocolError(f"finding code {code!r} is not registered") from None


def all_codes() -> list[FindingCode]:
    """Every registered code, in registration order."""
    return list(_REGISTRY.values())


@dataclass(frozen=True, slots=True)
class Finding:
    """One fact found: its code, what it concerns, a message, and the evidence behind it."""

    code: FindingCode
    subject: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def severity(self) -> Severity:
        """The code's severity."""
        return self.code.severity

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "code": self.code.code,
            "severity": self.severity.label,
            "subject": self.subject,
            "message": self.message,
            "evidence": dict(self.evidence),
        }
