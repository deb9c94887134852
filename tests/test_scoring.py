import math

import pytest

from ger_replay.datasets import REGISTRY
from ger_replay.scoring import Row, baselines, bootstrap_ci, confusion, score

CKPLUS = REGISTRY["ckplus"]
ABSTRACT = REGISTRY["abstract"]
MOSI = REGISTRY["cmumosi"]


def rows(*triples):
    return [Row(f"s{i}", truth, tuple(r.split(",")) if r else None)
            for i, (truth, r) in enumerate(triples)]


def test_the_first_label_decides_case_insensitively():
    found = score(CKPLUS, rows(("happy", "Happy,sadness"), ("sadness", "happy,sadness"),
                               ("anger", "ANGER"), ("fear", "fear")))
    assert found.metrics["accuracy"] == 75.0
    assert found.metrics["war"] == found.metrics["accuracy"]


def test_out_of_set_labels_are_wrong_unless_asked_for_the_first_candidate():
    data = rows(("happy", "joyful,happy"), ("sadness", "sadness"))
    assert score(CKPLUS, data).metrics["accuracy"] == 50.0
    assert score(CKPLUS, data, first_candidate=True).metrics["accuracy"] == 100.0


def test_uar_averages_recall_over_the_classes_present():
    data = rows(("happy", "happy"), ("happy", "happy"), ("happy", "fear"), ("happy", "happy"),
                ("fear", "fear"), ("fear", "happy"))
    found = score(CKPLUS, data)
    assert found.metrics["accuracy"] == pytest.approx(100 * 4 / 6)
    assert found.metrics["uar"] == pytest.approx((75 + 50) / 2)


def test_coverage_and_the_strict_figure():
    data = rows(("happy", "happy"), ("fear", "fear"), ("anger", None), ("fear", "happy"))
    found = score(CKPLUS, data)
    assert (found.n, found.total, found.coverage) == (3, 4, 75.0)
    assert found.metrics["accuracy"] == pytest.approx(200 / 3)
    assert found.strict["accuracy"] == 50.0


def test_polarity_datasets_score_on_polarity():
    data = rows(("Amusement", "Awe"), ("Anger", "fear"), ("Content", "Sad"), ("Fear", "bored"))
    found = score(ABSTRACT, data)
    assert found.metrics["accuracy"] == 50.0
    labels, _ = confusion(ABSTRACT, data)
    assert labels[:2] == ["negative", "positive"]


def test_non_zero_f1_drops_zeros_and_counts_weakly_positive_as_positive():
    data = rows(("1.2", "weakly positive,positive"), ("-0.4", "neutral"), ("0.0", "positive"),
                ("2.0", "negative"), ("-2.2", "weakly negative"), ("0.6", "Positive"))
    found = score(MOSI, data)
    assert found.total == 5
    # truths: + - + - + ; predictions: + - - - +
    assert found.metrics["acc2_non0"] == 80.0
    precision_pos, recall_pos = 1.0, 2 / 3
    f1_pos = 2 * precision_pos * recall_pos / (precision_pos + recall_pos)
    precision_neg, recall_neg = 2 / 3, 1.0
    f1_neg = 2 * precision_neg * recall_neg / (precision_neg + recall_neg)
    assert found.metrics["f1_non0"] == pytest.approx(100 * (3 * f1_pos + 2 * f1_neg) / 5)
    assert set(found.metrics) == {"f1_non0", "acc2_non0"}


def test_a_missing_answer_is_wrong_in_the_strict_binary_figure():
    found = score(MOSI, rows(("1.0", "positive"), ("-1.0", None)))
    assert found.metrics["acc2_non0"] == 100.0 and found.strict["acc2_non0"] == 50.0


def test_no_answers_give_nan_not_an_error():
    found = score(CKPLUS, rows(("happy", None)))
    assert found.n == 0 and math.isnan(found.metrics["accuracy"])


def test_baselines_are_seeded_and_majority_is_the_class_share():
    data = rows(*[("happy", "fear")] * 6, *[("fear", "fear")] * 3, ("anger", "fear"))
    found = baselines(CKPLUS, data)
    assert found["majority"]["accuracy"] == 60.0
    assert found == baselines(CKPLUS, data)
    assert 0 <= found["random"]["accuracy"] <= 100
    assert baselines(CKPLUS, data, seed=1)["random"] != found["random"]


def test_bootstrap_intervals_are_seeded_and_hold_the_estimate():
    data = rows(*[("happy", "happy")] * 30, *[("fear", "happy")] * 20)
    interval = bootstrap_ci(CKPLUS, data, n_boot=300, seed=3)
    low, high = interval["accuracy"]
    assert low < 60.0 < high
    assert interval == bootstrap_ci(CKPLUS, data, n_boot=300, seed=3)


def test_confusion_counts_out_of_set_predictions_apart():
    labels, matrix = confusion(CKPLUS, rows(("happy", "happy"), ("happy", "joy"), ("fear", None)))
    assert labels[-1] == "joy"
    assert matrix[labels.index("happy")][labels.index("happy")] == 1
    assert matrix[labels.index("happy")][labels.index("joy")] == 1
    assert sum(map(sum, matrix)) == 2


@pytest.mark.parametrize("dataset", [CKPLUS, MOSI])
def test_the_bootstrap_fast_path_agrees_with_scikit_learn(dataset):
    import numpy as np

    from ger_replay.scoring import _fast_metrics, _metrics

    rng = np.random.default_rng(1)
    classes = 2 if dataset is MOSI else 6
    truths = rng.integers(0, classes, 200)
    predictions = np.where(rng.random(200) < 0.6, truths, rng.integers(0, classes + 1, 200))
    names = [f"c{i}" for i in range(classes + 1)]
    slow = _metrics(dataset, [names[t] for t in truths], [names[p] for p in predictions])
    fast = _fast_metrics(dataset, truths, predictions, classes + 1)
    assert fast == pytest.approx(slow)
