"""The ways GPT-4V writes a batch of ranked answers, as renderers.

The sandbox answers in these styles and the parser's property tests render through them, so the
two agree on what "a style GPT-4V produces" means.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

Answer = tuple[str, Sequence[str]]


def python_lines(answers: Sequence[Answer]) -> str:
    return "\n".join(repr({"name": name, "result": list(ranking)}) for name, ranking in answers)


def python_list(answers: Sequence[Answer]) -> str:
    return repr([{"name": name, "result": list(ranking)} for name, ranking in answers])


def json_fenced(answers: Sequence[Answer]) -> str:
    body = json.dumps([{"name": n, "result": list(r)} for n, r in answers], indent=2)
    return f"```json\n{body}\n```"


def json_lines(answers: Sequence[Answer]) -> str:
    return "\n".join(json.dumps({"name": n, "result": list(r)}) for n, r in answers)


def result_string(answers: Sequence[Answer]) -> str:
    return "\n".join(repr({"name": n, "result": ", ".join(r)}) for n, r in answers)


def numbered(answers: Sequence[Answer]) -> str:
    return "\n".join(f"{i}. {n}: {', '.join(r)}" for i, (n, r) in enumerate(answers, 1))


def keyed_dict(answers: Sequence[Answer]) -> str:
    return repr({name: list(ranking) for name, ranking in answers})


def markdown_bullets(answers: Sequence[Answer]) -> str:
    return "\n".join(f"- **{n}**: {' > '.join(r)}" for n, r in answers)


def markdown_table(answers: Sequence[Answer]) -> str:
    rows = [f"| {n} | {', '.join(r)} |" for n, r in answers]
    return "\n".join(["| name | result |", "|---|---|", *rows])


def headed_lists(answers: Sequence[Answer]) -> str:
    return "\n\n".join(f"**{n}:**\n" + "\n".join(f"{i}. {label}" for i, label in enumerate(r, 1))
                       for n, r in answers)


STYLES: dict[str, Callable[[Sequence[Answer]], str]] = {
    "python_lines": python_lines,
    "python_list": python_list,
    "json_fenced": json_fenced,
    "json_lines": json_lines,
    "result_string": result_string,
    "numbered": numbered,
    "keyed_dict": keyed_dict,
    "markdown_bullets": markdown_bullets,
    "markdown_table": markdown_table,
    "headed_lists": headed_lists,
}


def render(style: str, answers: Sequence[Answer], before: str = "", after: str = "") -> str:
    """The answers in one style, with optional prose around them."""
    parts = [before, STYLES[style](answers), after]
    return "\n\n".join(part for part in parts if part)
