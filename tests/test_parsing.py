import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ger_replay.datasets import REGISTRY
from ger_replay.parsing import looks_like_refusal, normalise_label, parse
from ger_replay.styles import STYLES, render

LABEL_SETS = sorted({d.labels for d in REGISTRY.values()})
NOUNS = ("image", "video", "text", "tweet")
PROSE = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ,.!?\n", max_size=60).filter(
    lambda s: not re.search(r"\d", s))


@st.composite
def batches(draw):
    labels = draw(st.sampled_from(LABEL_SETS))
    noun = draw(st.sampled_from(NOUNS))
    numbers = draw(st.lists(st.integers(1, 60), min_size=1, max_size=20, unique=True))
    answers = []
    for number in numbers:
        ranking = draw(st.permutations(labels))
        answers.append((f"{noun}-{number}", list(ranking[:draw(st.integers(1, len(labels)))])))
    return labels, answers


@pytest.mark.parametrize("style", sorted(STYLES))
@given(batch=batches(), before=PROSE, after=PROSE)
def test_every_style_round_trips(style, batch, before, after):
    labels, answers = batch
    text = render(style, answers, before=before, after=after)
    parsed = parse(text, [name for name, _ in answers], labels)
    assert parsed.answers == {name: tuple(ranking) for name, ranking in answers}
    assert parsed.complete and not parsed.out_of_set and not parsed.duplicates


def test_at_least_six_styles_are_covered():
    assert len(STYLES) >= 6


@given(st.text(max_size=400), st.lists(st.sampled_from(["image-1", "image-2", "video-3"]),
                                        unique=True, min_size=1))
def test_arbitrary_text_never_raises(text, names):
    parsed = parse(text, names, ["happy", "sad"])
    assert set(parsed.answers) <= set(names)
    assert set(parsed.missing) == set(names) - set(parsed.answers)


FRAGMENTS = ["{", "}", "[", "]", "'", '"', ":", ",", "name", "result", "image-1", "image-2",
             "happy", "sad", "\n", " ", "```json", "1.", "- **", "**"]


@given(st.lists(st.sampled_from(FRAGMENTS), max_size=60))
def test_fragments_of_answers_never_raise(pieces):
    parsed = parse("".join(pieces), ["image-1", "image-2"], ["happy", "sad"])
    assert set(parsed.missing) | set(parsed.answers) == {"image-1", "image-2"}


@given(batch=batches(), data=st.data())
def test_whitespace_and_case_do_not_change_meaning(batch, data):
    labels, answers = batch
    style = data.draw(st.sampled_from(["python_lines", "python_list", "json_lines", "keyed_dict"]))
    text = render(style, answers)
    spaced = re.sub(r"([{}\[\]:,])", lambda m: data.draw(st.sampled_from(["", " ", "  ", "\n"]))
                    + m.group(1) + data.draw(st.sampled_from(["", " ", "\t"])), text)
    shouted = spaced.upper() if data.draw(st.booleans()) else spaced.swapcase()
    names = [name for name, _ in answers]
    assert parse(shouted, names, labels).answers == parse(text, names, labels).answers


def test_names_with_other_spacing_and_case_are_matched():
    text = ("{'name': 'Image 1', 'result': ['happy']}\n{'name': 'IMAGE_2', 'result': ['sad']}\n"
            "{'name': 'image3', 'result': ['sad']}")
    parsed = parse(text, ["image-1", "image-2", "image-3"], ["happy", "sad"])
    assert parsed.answers == {"image-1": ("happy",), "image-2": ("sad",), "image-3": ("sad",)}


def test_a_truncated_answer_keeps_what_is_complete():
    text = ("```json\n[{\"name\": \"video-1\", \"result\": [\"sad\", \"happy\"]},\n"
            "{\"name\": \"video-2\", \"result\": [\"ha")
    parsed = parse(text, ["video-1", "video-2"], ["happy", "sad"])
    assert parsed.answers == {"video-1": ("sad", "happy")}
    assert parsed.missing == ("video-2",) and not parsed.complete


def test_unknown_names_duplicates_and_out_of_set_labels_are_reported():
    text = ("{'name': 'image-1', 'result': ['happy', 'bored']}\n"
            "{'name': 'image-1', 'result': ['sad']}\n{'name': 'image-9', 'result': ['sad']}")
    parsed = parse(text, ["image-1", "image-2"], ["happy", "sad"])
    assert parsed.answers == {"image-1": ("happy", "bored")}
    assert parsed.unknown == ("image-9",)
    assert parsed.duplicates == ("image-1",)
    assert parsed.out_of_set == (("image-1", "bored"),)
    assert parsed.missing == ("image-2",)


@pytest.mark.parametrize("text", [
    "1. image-1: happy, sad\n2. image-2: sad > happy",
    "- **image-1**: happy > sad\n- **image-2**: sad, happy",
    "Sure!\nimage-1 - happy, sad\nimage-2 - sad, happy\nLet me know.",
    "{'image-1': 'happy, sad', 'image-2': ['sad', 'happy']}",
    "{'name': 'image-1', 'result': 'happy; sad'} {'name': 'image-2', 'result': 'sad; happy'}",
])
def test_line_and_string_styles(text):
    parsed = parse(text, ["image-1", "image-2"], ["happy", "sad"])
    assert parsed.answers == {"image-1": ("happy", "sad"), "image-2": ("sad", "happy")}


@pytest.mark.parametrize("dataset, written, expected", [
    ("rafdb", "happy", "Happiness"), ("rafdb", "SAD", "Sadness"), ("rafdb", "angry", "Anger"),
    ("rafdb", "surprised", "Surprise"), ("rafdb", "fearful", "Fear"),
    ("rafdb", "Disgusted.", "Disgust"), ("ravdess", "fear", "fearful"),
    ("ravdess", "surprise", "surprised"), ("ravdess", "anger", "angry"),
    ("ckplus", "happiness", "happy"), ("ckplus", "sad", "sadness"),
    ("ckplus", "contemptuous", "contempt"), ("artphoto", "content", "contentment"),
    ("abstract", "contentment", "Content"), ("artphoto", "excited", "excitement"),
    ("mer2023", "worry", "worried"), ("casme2", "other", "others"), ("samm", "others", "Other"),
    ("cmumosi", "Weakly-Positive", "weakly positive"), ("cmumosi", "positive", "positive"),
    ("cmumosi", " 'negative' ", "negative"), ("casme", "tension", "tense"),
    ("rafdb", "bored", None), ("rafdb", "", None),
])
def test_labels_are_normalised_to_the_dataset_spelling(dataset, written, expected):
    assert normalise_label(written, REGISTRY[dataset].labels) == expected


def test_refusals_are_recognised():
    for text in ("I'm sorry, I can't help with that.", "I’m sorry, but I cannot assist with "
                 "identifying people.", "I am unable to provide emotion judgements here.",
                 "Sorry, I can't analyze these images."):
        assert looks_like_refusal(text), text
        assert parse(text, ["image-1"], ["happy", "sad"]).answers == {}
    assert not looks_like_refusal("{'name': 'image-1', 'result': ['happy']}")
