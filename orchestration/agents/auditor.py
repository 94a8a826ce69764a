"""The compliance auditor: a rule-based reviewer of the newest version of each artifact.

Rules, each an issue with a severity:
- unsubstantiated claims ("guaranteed", "risk-free", "100%", "cure", "miracle", ...): High for the
  ones regulators act on (cures, guaranteed or risk-free money), Medium for the rest;
- a finance or health brief whose copy lacks the matching disclaimer: High;
- length limits per artifact type: Medium;
- tone mismatch (exclamation marks or slang in a formal brief, shouting in a calm one): Low;
- a visual that is not a self-contained SVG: High. The SVG is parsed, and its elements and attributes
  judged (only static drawing elements, no event handler, links and url() only to #ids, no DOCTYPE
  or processing instruction); its text is never read as markup.
Score: 100 minus 30 per High, 12 per Medium, 4 per Low (not below 0). Compliant when no High issue
remains and the score is at least 70.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from campaigns.steps import COPY, SHORT_COPY, VISUAL
from orchestration.providers.template import FINANCE_WORDS, HEALTH_WORDS, mentions

HIGH, MEDIUM, LOW = "High", "Medium", "Low"
PENALTY = {HIGH: 30, MEDIUM: 12, LOW: 4}
PASS_SCORE = 70

CLAIMS = [
    (r"\bguarantee(d|s)?\b", HIGH, "promises guaranteed results"),
    (r"\brisk[- ]free\b", HIGH, 'calls the offer "risk-free"'),
    (r"\bno risk\b", HIGH, 'says there is "no risk"'),
    (r"\bcures?\b|\bcured\b", HIGH, "claims to cure"),
    (r"\b100\s?%", MEDIUM, 'claims "100%" without evidence'),
    (r"\bmiracle\b", MEDIUM, 'calls the product a "miracle"'),
    (r"\bclinically proven\b", MEDIUM, 'says "clinically proven" without citing the study'),
    (r"\bbest in the world\b|\bworld'?s best\b|#1\b|\bnumber one\b", MEDIUM, "claims to be the best without evidence"),
    (r"\binstant results?\b", MEDIUM, 'promises "instant results"'),
]
FINANCE_DISCLAIMER = re.compile(
    r"capital at risk|not financial advice|past performance|terms and conditions apply", re.IGNORECASE
)
HEALTH_DISCLAIMER = re.compile(r"consult your doctor|not intended to diagnose|medical advice", re.IGNORECASE)
LIMITS = {COPY: (80, 3000), SHORT_COPY: (10, 280), VISUAL: (0, 60)}
FORMAL_TONES = ("formal", "professional", "corporate", "serious", "calm", "luxury")
SLANG = re.compile(r"\b(awesome|crazy|lol|omg|super cool|epic|insane|gonna|wanna)\b", re.IGNORECASE)


@dataclass(frozen=True)
class AuditResult:
    score: int
    is_compliant: bool
    issues: list[dict[str, str]]
    feedback: str


def _issue(artifact_type: str, description: str, severity: str) -> dict[str, str]:
    return {"artifact_type": artifact_type, "issue_description": description, "severity": severity}


def _reviewed_text(artifact_type: str, content: str, metadata: dict[str, Any]) -> str:
    if artifact_type == "Visual":
        return " ".join(str(metadata.get(key, "")) for key in ("headline", "tagline", "call_to_action"))
    return content


def _without_disclaimers(text: str) -> str:
    """A disclaimer ("not intended to … cure …") is not a claim: leave its sentences out of the scan."""
    sentences = re.split(r"(?<=[.!?;])\s+", text)
    kept = [s for s in sentences if not (FINANCE_DISCLAIMER.search(s) or HEALTH_DISCLAIMER.search(s))]
    return " ".join(kept)


def _claims(artifact_type: str, text: str) -> list[dict[str, str]]:
    text = _without_disclaimers(text)
    return [
        _issue(artifact_type, f"The {artifact_type} {what}.", severity)
        for pattern, severity, what in CLAIMS
        if re.search(pattern, text, re.IGNORECASE)
    ]


def _length(artifact_type: str, text: str) -> list[dict[str, str]]:
    low, high = LIMITS[artifact_type]
    measured = len(text)
    if measured > high:
        what = "headline" if artifact_type == "Visual" else "text"
        return [
            _issue(artifact_type, f"The {artifact_type} {what} is {measured} characters; the limit is {high}.", MEDIUM)
        ]
    if measured < low:
        return [
            _issue(artifact_type, f"The {artifact_type} is only {measured} characters; write at least {low}.", MEDIUM)
        ]
    return []


def _tone(artifact_type: str, text: str, tone: str) -> list[dict[str, str]]:
    if not any(word in tone.lower() for word in FORMAL_TONES):
        return []
    if text.count("!") >= 2 or SLANG.search(text):
        return [
            _issue(artifact_type, f"The {artifact_type} uses exclamations or slang that do not fit a {tone} tone.", LOW)
        ]
    return []


def _disclaimers(brief: str, copy: str) -> list[dict[str, str]]:
    issues = []
    if mentions(brief, FINANCE_WORDS) and not FINANCE_DISCLAIMER.search(copy):
        issues.append(
            _issue(
                "Copy",
                'A financial product needs a risk disclaimer (e.g. "Capital at risk. This is not financial advice.").',
                HIGH,
            )
        )
    if mentions(brief, HEALTH_WORDS) and not HEALTH_DISCLAIMER.search(copy):
        issues.append(
            _issue("Copy", 'A health product needs a medical disclaimer (e.g. "Consult your doctor.").', HIGH)
        )
    return issues


SVG_NS = "http://www.w3.org/2000/svg"
# Static drawing elements. Everything else is refused: script, foreignObject (HTML inside SVG), a and
# iframe-like elements, style (CSS can import), image (fetches), animate/set (can rewrite an href).
SVG_ELEMENTS = frozenset(
    {
        "svg", "g", "defs", "title", "desc", "symbol", "use", "marker", "clipPath", "mask", "pattern",
        "linearGradient", "radialGradient", "stop", "rect", "circle", "ellipse", "line", "polyline",
        "polygon", "path", "text", "tspan", "textPath", "filter", "feBlend", "feColorMatrix",
        "feComponentTransfer", "feComposite", "feFlood", "feGaussianBlur", "feMerge", "feMergeNode",
        "feMorphology", "feOffset", "feFuncR", "feFuncG", "feFuncB", "feFuncA", "feDropShadow",
    }
)  # fmt: skip
# Attributes that hold a link (href, xlink:href) must point inside the document (#id); those that
# may hold a CSS url() (paints, clips, masks, filters, markers, style) must too.
LINK_ATTRIBUTES = frozenset({"href", "src"})
URL_ATTRIBUTES = frozenset(
    {"style", "fill", "stroke", "clip-path", "mask", "filter", "marker-start", "marker-mid", "marker-end", "cursor"}
)
EXTERNAL_URL = re.compile(r"url\(\s*(?![\s'\"]*#)", re.IGNORECASE)
# Other ways CSS can fetch or hide a url(): image-set(), image(), @import, escapes (u\72l), expression().
CSS_FETCH = re.compile(r"image-set\(|\bimage\(|cross-fade\(|@import|\\|expression\(", re.IGNORECASE)


class _UnsafeMarkup(Exception):
    pass


class _SvgTreeBuilder(ET.TreeBuilder):
    """Refuses a DOCTYPE (entities, external DTDs) and processing instructions (xml-stylesheet)."""

    def doctype(self, name: str, pubid: str, system: str) -> None:
        raise _UnsafeMarkup("it has a DOCTYPE declaration")

    def pi(self, target: str, text: str | None = None) -> None:
        raise _UnsafeMarkup(f"it has a <?{target}?> processing instruction")


def _local(name: str) -> tuple[str, str]:
    """``{namespace}local`` -> (namespace, local)."""
    namespace, _, local = name[1:].partition("}") if name.startswith("{") else ("", "", name)
    return namespace, local


def _svg_problem(content: str) -> str:
    """Why ``content`` is not a self-contained SVG, or ''. Judges the parsed elements and attributes,
    never the text: ``&lt;script&gt;`` or "Javascript: The Good Parts" in a text node is just text."""
    parser = ET.XMLParser(target=_SvgTreeBuilder())
    try:
        parser.feed(content)
        root = parser.close()
    except _UnsafeMarkup as exc:
        return str(exc)
    except ET.ParseError:
        return "it is not well-formed XML"
    if _local(root.tag) != (SVG_NS, "svg") and root.tag != "svg":
        return "its root element is not <svg>"
    for element in root.iter():
        namespace, tag = _local(element.tag)
        if namespace not in ("", SVG_NS):
            return f"it has a <{tag}> element from another vocabulary ({namespace})"
        if tag not in SVG_ELEMENTS:
            return f"it has a <{tag}> element"
        for attribute, value in element.attrib.items():
            name = _local(attribute)[1].lower()
            if name.startswith("on"):
                return f"<{tag}> has an event handler ({name})"
            if name in LINK_ATTRIBUTES and not value.strip().startswith("#"):
                return f"<{tag}> links outside the document ({name})"
            if name in URL_ATTRIBUTES and (EXTERNAL_URL.search(value) or CSS_FETCH.search(value)):
                return f"<{tag}> refers to something outside the document ({name})"
    return ""


def _safe_svg(content: str) -> list[dict[str, str]]:
    problem = _svg_problem(content)
    if problem:
        return [_issue("Visual", f"The visual is not a self-contained SVG: {problem}.", HIGH)]
    return []


def _feedback(score: int, compliant: bool, issues: list[dict[str, str]]) -> str:
    if not issues:
        return f"Compliant (score {score}/100): no unsubstantiated claims, disclaimers present, lengths within limits."
    worst = [i["issue_description"] for i in issues if i["severity"] == HIGH] or [
        i["issue_description"] for i in issues
    ]
    verdict = "Compliant with minor notes" if compliant else "Not compliant"
    return f"{verdict} (score {score}/100). Fix first: {worst[0]}" + (
        f" ({len(issues) - 1} more issue{'s' if len(issues) > 2 else ''} listed.)" if len(issues) > 1 else ""
    )


def audit(artifacts: dict[str, tuple[str, dict[str, Any]]], *, brief: str, tone: str) -> AuditResult:
    """``artifacts`` maps a type to its newest (content, metadata)."""
    issues: list[dict[str, str]] = []
    for artifact_type, (content, metadata) in artifacts.items():
        text = _reviewed_text(artifact_type, content, metadata)
        measured = str(metadata.get("headline", "")) if artifact_type == "Visual" else text
        issues += _claims(artifact_type, text) + _length(artifact_type, measured) + _tone(artifact_type, text, tone)
        if artifact_type == "Visual":
            issues += _safe_svg(content)
    issues += _disclaimers(brief, artifacts.get("Copy", ("", {}))[0])
    score = max(0, 100 - sum(PENALTY[i["severity"]] for i in issues))
    compliant = score >= PASS_SCORE and not any(i["severity"] == HIGH for i in issues)
    return AuditResult(score=score, is_compliant=compliant, issues=issues, feedback=_feedback(score, compliant, issues))
