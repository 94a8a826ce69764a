"""The visual designer: a concept from the copy, composed into an SVG banner that is safe to embed.

The model (or the template provider) only ever supplies text. The SVG is built here from fixed
shapes with every piece of text escaped and colours checked, so it can hold no script, no event
handler and no external reference, whatever the model wrote.
"""

from __future__ import annotations

import re
import textwrap
from xml.sax.saxutils import escape

from orchestration.agents.base import AgentContext, Draft, WritingAgent, campaign_facts

WIDTH, HEIGHT = 1200, 628
DEFAULT_PALETTE = ("#1e3a8a", "#3b82f6", "#eff6ff")
COLOUR = re.compile(r"#[0-9a-fA-F]{6}")


def _field(text: str, label: str) -> str:
    match = re.search(rf"^\s*{label}\s*:\s*(.+)$", text, re.IGNORECASE | re.MULTILINE)
    return match.group(1).strip() if match else ""


def _attr(value: str) -> str:
    return escape(value, {'"': "&quot;"})


def _lines(text: str, width: int, count: int) -> list[str]:
    return textwrap.wrap(text, width)[:count]


def compose_svg(headline: str, tagline: str, cta: str, palette: tuple[str, str, str]) -> str:
    dark, mid, light = palette
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{_attr(headline)}">',
        '<defs><linearGradient id="bg" x1="0" y1="0" x2="1" y2="1">'
        f'<stop offset="0" stop-color="{dark}"/><stop offset="1" stop-color="{mid}"/></linearGradient></defs>',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="url(#bg)"/>',
        f'<circle cx="1040" cy="110" r="190" fill="{light}" fill-opacity="0.12"/>',
        f'<circle cx="1130" cy="560" r="120" fill="{light}" fill-opacity="0.08"/>',
    ]
    font = 'font-family="Helvetica, Arial, sans-serif"'
    y = 200
    for line in _lines(headline, 26, 2):
        parts.append(
            f'<text x="80" y="{y}" {font} font-size="68" font-weight="700" fill="{light}">{escape(line)}</text>'
        )
        y += 80
    y += 10
    for line in _lines(tagline, 58, 3):
        parts.append(
            f'<text x="80" y="{y}" {font} font-size="30" fill="{light}" fill-opacity="0.9">{escape(line)}</text>'
        )
        y += 42
    if cta:
        parts.append(
            f'<rect x="80" y="{HEIGHT - 130}" width="{min(1040, 24 + 15 * len(cta))}" height="64" rx="32" '
            f'fill="{light}"/>'
        )
        parts.append(
            f'<text x="104" y="{HEIGHT - 88}" {font} font-size="26" font-weight="700" fill="{dark}">'
            f"{escape(cta[:68])}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


class VisualDesigner(WritingAgent):
    name = "visual_designer"
    kind = "visual"
    thought = "Sketching a banner from the copy: headline, tagline, call to action and palette."
    system_prompt = (
        "You are a visual designer. From the copy, propose a 1200x628 banner as four lines:\n"
        "Headline: (at most 60 characters)\nTagline: (at most 90 characters)\nCall to action: (a few words)\n"
        "Palette: three hex colours, dark, mid, light (e.g. #1e3a8a #3b82f6 #eff6ff)"
    )

    def user_prompt(self, ctx: AgentContext) -> str:
        return f"{campaign_facts(ctx)}\n\nThe copy:\n{ctx.copy}\n\nDesign the banner."

    def finish(self, text: str, ctx: AgentContext) -> Draft:
        headline = (_field(text, "Headline") or ctx.name)[:60]
        first_line = text.strip().splitlines()[0] if text.strip() else ""
        tagline = (_field(text, "Tagline") or first_line)[:90]
        cta = _field(text, "Call to action")[:68]
        colours = COLOUR.findall(_field(text, "Palette"))
        palette = tuple(colours[:3]) if len(colours) >= 3 else DEFAULT_PALETTE
        svg = compose_svg(headline, tagline, cta, palette)  # type: ignore[arg-type]
        metadata = {
            "format": "image/svg+xml",
            "width": WIDTH,
            "height": HEIGHT,
            "headline": headline,
            "tagline": tagline,
            "call_to_action": cta,
            "palette": list(palette),
            "concept": text.strip(),
        }
        return Draft(content=svg, metadata=metadata)
