import pytest

from ger_replay.datasets import REGISTRY
from ger_replay.errors import ManifestError
from ger_replay.imports import read_predictions, score_file


def write(folder, name, text):
    path = folder / name
    path.write_text(text)
    return path


def test_published_predictions_are_scored_with_the_sample_list_beside_them(tmp_path):
    write(tmp_path, "label.csv", "name,gt,gpt4v\na.mp4,happy,\nb.mp4,sad,\nc.mp4,calm,\n")
    predictions = write(tmp_path, "label-gpt4v-3.csv",
                        'name,gt,gpt4v\na,happy,"happy,sad,calm"\nb,sad,"calm,sad"\n')
    rows = read_predictions(predictions, REGISTRY["ravdess"])
    assert [(r.name, r.ranking) for r in rows] == [
        ("a", ("happy", "sad", "calm")), ("b", ("calm", "sad")), ("c.mp4", None)]
    found = score_file(REGISTRY["ravdess"], predictions)
    assert (found.n, found.total) == (2, 3)
    assert found.metrics["war"] == 50.0 and found.metrics["uar"] == 50.0


def test_intensity_ground_truths(tmp_path):
    predictions = write(tmp_path, "p.csv", 'name,gt,gpt4v\na,1.4,"weakly positive,neutral"\n'
                                           'b,-0.6,"neutral"\nc,0.0,"positive"\n')
    found = score_file(REGISTRY["cmumosi"], predictions)
    assert found.total == 2 and found.metrics["acc2_non0"] == 100.0


@pytest.mark.parametrize("text, message", [
    ("label,gpt4v\n", "p.csv:1: expected the header name,gt,gpt4v"),
    ('name,gt,gpt4v\na,happy,"happy"\nb\n', "p.csv:3: expected name,gt,gpt4v; got 1 fields"),
    ('name,gt,gpt4v\na,strong,"positive"\n', "p.csv:2: gt 'strong' is not an intensity"),
    ('name,gt,gpt4v\na,1,"positive"\na,2,"positive"\n', "sample 'a' appears twice"),
])
def test_bad_files_name_the_line(tmp_path, text, message):
    dataset = REGISTRY["cmumosi"] if "strong" in text or "1," in text else REGISTRY["ckplus"]
    with pytest.raises(ManifestError, match=message):
        read_predictions(write(tmp_path, "p.csv", text), dataset)
