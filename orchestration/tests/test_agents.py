"""The agents' own logic: the auditor's rules, the visual's SVG, the template provider's copy."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from orchestration.agents import WRITERS, AgentContext
from orchestration.agents.auditor import audit
from orchestration.agents.visual import compose_svg
from orchestration.providers.base import PermanentProviderError, ProviderRequest, TransientProviderError, Usage
from orchestration.providers.template import TemplateProvider, write_copy, write_short_copy

BOTTLE = {
    "name": "Spring launch",
    "brief": "Launch our reusable water bottle to commuters who care about the planet. It keeps drinks cold all day.",
    "audience": "urban commuters",
    "tone": "friendly",
}


def artifacts_for(brief: dict) -> dict:
    ctx = AgentContext(**brief)
    copy = write_copy({**brief})
    short = write_short_copy({**brief, "copy": copy})
    visual = WRITERS["Visual"].finish(
        "Headline: Spring launch\nTagline: Cold drinks all day\nCall to action: Order yours\n"
        "Palette: #111111 #222222 #eeeeee",
        ctx,
    )
    return {"Copy": (copy, {}), "ShortCopy": (short, {}), "Visual": (visual.content, visual.metadata)}


# --- the auditor ------------------------------------------------------------------------------------


def test_a_plain_consumer_brief_passes():
    result = audit(artifacts_for(BOTTLE), brief=BOTTLE["brief"], tone=BOTTLE["tone"])
    assert result.is_compliant
    assert result.score == 100 and result.issues == []
    assert result.feedback.startswith("Compliant")


@pytest.mark.parametrize(
    ("text", "severity", "fragment"),
    [
        ("Guaranteed results for every user.", "High", "guaranteed"),
        ("A risk-free way to start.", "High", "risk-free"),
        ("This tea cures headaches.", "High", "cure"),
        ("100% satisfaction, always.", "Medium", "100%"),
        ("A miracle in a bottle.", "Medium", "miracle"),
        ("The world's best bottle.", "Medium", "best"),
    ],
)
def test_unsubstantiated_claims_are_flagged(text, severity, fragment):
    result = audit({"Copy": (text + " " + "Plain words. " * 10, {})}, brief="A bottle.", tone="friendly")
    matching = [i for i in result.issues if fragment in i["issue_description"].lower()]
    assert matching and matching[0]["severity"] == severity and matching[0]["artifact_type"] == "Copy"
    assert result.score < 100


def test_a_finance_brief_without_a_disclaimer_fails():
    brief = "Open a savings account with a high interest rate."
    copy = "Open an account today and watch your money grow. " * 3
    result = audit({"Copy": (copy, {})}, brief=brief, tone="professional")
    assert not result.is_compliant
    assert any("risk disclaimer" in i["issue_description"] and i["severity"] == "High" for i in result.issues)
    with_disclaimer = copy + " Capital at risk. This is not financial advice."
    assert audit({"Copy": (with_disclaimer, {})}, brief=brief, tone="professional").is_compliant


def test_a_health_brief_needs_a_medical_disclaimer():
    brief = "A vitamin supplement for better sleep."
    copy = "Sleep better with our gentle formula, made with care. " * 3
    result = audit({"Copy": (copy, {})}, brief=brief, tone="calm")
    assert any("medical disclaimer" in i["issue_description"] for i in result.issues)
    assert audit({"Copy": (copy + " Consult your doctor.", {})}, brief=brief, tone="calm").is_compliant


def test_the_template_copywriter_writes_the_needed_disclaimers_so_honest_briefs_pass():
    for brief in ("Open a savings account with a high interest rate.", "A vitamin supplement for better sleep."):
        inputs = {**BOTTLE, "brief": brief}
        assert audit(artifacts_for(inputs), brief=brief, tone="friendly").is_compliant, brief


def test_a_brief_with_claims_yields_copy_that_fails():
    brief = "Guaranteed 12% returns on your savings, risk-free investing for everyone."
    inputs = {**BOTTLE, "brief": brief, "tone": "professional"}
    result = audit(artifacts_for(inputs), brief=brief, tone="professional")
    assert not result.is_compliant
    assert {i["severity"] for i in result.issues} >= {"High"}
    assert result.feedback.startswith("Not compliant")


def test_length_limits_per_artifact_type():
    result = audit(
        {"Copy": ("Too short.", {}), "ShortCopy": ("x" * 281, {}), "Visual": ("<svg></svg>", {"headline": "h" * 61})},
        brief="A bottle.",
        tone="friendly",
    )
    described = {i["artifact_type"]: i["issue_description"] for i in result.issues}
    assert "at least 80" in described["Copy"]
    assert "limit is 280" in described["ShortCopy"]
    assert "limit is 60" in described["Visual"]
    assert all(i["severity"] == "Medium" for i in result.issues)


def test_tone_mismatch_is_a_low_issue():
    copy = "This is awesome!! Grab it now, it's crazy good. " * 3
    result = audit({"Copy": (copy, {})}, brief="Corporate accounting software.", tone="formal")
    assert [i["severity"] for i in result.issues] == ["Low"]
    assert result.is_compliant and result.score == 96
    assert audit({"Copy": (copy, {})}, brief="Party supplies.", tone="playful").issues == []


def test_an_unsafe_visual_is_flagged():
    unsafe = '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    result = audit({"Visual": (unsafe, {"headline": "Hi"})}, brief="A bottle.", tone="friendly")
    assert any(i["severity"] == "High" and "self-contained SVG" in i["issue_description"] for i in result.issues)


SVG_OPEN = '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink">'
UNSAFE_SVGS = [
    pytest.param(SVG_OPEN + "<script>alert(1)</script></svg>", "<script>", id="script"),
    pytest.param(SVG_OPEN + '<g><script xlink:href="https://evil.example/x.js"/></g></svg>', "<script>", id="nested"),
    pytest.param(SVG_OPEN + "<Script>alert(1)</Script></svg>", "<Script>", id="script-mixed-case"),
    pytest.param(
        SVG_OPEN + '<foreignObject><div xmlns="http://www.w3.org/1999/xhtml">hi</div></foreignObject></svg>',
        "<foreignObject>",
        id="foreign-object",
    ),
    pytest.param(
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:h="http://www.w3.org/1999/xhtml"><h:iframe/></svg>',
        "another vocabulary",
        id="xhtml-element",
    ),
    pytest.param(SVG_OPEN + '<rect width="1" height="1" onload="steal()"/></svg>', "handler (onload)", id="onload"),
    pytest.param(SVG_OPEN.replace(">", ' ONCLICK="steal()">', 1) + "</svg>", "handler (onclick)", id="root-handler"),
    pytest.param(SVG_OPEN + '<use href="https://evil.example/s.svg#a"/></svg>', "links outside", id="external-href"),
    pytest.param(SVG_OPEN + '<use xlink:href="javascript:alert(1)"/></svg>', "links outside", id="javascript-href"),
    pytest.param(SVG_OPEN + '<use href=" &#9;javascript:alert(1)"/></svg>', "links outside", id="obfuscated-href"),
    pytest.param(SVG_OPEN + '<use href="data:image/svg+xml,&lt;svg/&gt;"/></svg>', "links outside", id="data-href"),
    pytest.param(SVG_OPEN + '<image href="https://evil.example/p.png"/></svg>', "<image>", id="image"),
    pytest.param(SVG_OPEN + '<a href="https://evil.example"><text>x</text></a></svg>', "<a>", id="link"),
    pytest.param(SVG_OPEN + '<rect fill="url(https://evil.example/p.svg#g)"/></svg>', "(fill)", id="external-paint"),
    pytest.param(SVG_OPEN + "<rect style=\"fill: url( '//evil.example/g' )\"/></svg>", "(style)", id="style-url"),
    pytest.param(SVG_OPEN + "<rect style=\"background:image-set('x.png' 1x)\"/></svg>", "(style)", id="image-set"),
    pytest.param(SVG_OPEN + '<rect style="fill:\\75 rl(x)"/></svg>', "(style)", id="css-escape"),
    pytest.param(SVG_OPEN + "<style>@import url(https://evil.example/s.css);</style></svg>", "<style>", id="style"),
    pytest.param(
        SVG_OPEN + '<use href="#a"><set attributeName="href" to="javascript:alert(1)"/></use></svg>',
        "<set>",
        id="animation-rewrites-href",
    ),
    pytest.param(
        '<?xml-stylesheet href="https://evil.example/s.css"?>' + SVG_OPEN + "</svg>",
        "processing instruction",
        id="stylesheet-pi",
    ),
    pytest.param(
        '<!DOCTYPE svg [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>' + SVG_OPEN + "&b;</svg>",
        "DOCTYPE",
        id="entities",
    ),
    pytest.param('<!DOCTYPE svg SYSTEM "https://evil.example/x.dtd"><svg/>', "DOCTYPE", id="external-dtd"),
    pytest.param('<html xmlns="http://www.w3.org/1999/xhtml"><svg/></html>', "root element", id="not-svg-root"),
    pytest.param("<svg><script>alert(1)</svg>", "well-formed", id="not-well-formed"),
    pytest.param("Here is your banner: <svg></svg>", "well-formed", id="prose"),
    pytest.param("", "well-formed", id="empty"),
]


@pytest.mark.parametrize(("svg", "reason"), UNSAFE_SVGS)
def test_every_unsafe_svg_form_is_a_high_issue(svg, reason):
    result = audit({"Visual": (svg, {"headline": "Hi"})}, brief="A bottle.", tone="friendly")

    assert not result.is_compliant
    [issue] = result.issues
    assert issue["severity"] == "High"
    assert issue["issue_description"].startswith("The visual is not a self-contained SVG: ")
    assert reason in issue["issue_description"]


HARMLESS_TEXT = [
    "Javascript: The Good Parts",
    "Learn data:text/html tricks",
    '<script>alert("hi")</script> explained',
    "Buy one = get one",
    "Set src=\"logo.png\" and href='x'",
    "vbscript: url(http://example.com) onload=go()",
    '<!DOCTYPE html> & <?php echo "hi" ?>',
]


@pytest.mark.parametrize("text", HARMLESS_TEXT)
def test_text_that_reads_like_markup_is_not_an_svg_issue(text):
    svg = compose_svg(text[:60], text, text, ("#000000", "#111111", "#ffffff"))
    metadata = {"headline": text[:60], "tagline": text, "call_to_action": text}

    result = audit({"Visual": (svg, metadata)}, brief="A bottle.", tone="friendly")

    assert result.issues == []
    assert result.is_compliant and result.score == 100


def test_a_safe_svg_with_internal_references_passes():
    svg = (
        SVG_OPEN + '<defs><linearGradient id="g"><stop offset="0"/></linearGradient><path id="p" d="M0 0"/></defs>'
        '<rect fill="url(#g)" style="stroke: url( \'#g\' )"/><use xlink:href="#p"/>'
        '<text><textPath href="#p">on the path</textPath></text><!-- a comment --></svg>'
    )

    assert audit({"Visual": (svg, {"headline": "Hi"})}, brief="A bottle.", tone="friendly").issues == []


def test_score_never_drops_below_zero():
    copy = "Guaranteed risk-free miracle cure, 100% the world's best, instant results, no risk. " * 2
    result = audit({"Copy": (copy, {})}, brief="Invest in our health supplement fund.", tone="formal")
    assert result.score == 0 and not result.is_compliant


# --- the visual ----------------------------------------------------------------------------------------


def test_the_visual_is_a_self_contained_svg_whatever_the_model_wrote():
    hostile = (
        'Headline: <script>alert("x")</script> & "quotes"\n'
        'Tagline: <image href="http://evil.example/x.png" onload="steal()"/>\n'
        "Call to action: javascript:alert(1)\nPalette: red; background:url(http://evil) #123456 #abcdef"
    )
    draft = WRITERS["Visual"].finish(hostile, AgentContext(**BOTTLE))
    svg = draft.content
    root = ET.fromstring(svg)  # well-formed XML
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    tags = {element.tag.split("}")[1] for element in root.iter()}
    assert tags <= {"svg", "defs", "linearGradient", "stop", "rect", "circle", "text"}
    for element in root.iter():
        for name, value in element.attrib.items():
            assert not name.lower().startswith("on")
            assert "http" not in value or name == "xmlns"
            assert "javascript:" not in value.lower()
    assert draft.metadata["palette"] == ["#1e3a8a", "#3b82f6", "#eff6ff"], "bad colours fall back to the default"
    assert draft.metadata["format"] == "image/svg+xml"


def test_the_visual_uses_the_concept():
    svg = compose_svg("Bottles that keep up", "Cold all day", "Order yours", ("#000000", "#111111", "#ffffff"))
    assert "Bottles that keep up" in svg and "Order yours" in svg and 'stop-color="#111111"' in svg


# --- the template provider -----------------------------------------------------------------------------


def stream(context: dict, **request) -> tuple[str, Usage]:
    items = list(
        TemplateProvider().stream(
            ProviderRequest(
                agent="copywriter",
                messages=[{"role": "user", "content": "Write the copy."}],
                context=context,
                **request,
            )
        )
    )
    text = "".join(item for item in items if isinstance(item, str))
    return text, items[-1]


def test_template_copy_is_deterministic_readable_and_built_from_the_brief(settings):
    settings.AGENT_CHUNK_DELAY_MS = 0
    text, usage = stream({**BOTTLE, "kind": "copy"})
    assert text == stream({**BOTTLE, "kind": "copy"})[0]
    assert "urban commuters" in text and "reusable water bottle" in text
    assert "lorem" not in text.lower()
    assert len(re.findall(r"[.!?]", text)) >= 5
    assert usage.completion_tokens > 50 and usage.cost > 0


def test_template_short_copy_fits_in_280_characters(settings):
    settings.AGENT_CHUNK_DELAY_MS = 0
    text, _ = stream({**BOTTLE, "brief": "word " * 500, "kind": "short_copy"})
    assert 0 < len(text) <= 280


def test_template_provider_simulates_transient_and_permanent_failures(settings):
    settings.AGENT_CHUNK_DELAY_MS = 0
    with pytest.raises(TransientProviderError):
        stream({**BOTTLE, "kind": "copy"}, attempt=2, simulation={"fail_times": 2})
    assert stream({**BOTTLE, "kind": "copy"}, attempt=3, simulation={"fail_times": 2})[0]
    with pytest.raises(PermanentProviderError):
        stream({**BOTTLE, "kind": "copy"}, simulation={"fail_permanently": True})


def test_instructions_reach_the_rewritten_text(settings):
    settings.AGENT_CHUNK_DELAY_MS = 0
    text, _ = stream({**BOTTLE, "kind": "copy", "instructions": "Mention the free refills."})
    assert "free refills" in text


def test_a_disclaimer_is_not_read_as_a_claim():
    copy = "Sleep better with our gentle formula, made with care. " * 3
    disclaimer = "This product is not intended to diagnose, treat, cure or prevent any disease; consult your doctor."
    result = audit({"Copy": (copy + disclaimer, {})}, brief="A sleep supplement.", tone="calm")
    assert result.issues == []
    claim = audit({"Copy": (copy + "It cures insomnia. " + disclaimer, {})}, brief="A sleep supplement.", tone="calm")
    assert [i["issue_description"] for i in claim.issues] == ["The Copy claims to cure."]
