"""The registry of finding codes: one entry per code, nobody invents codes elsewhere."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from protocol import findings as F
from protocol.errors import LocalProtocolError
from protocol.findings import Finding, FindingCode, Severity, all_codes, lookup

SOURCE = Path(F.__file__).read_text()


def _registered_literals() -> list[str]:
    """Every code string passed to _register in findings.py, as written (duplicates included)."""
    codes = []
    for node in ast.walk(ast.parse(SOURCE)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_register":
            first = node.args[0]
            assert isinstance(first, ast.Constant)
            assert isinstance(first.value, str)
            codes.append(first.value)
    return codes


def test_codes_are_unique() -> None:
    literals = _registered_literals()
    assert len(literals) == len(set(literals)), sorted(c for c in literals if literals.count(c) > 1)
    assert [c.code for c in all_codes()] == literals


def test_every_module_constant_is_the_registered_code() -> None:
    constants = {name: v for name, v in vars(F).items() if isinstance(v, FindingCode)}
    assert len(constants) == len(all_codes())
    for value in constants.values():
        assert lookup(value.code) is value


@pytest.mark.parametrize("code", all_codes(), ids=lambda c: c.code)
def test_each_code_is_complete(code: FindingCode) -> None:
    assert re.fullmatch(r"[a-z]+\.[a-z_]+", code.code)
    assert isinstance(code.severity, Severity)
    assert code.title_en
    assert code.title_zh
    assert re.search(r"[\u4e00-\u9fff]", code.title_zh)
    assert code.meaning.endswith(".")


def test_the_chain_codes_the_wire_contract_names_exist() -> None:
    names = {c.code for c in all_codes()}
    assert {"chain.gap", "chain.seq_reuse", "chain.fork", "chain.reordered", "chain.replay",
            "chain.wrong_device", "chain.prev_mismatch", "entry.malformed", "signature.invalid",
            "entry.untrusted", "log.fork"} <= names


@pytest.mark.parametrize("code", ["chain.nope", "", "CHAIN.GAP", "chain.gap "])
def test_looking_up_an_unknown_code_is_our_error(code: str) -> None:
    with pytest.raises(LocalProtocolError, match="is not registered"):
        lookup(code)


def test_finding_json_form() -> None:
    finding = Finding(F.CHAIN_GAP, "dev", "gap at seq 3 (1 missing)", {"from_seq": 3, "to_seq": 3})
    assert finding.severity is Severity.HIGH
    assert finding.to_dict() == {
        "code": "chain.gap",
        "severity": "high",
        "subject": "dev",
        "message": "gap at seq 3 (1 missing)",
        "evidence": {"from_seq": 3, "to_seq": 3},
    }
    assert Severity.CRITICAL > Severity.HIGH > Severity.MEDIUM > Severity.LOW > Severity.INFO
