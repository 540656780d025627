"""The words of cases, shared by the service, the requirement list and the reports (no dependencies).

Codes are English and stable (API, policy file, JSON reports); the Chinese names are what the
policy texts say and what the zh-CN report prints.
"""

from __future__ import annotations

#: The six categories of enforcement (六类执法行为), code -> Chinese name.
CATEGORIES: dict[str, str] = {
    "licensing": "许可", "penalty": "处罚", "compulsion": "强制", "levy": "征收", "fees": "收费", "inspection": "检查",
}
#: Stages of a case whose records make up 执法全过程记录 (立案、调查、取证、审查、决定、送达、执行).
STAGES: dict[str, str] = {
    "filing": "立案", "investigation": "调查", "evidence_collection": "取证", "review": "审查", "decision": "决定",
    "service": "送达", "execution": "执行",
}
#: Activities the requirement list speaks of (the seeds' list of contentious activities, plus other).
ACTIVITIES: dict[str, str] = {
    "on_site_inspection": "现场检查", "random_inspection": "随机抽查", "investigation_evidence": "调查取证",
    "evidence_preservation": "证据保全", "hearing": "听证", "administrative_compulsion": "行政强制",
    "service_of_documents": "送达", "other": "其他",
}
#: Requirement levels, weakest first.
LEVELS: dict[str, str] = {"none": "无需音像记录", "key": "音像记录", "full": "全过程音像记录"}
