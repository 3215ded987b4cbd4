"""Placeholder pages (`spec.placeholderConfig.content`): the add-on's template variables, substituted safely.

The add-on renders `content` as a Go template with five values: `{{.ServiceName}}` (scaleTargetRef.service),
`{{.Namespace}}`, `{{.RefreshInterval}}` (seconds), `{{.RequestID}}` (the request's `X-Request-ID`) and
`{{.Timestamp}}` (RFC 3339). zerohop substitutes exactly these actions (and drops `{{/* comments */}}`),
each value HTML-escaped, and evaluates nothing else: content from an object cannot run template logic or
reach any other value. Content with any other action cannot be rendered as written, and gets what the add-on
sends when its template fails: the text `<service> is starting up...`.

HTML content (anything with `<` and `>`, the add-on's test) gets a small script that asks for the page again
every RefreshInterval seconds and reloads it once zerohop no longer answers with the placeholder.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

VARIABLES = frozenset({"ServiceName", "Namespace", "RefreshInterval", "RequestID", "Timestamp"})
# Values that differ per request: a page using them cannot be rendered once and reused.
PER_REQUEST = frozenset({"RequestID", "Timestamp"})
# Set on every placeholder answer; the add-on's name, so pages written for the add-on keep working.
SERVED_HEADER = "x-keda-http-placeholder-served"

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_VARIABLE = re.compile(r"^\.([A-Za-z][A-Za-z0-9_]*)$")
_COMMENT = re.compile(r"^/\*.*\*/$", re.S)

DEFAULT_CONTENT = """<!doctype html>
<html><head><meta charset="utf-8"><title>Starting up</title></head>
<body style="font-family: sans-serif; margin: 4em;">
<h1>{{.ServiceName}} is starting up</h1>
<p>This page reloads by itself once it is ready.</p>
</body></html>
"""

_REFRESH_SCRIPT = """<script>
(function () {
  var every = {{.RefreshInterval}} * 1000;
  function check() {
    fetch(window.location.href, {method: "HEAD", cache: "no-store", headers: {"Accept": "text/html"}})
      .then(function (r) {
        if (r.headers.get("SERVED_HEADER") !== "true") { window.location.reload(); } else { setTimeout(check, every); }
      })
      .catch(function () { setTimeout(check, every); });
  }
  setTimeout(check, every);
})();
</script>""".replace("SERVED_HEADER", SERVED_HEADER)


@dataclass(frozen=True, slots=True)
class Placeholder:
    """Compiled content: literal text at even indexes of `parts`, variable names at odd ones.

    `problem` says why the content cannot be rendered as written (then `render` gives the add-on's
    fallback text); `content_type` is what the page is answered as."""

    parts: tuple[str, ...]
    content_type: str
    problem: str = ""

    @property
    def html(self) -> bool:
        return self.content_type.startswith("text/html")

    @property
    def per_request(self) -> bool:
        return any(name in PER_REQUEST for name in self.parts[1::2])


def _content_type(content: str) -> str:
    if "<" in content and ">" in content:
        return "text/html; charset=utf-8"
    trimmed = content.strip()
    if (trimmed.startswith("{") and trimmed.endswith("}")) or (trimmed.startswith("[") and trimmed.endswith("]")):
        return "application/json"
    return "text/plain; charset=utf-8"


def _with_script(content: str) -> str:
    """Insert the refresh script before `</body>`, else before `</html>`, else at the end (as the add-on)."""
    script = _REFRESH_SCRIPT
    lower = content.lower()
    for tag in ("</body>", "</html>"):
        at = lower.rfind(tag)
        if at >= 0:
            return content[:at] + script + content[at:]
    return content + script


def compile_template(content: str) -> Placeholder:
    """Split `content` into literal text and the add-on's variables; empty content is zerohop's own page."""
    content = content or DEFAULT_CONTENT
    content_type = _content_type(content)
    if content_type.startswith("text/html"):
        content = _with_script(content)
    parts: list[str] = []
    literal = ""
    position = 0
    problem = ""
    for match in _ACTION.finditer(content):
        text = content[position : match.start()]
        if match.group(1):
            text = text.rstrip()
        literal += text
        position = match.end()
        if match.group(3):
            rest = content[position:]
            position += len(rest) - len(rest.lstrip())
        action = match.group(2).strip()
        if _COMMENT.match(action):
            continue
        variable = _VARIABLE.match(action)
        if variable is None or variable.group(1) not in VARIABLES:
            problem = problem or (
                f"{{{{{action[:40]}}}}} is not one of the variables zerohop substitutes "
                f"({', '.join('.' + v for v in sorted(VARIABLES))}); the placeholder is the text "
                "'<service> is starting up...' until it is fixed"
            )
            continue
        parts += [literal, variable.group(1)]
        literal = ""
    parts.append(literal + content[position:])
    if problem:
        return Placeholder(("",), "text/plain; charset=utf-8", problem)
    return Placeholder(tuple(parts), content_type)


def timestamp(now: float | None = None) -> str:
    """RFC 3339, UTC, whole seconds: the form of the add-on's `{{.Timestamp}}`."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now))


def render(placeholder: Placeholder, values: Mapping[str, str]) -> str:
    """The page for `values` (every name in VARIABLES), each value HTML-escaped."""
    if placeholder.problem:
        return f"{values.get('ServiceName', '')} is starting up...\n"
    parts = placeholder.parts
    out = [parts[0]]
    for index in range(1, len(parts), 2):
        out.append(html.escape(values.get(parts[index], "")))
        out.append(parts[index + 1])
    return "".join(out)
