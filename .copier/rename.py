"""Copier extension: render this repository, which holds no placeholders, as a template.

Every file of the repository is a runnable part of the project ``mlops_assets``. While copier
renders it, this extension rewrites each file's text before Jinja parses it:

* the whole text becomes literal (wrapped in ``raw`` blocks), so braces in code, YAML or
  GraphQL never reach Jinja;
* the three names a team owns become template variables: ``mlops_assets`` (package and, as a
  prefix, the tests package) -> ``package_name``, ``mlops-assets`` (distribution, command,
  Kubernetes names) -> ``project_name``, ``flight_delay`` (registered model, bento service)
  -> ``model_name``;
* lines between a ``[template:if <question>]`` (or ``[template:if not <question>]``) and a
  ``[template:end]`` marker line (in the file's own comment syntax) are kept only when the
  boolean question was answered yes (no), and
  a line ending in a ``[template:only <question>]`` comment (e.g. a Markdown table row) is
  kept, without the comment, only then; both take several conditions joined by ``and``
  (``[template:only with_kubernetes and with_observability]``); marker lines never reach the
  generated project.

Path parts go through the same rename, so ``mlops_assets/`` becomes ``<package_name>/``.
Strings copier renders from ``copier.yml`` (defaults, validators, exclusions) contain Jinja
and are left alone, as is the answers-file template.
"""

from __future__ import annotations

import re

from jinja2.ext import Extension

NAMES = {
    "mlops_assets": "package_name",
    "mlops-assets": "project_name",
    "flight_delay": "model_name",
}
_NAME = re.compile("|".join(re.escape(name) for name in NAMES))
# The condition of a marker: a boolean question, negated or not, or several joined by "and"
# (a line that belongs to two optional parts).
_CONDITION = r"(?:not )?\w+(?: and (?:not )?\w+)*"
# A marker line: nothing but the marker in a comment ("# ...", "<!-- ... -->").
_FENCE = re.compile(
    r"^[ \t]*(?:<!--|#)[ \t]*\[template:(?:if (?P<question>" + _CONDITION + r")|(?P<end>end))\]"
    r"[ \t]*(?:-->)?[ \t]*$"
)
# A marker at the end of a line that keeps just that line (e.g. a Markdown table row):
# "... <!-- [template:only question] -->" or "...  # [template:only question]".
_ONLY = re.compile(
    r"[ \t]*(?:<!--|#)[ \t]*\[template:only (?P<question>" + _CONDITION + r")\]"
    r"[ \t]*(?:-->)?[ \t]*$"
)
_ANSWERS_TEMPLATE = "{{ _copier_conf.answers_file }}"


def _literal(text: str) -> str:
    """``text`` as a Jinja template that renders to itself, with the names substituted."""
    if "{% endraw %}" in text:
        raise ValueError("a template file must not contain the text '{% endraw %}'")
    out: list[str] = []
    position = 0
    for match in _NAME.finditer(text):
        out.append(text[position : match.start()])
        out.append("{% endraw %}{{ " + NAMES[match.group(0)] + " }}{% raw %}")
        position = match.end()
    out.append(text[position:])
    return "{% raw %}" + "".join(out) + "{% endraw %}"


def render_source(text: str) -> str:
    """The Jinja source for one repository file: literal text, names, optional sections."""
    parts: list[str] = []
    plain: list[str] = []
    depth = 0
    for line in text.splitlines(keepends=True):
        fence = _FENCE.search(line.rstrip("\r\n"))
        only = _ONLY.search(line.rstrip("\r\n"))
        if fence is None and only is None:
            plain.append(line)
            continue
        parts.append(_literal("".join(plain)))
        plain = []
        if only is not None:
            kept = line[: only.start()] + line[len(line.rstrip("\r\n")) :]
            parts.append("{% if " + only.group("question") + " %}" + _literal(kept) + "{% endif %}")
        elif fence is not None and fence.group("end"):
            if depth == 0:
                raise ValueError("[template:end] without a matching [template:if ...]")
            depth -= 1
            parts.append("{% endif %}")
        elif fence is not None:
            depth += 1
            parts.append("{% if " + fence.group("question") + " %}")
    if depth:
        raise ValueError("[template:if ...] without a matching [template:end]")
    parts.append(_literal("".join(plain)))
    return "".join(parts)


class RenameExtension(Extension):
    """Turns repository files and path parts into templates (see the module docstring)."""

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        """Jinja hook run on every template source before parsing."""
        if name is None:
            # A string from copier.yml (it holds Jinja) or one part of a file path (it does not).
            if "{{" in source or "{%" in source:
                return source
            return _literal(source)
        if name == _ANSWERS_TEMPLATE:
            return source
        return render_source(source)
