"""From a response text to a ranking per in-batch name, with diagnostics; never an exception.

Answers come in many styles (see `styles`): dicts in Python or JSON syntax, one per line or in a
list, keyed by name, inside code fences, numbered lines, bullets, prose around them. Dict-like
spans are read first; line-by-line reading is the fallback when there are none. Regular
expressions rather than `ast.literal_eval` read the dicts: models write half-valid literals
(truncated, unquoted, mixed quotes) and the regexes stay linear on any input.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

_SPAN = re.compile(r"\{[^{}]*\}")
_NAME_FIELD = re.compile(r"""["']?name["']?\s*[:=]\s*["']?\s*([^"',}\]\n]+?)\s*["']?\s*(?:,|\}|$)""",
                         re.IGNORECASE)
_RESULT_FIELD = re.compile(
    r"""["']?(?:results?|ranking|rank|labels?|categories|predictions?)["']?\s*[:=]\s*"""
    r"""(\[[^\]]*\]?|"[^"]*"|'[^']*'|[^,}\n]+)""", re.IGNORECASE)
_KEYED = re.compile(r"""["']?([A-Za-z]+[ _-]?\d+)["']?\s*:\s*(\[[^\]]*\]|"[^"]*"|'[^']*')""")
_LINE = re.compile(r"""^\s*(?:[-*•+]\s+|\d+\s*[.)]\s+|#+\s*)?(?:\*\*|__)?\s*["']?"""
                   r"""([A-Za-z]+[ _-]?\d+)["']?\s*(?:\*\*|__)?\s*(?:[:=–—]|-\s)\s*(.+?)\s*$""")
_NAME = re.compile(r"[A-Za-z]+[ _-]?\d+")
_QUOTED = re.compile(r""""([^"]*)"|'([^']*)'""")
_SEPARATORS = re.compile(r"\s*(?:,|>|;|\||→|\n|\band then\b|\bthen\b)\s*")
_NUMBERING = re.compile(r"^\s*\d+\s*[.)]\s+")
_SPACES = re.compile(r"[\s_-]+")
_NOISE = " \t\r\n\"'`*_[](){}.:;!?"
_REFUSAL = re.compile(
    r"\b(?:i'?m sorry|i am sorry|sorry, (?:but )?i|i apologi[sz]e|"
    r"i (?:can ?not|can't|won't|am unable to|am not able to|'m unable to|'m not able to) "
    r"(?:help|assist|provide|identify|analy[sz]e|determine|comply|fulfil|do that|make)|"
    r"unable to (?:help|assist|provide|identify|analy[sz]e)|"
    r"against (?:my|the) (?:guidelines|policy|policies))")

# Noun/adjective forms GPT-4V uses for the candidates' emotions, grouped by a shared stem.
_FORMS = {
    "happy": ("happiness", "happy"), "sad": ("sadness", "sad"),
    "fear": ("fear", "fearful", "afraid", "scared"), "disgust": ("disgust", "disgusted", "disgusting"),
    "surprise": ("surprise", "surprised"), "anger": ("anger", "angry"),
    "content": ("content", "contentment", "contented"), "contempt": ("contempt", "contemptuous"),
    "excitement": ("excitement", "excited"), "amusement": ("amusement", "amused"),
    "worry": ("worry", "worried"), "calm": ("calm", "calmness"), "tense": ("tense", "tension"),
    "other": ("other", "others"), "neutral": ("neutral", "neutrality"), "awe": ("awe", "awed"),
    "repression": ("repression", "repressed"),
    "weakly positive": ("weakly positive", "weak positive", "slightly positive"),
    "weakly negative": ("weakly negative", "weak negative", "slightly negative"),
}
_STEM = {form: stem for stem, forms in _FORMS.items() for form in forms}


@dataclass(frozen=True)
class Parsed:
    """What a response says about each in-batch name, and what is wrong with it."""

    answers: dict[str, tuple[str, ...]]
    missing: tuple[str, ...]
    unknown: tuple[str, ...]
    out_of_set: tuple[tuple[str, str], ...]
    duplicates: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return not self.missing and not self.unknown


@lru_cache(maxsize=4096)
def _name_key(name: str) -> str:
    return _SPACES.sub("", name.lower())


def _clean(label: str) -> str:
    label = _NUMBERING.sub("", label)
    return _SPACES.sub(" ", label.strip(_NOISE)).strip()


def _stem(label: str) -> str:
    if label in _STEM:
        return _STEM[label]
    if label.endswith("s") and label[:-1] in _STEM:
        return _STEM[label[:-1]]
    return label


@lru_cache(maxsize=256)
def _index(labels: tuple[str, ...]) -> tuple[dict[str, str], dict[str, str]]:
    """Each candidate by its cleaned lowercase spelling, and by its stem (first one wins)."""
    exact: dict[str, str] = {}
    stems: dict[str, str] = {}
    for candidate in labels:
        cleaned = _clean(candidate).lower()
        exact.setdefault(cleaned, candidate)
        stems.setdefault(_stem(cleaned), candidate)
    return exact, stems


@lru_cache(maxsize=65536)
def _resolve(written: str, labels: tuple[str, ...]) -> tuple[str, str | None]:
    """A written label, cleaned, and the candidate it means (exact spelling before word forms)."""
    cleaned = _clean(written)
    wanted = cleaned.lower()
    if not wanted:
        return "", None
    exact, stems = _index(labels)
    return cleaned, exact.get(wanted) or stems.get(_stem(wanted))


def normalise_label(label: str, labels: Sequence[str]) -> str | None:
    """The candidate a written label means (case, punctuation, plural and word forms), or None."""
    return _resolve(label, tuple(labels))[1]


def _ranking(value: str) -> list[str]:
    """A written result (a list literal or a separated string) as its labels, in order."""
    value = value.strip()
    if value.startswith("["):
        quoted = [a or b for a, b in _QUOTED.findall(value)]
        if quoted:
            return quoted
        value = value.strip("[]")
    return _SEPARATORS.split(value.strip(_NOISE.replace(",", "")))


def _entries(text: str) -> list[tuple[str, list[str]]]:
    """(written name, written labels) pairs, in the order the text gives them."""
    found = []
    for span in _SPAN.finditer(text):
        body = span.group(0)
        name = _NAME_FIELD.search(body)
        if name:
            result = _RESULT_FIELD.search(body, name.end() - 1) or _RESULT_FIELD.search(body)
            found.append((name.group(1), _ranking(result.group(1)) if result else []))
            continue
        found.extend((key, _ranking(value)) for key, value in _KEYED.findall(body))
    if found:
        return found
    for line in text.splitlines():
        cells = line.strip().strip("|").split("|") if line.lstrip().startswith("|") else []
        if len(cells) >= 2 and _NAME.fullmatch(cells[0].strip(" *`'\"")):
            found.append((cells[0].strip(" *`'\""), _ranking(",".join(cells[1:]))))
            continue
        match = _LINE.match(line)
        if match:
            found.append((match.group(1), _ranking(match.group(2))))
    return found


def parse(text: str, names: Sequence[str], labels: Sequence[str]) -> Parsed:
    """Read the ranking the response gives each expected name, with what went wrong."""
    if not isinstance(text, str):
        text = ""
    expected = {_name_key(name): name for name in names}
    candidates = tuple(labels)
    answers: dict[str, tuple[str, ...]] = {}
    unknown, out_of_set, duplicates = [], [], []
    for written, raw in _entries(text):
        name = expected.get(_name_key(written))
        if name is None:
            if written.strip() not in unknown:
                unknown.append(written.strip())
            continue
        ranking: list[str] = []
        seen = set()
        for item in raw:
            cleaned, label = _resolve(item, candidates)
            if not cleaned:
                continue
            label = label or cleaned
            if label.lower() in seen:
                continue
            seen.add(label.lower())
            ranking.append(label)
        if not ranking:
            continue
        if name in answers:
            duplicates.append(name)
            continue
        answers[name] = tuple(ranking)
        out_of_set.extend((name, label) for label in ranking if label not in candidates)
    return Parsed(answers=answers, missing=tuple(n for n in names if n not in answers),
                  unknown=tuple(unknown), out_of_set=tuple(out_of_set),
                  duplicates=tuple(dict.fromkeys(duplicates)))


def looks_like_refusal(text: str) -> bool:
    """Whether a text reads as a refusal. Meant for answers in which nothing parsed: a valid
    answer may well apologise somewhere."""
    return bool(_REFUSAL.search(text.lower().replace("’", "'")))
