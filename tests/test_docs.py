"""The documentation: README.md and docs/*.md hold every reason code, link only to files that
exist, keep the benchmark markers, and cite nothing that lives outside the repository;
SECURITY.md's IAM policies are valid, name only the layout's prefixes and never delete."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
DOCS = ROOT / "docs"
README = ROOT / "README.md"
SECURITY = ROOT / "SECURITY.md"
PAGES = [README, SECURITY, *sorted(DOCS.glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)


def _prose(text: str) -> str:
    """The text outside fenced code blocks and inline code spans (no links live there)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a markdown page (lowercase, punctuation dropped, `-`)."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _links(page: Path) -> Iterator[str]:
    yield from LINK.findall(_prose(page.read_text()))


def test_the_docs_pages_exist() -> None:
    names = {p.name for p in DOCS.glob("*.md")}
    for topic in (
        "README.md",
        "architecture.md",
        "cli.md",
        "configuration.md",
        "storage.md",
        "decoding.md",
        "simulator.md",
        "checks.md",
        "training.md",
        "evaluation.md",
        "scoring.md",
        "flows.md",
        "report.md",
        "benchmarks.md",
        "development.md",
    ):
        assert topic in names, topic


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_points_at_a_file_that_exists(page: Path) -> None:
    broken = []
    for target in _links(page):
        if SCHEME.match(target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.is_relative_to(ROOT) or not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert broken == []


def test_the_link_check_sees_links_and_anchors() -> None:
    # The checker itself: a page whose links are known finds exactly those links and anchors.
    flows = DOCS / "flows.md"
    assert {"make-demo", "atomic-publish", "drift"} <= _anchors(flows)
    readme_links = set(_links(README))
    assert {"docs/architecture.svg", "docs/report.png", "docs/flows.md#make-demo"} <= readme_links
    assert not any("`" in t for t in readme_links)


def test_every_docs_page_is_in_the_index() -> None:
    linked = {t.partition("#")[0] for t in _links(DOCS / "README.md")}
    missing = [p.name for p in DOCS.glob("*.md") if p.name != "README.md" and p.name not in linked]
    assert missing == []


def test_readme_is_one_page_with_the_two_commands() -> None:
    text = README.read_text()
    assert len(text.splitlines()) < 250
    assert "make demo" in text
    assert "make test" in text
    assert "docs/architecture.svg" in text
    assert "<!-- bench:" not in text


def test_decoding_page_documents_every_decode_reason_code() -> None:
    from scintiflow.ingest.dicom import DecodeReason

    page = (DOCS / "decoding.md").read_text()
    missing = [r.value for r in DecodeReason if f"`{r.value}`" not in page]
    assert missing == []


def test_checks_page_documents_every_check_reason_code() -> None:
    # The suite's own codes are in docs/checks.md; the decode codes it also rejects on are in
    # docs/decoding.md, which docs/checks.md links to.
    from scintiflow.checks.reasons import REASONS
    from scintiflow.ingest.dicom import DecodeReason

    decode = {r.value for r in DecodeReason}
    checks = (DOCS / "checks.md").read_text()
    decoding = (DOCS / "decoding.md").read_text()
    missing = [
        code for code in REASONS if f"`{code}`" not in (decoding if code in decode else checks)
    ]
    assert missing == []
    assert "decoding.md" in checks


def test_report_page_documents_every_report_reason_code() -> None:
    from scintiflow.outputs.report import REPORT_REASONS

    page = (DOCS / "report.md").read_text()
    missing = [code for code in REPORT_REASONS if f"`{code}`" not in page]
    assert missing == []


def test_nothing_cites_notes_kept_outside_the_repository() -> None:
    # Built from parts, so this file does not cite them itself.
    outside = tuple(f"{name}.md" for name in ("DESIGN", "STYLE", "NOTES"))
    files = [
        README,
        *(
            p
            for d in ("docs", "src", "flows", "tasks", "tests", "benchmarks")
            for p in (ROOT / d).rglob("*")
            if p.is_file()
        ),
    ]
    offenders = []
    for path in files:
        if "__pycache__" in path.parts:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue  # binary (PNG)
        offenders += [f"{path.relative_to(ROOT)}: {n}" for n in outside if n in text]
    assert offenders == []


def _tables_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_tables", ROOT / "benchmarks" / "_tables.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_benchmark_table_has_its_markers_in_the_benchmarks_page() -> None:
    page = (DOCS / "benchmarks.md").read_text()
    names = set()
    for script in (ROOT / "benchmarks").glob("*.py"):
        names |= set(re.findall(r"write_section\(\s*\"(\w+)\"", script.read_text()))
    assert names == {"foundation", "checks", "score", "nightly", "bf16_training", "scale"}
    for name in names:
        assert page.count(f"<!-- bench:{name}:start -->") == 1, name
        assert page.count(f"<!-- bench:{name}:end -->") == 1, name
    assert _tables_module().PAGE == DOCS / "benchmarks.md"


def test_the_table_writer_replaces_only_the_text_between_its_markers(tmp_path: Path) -> None:
    tables = _tables_module()
    page = tmp_path / "benchmarks.md"
    original = (DOCS / "benchmarks.md").read_text()
    page.write_text(original)
    tables.write_section("checks", "| new | table |\n", page=page)
    text = page.read_text()
    start, end = "<!-- bench:checks:start -->", "<!-- bench:checks:end -->"
    assert f"{start}\n| new | table |\n{end}" in text
    before, after = original.split(start)[0], original.split(end)[1]
    assert text.startswith(before)
    assert text.endswith(after)
    with pytest.raises(SystemExit):
        tables.write_section("no-such-benchmark", "x", page=page)


# SECURITY.md: one fenced JSON policy per role, under a "### <Role>" heading.
JSON_FENCE = re.compile(r"^```json\n(.*?)^```$", re.M | re.S)


def _security_policies() -> dict[str, dict[str, Any]]:
    """{role: policy} for every `### <Role>` section of SECURITY.md that holds a JSON block."""
    policies = {}
    for section in re.split(r"^### ", SECURITY.read_text(), flags=re.M)[1:]:
        role, _, body = section.partition("\n")
        body = re.split(r"^#{1,3} ", body, maxsplit=1, flags=re.M)[0]
        blocks = JSON_FENCE.findall(body)
        if blocks:
            assert len(blocks) == 1, role
            policies[role.strip()] = json.loads(blocks[0])
    return policies


S3_ARN = re.compile(r"^arn:aws:s3:::([a-z0-9][a-z0-9.-]+)(?:/(.*))?$")


def _statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    statements = policy["Statement"]
    return statements if isinstance(statements, list) else [statements]


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _grants(policy: dict[str, Any]) -> list[tuple[str, str]]:
    """(action, prefix) for every allowed action on every resource ("" = the bucket), with
    the listing's `s3:prefix` condition values as the prefixes of `s3:ListBucket`."""
    out = []
    for st in _statements(policy):
        assert st["Effect"] == "Allow"
        assert "NotAction" not in st
        assert "NotResource" not in st
        for action in _as_list(st["Action"]):
            for arn in _as_list(st["Resource"]):
                match = S3_ARN.match(arn)
                assert match, arn
                path = match.group(2)
                if path is None:  # the bucket: only listing, limited by s3:prefix
                    assert action == "s3:ListBucket", (action, arn)
                    for op in st["Condition"].values():
                        out += [(action, p) for p in _as_list(op["s3:prefix"])]
                else:
                    out.append((action, path))
    return out


def _top_prefix(pattern: str) -> str:
    head, sep, rest = pattern.partition("/")
    assert sep, pattern
    assert rest == "*", f"{pattern}: grant whole layout prefixes as <prefix>/*"
    return head


def test_security_policies_are_valid_iam_and_never_delete() -> None:
    from moto.iam.policy_validation import IAMPolicyDocumentValidator

    policies = _security_policies()
    assert set(policies) == {"Exporter", "Pipeline", "Reader"}
    for role, policy in policies.items():
        IAMPolicyDocumentValidator(json.dumps(policy)).validate()  # raises when malformed
        for action, _ in _grants(policy):
            assert action.startswith("s3:"), (role, action)
            assert "*" not in action, (role, action)
            assert "delete" not in action.lower(), (role, action)


def test_security_policies_name_only_layout_prefixes_and_keep_each_role_to_its_own() -> None:
    from dataclasses import fields

    from scintiflow.storage.layout import Layout

    layout = {str(f.default) for f in fields(Layout)}
    policies = {role: _grants(p) for role, p in _security_policies().items()}
    for role, grants in policies.items():
        for action, pattern in grants:
            assert _top_prefix(pattern) in layout, (role, action, pattern)
    tops = {r: {(a, _top_prefix(p)) for a, p in g} for r, g in policies.items()}
    assert tops["Exporter"] == {("s3:PutObject", "exports")}
    assert tops["Reader"] == {("s3:GetObject", "results"), ("s3:ListBucket", "results")}
    pipeline_writes = {p for a, p in tops["Pipeline"] if a == "s3:PutObject"}
    assert pipeline_writes == {"results", "quarantine", "state", "models"}
    assert ("s3:GetObject", "exports") in tops["Pipeline"]


def test_security_page_is_linked_from_the_docs() -> None:
    linked = {t.partition("#")[0] for p in DOCS.glob("*.md") for t in _links(p)}
    assert "../SECURITY.md" in linked
