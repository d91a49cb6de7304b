"""Metrics against scikit-learn/statsmodels, bootstrap CIs, grouped folds, temperature scaling."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from scintiflow import CLASSES
from scintiflow.ml.evaluation import (
    ArchResult,
    ClassificationMetrics,
    EvalSet,
    StudyResult,
    bootstrap_ci,
    bootstrap_cis,
    classification_metrics,
    compare_readers,
    expected_calibration_error,
    fit_temperature,
    label_metrics,
    mcnemar_exact,
    negative_log_likelihood,
    patient_grouped_folds,
    softmax,
    summarize_folds,
)
from scintiflow.ml.readers import ReaderRead

K = len(CLASSES)


def _fixed_arrays(n: int = 240, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Labels with every class present and informative but imperfect probabilities."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, size=n)
    logits = rng.normal(size=(n, K)) + 1.6 * np.eye(K)[y]
    return y, softmax(logits)


def test_metrics_match_sklearn() -> None:
    y, p = _fixed_arrays()
    m = classification_metrics(y, p)
    pred = p.argmax(1)
    assert m.n == y.size
    assert m.accuracy == pytest.approx(skm.accuracy_score(y, pred))
    assert m.confusion == skm.confusion_matrix(y, pred, labels=range(K)).tolist()
    recall = skm.recall_score(y, pred, average=None, labels=range(K))
    precision = skm.precision_score(y, pred, average=None, labels=range(K))
    f1 = skm.f1_score(y, pred, average=None, labels=range(K))
    for i, c in enumerate(CLASSES):
        pos, hit = y == i, pred == i
        spec = skm.recall_score(~pos, ~hit)  # specificity = recall of the negative class
        npv = skm.precision_score(~pos, ~hit)
        stats = m.per_class[c]
        assert stats["sensitivity"] == pytest.approx(recall[i])
        assert stats["ppv"] == pytest.approx(precision[i])
        assert stats["f1"] == pytest.approx(f1[i])
        assert stats["specificity"] == pytest.approx(spec)
        assert stats["npv"] == pytest.approx(npv)
        assert stats["auc"] == pytest.approx(skm.roc_auc_score(pos, p[:, i]))
    assert m.macro_auc == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert 0.5 < m.accuracy < 0.95  # informative but not perfect: the comparison means something


def test_auc_handles_ties_like_sklearn() -> None:
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 0])
    p = np.full((10, K), 0.25)
    p[:4] = np.eye(K)[[0, 1, 2, 0]] * 0.4 + 0.15  # rows sum to 1, many ties
    m = classification_metrics(y, p)
    for i, c in enumerate(CLASSES):
        assert m.per_class[c]["auc"] == pytest.approx(skm.roc_auc_score(y == i, p[:, i]))


def test_absent_class_gives_nan_auc_and_macro_over_present() -> None:
    y, p = _fixed_arrays()
    keep = y != 2
    m = classification_metrics(y[keep], p[keep])
    assert math.isnan(m.per_class[CLASSES[2]]["auc"])
    assert math.isnan(m.per_class[CLASSES[2]]["sensitivity"])
    present = [skm.roc_auc_score(y[keep] == i, p[keep][:, i]) for i in (0, 1, 3)]
    assert m.macro_auc == pytest.approx(np.mean(present))
    assert m.per_class[CLASSES[2]]["specificity"] <= 1.0


def test_string_labels_equal_index_labels() -> None:
    y, p = _fixed_arrays(60)
    by_name = classification_metrics([CLASSES[i] for i in y], p)
    assert by_name == classification_metrics(y, p)
    with pytest.raises(ValueError, match="unknown class"):
        classification_metrics(["cancer"] * 60, p)


def test_metrics_json_roundtrip_keeps_nan() -> None:
    y, p = _fixed_arrays()
    m = classification_metrics(y[y != 1], p[y != 1])
    text = json.dumps(m.to_dict(), allow_nan=False)  # valid JSON: NaN became null
    back = ClassificationMetrics.from_dict(json.loads(text))
    assert back.confusion == m.confusion
    assert back.accuracy == m.accuracy
    assert math.isnan(back.per_class[CLASSES[1]]["auc"])
    assert back.per_class[CLASSES[0]] == m.per_class[CLASSES[0]]


def test_ece_against_hand_computation() -> None:
    # Two bins used (n_bins=2 -> (0, .5], (.5, 1]):
    # bin 1: confidences .4, .5 -> mean .45; correct: 1, 0 -> acc .5; |.5-.45| = .05, weight 2/5
    # bin 2: confidences .9, .8, .6 -> mean .7667; correct 1, 1, 0 -> acc .6667; weight 3/5
    p = np.array(
        [
            [0.4, 0.3, 0.2, 0.1],
            [0.5, 0.5, 0.0, 0.0],  # tie: argmax picks class 0
            [0.9, 0.1, 0.0, 0.0],
            [0.1, 0.8, 0.1, 0.0],
            [0.2, 0.6, 0.1, 0.1],
        ]
    )
    y = np.array([0, 1, 0, 1, 0])
    expected = 2 / 5 * abs(0.5 - 0.45) + 3 / 5 * abs(2 / 3 - (0.9 + 0.8 + 0.6) / 3)
    assert expected_calibration_error(y, p, n_bins=2) == pytest.approx(expected)
    # A perfectly calibrated toy: confidence 1 and always right -> 0.
    assert expected_calibration_error(np.arange(4), np.eye(4)) == pytest.approx(0.0)


def test_label_metrics_have_no_auc() -> None:
    y, p = _fixed_arrays()
    m = label_metrics(y, p.argmax(1))
    ref = classification_metrics(y, p)
    assert m.accuracy == ref.accuracy
    assert m.confusion == ref.confusion
    assert math.isnan(m.macro_auc)
    assert math.isnan(m.ece)


def test_mcnemar_matches_statsmodels_exact() -> None:
    from statsmodels.stats.contingency_tables import mcnemar

    rng = np.random.default_rng(3)
    for n, acc_a, acc_b in [(200, 0.93, 0.87), (50, 0.8, 0.8), (613, 0.931, 0.868), (15, 0.9, 0.5)]:
        y = rng.integers(0, K, size=n)
        a = np.where(rng.random(n) < acc_a, y, (y + 1) % K)
        b = np.where(rng.random(n) < acc_b, y, (y + 2) % K)
        res = mcnemar_exact(y, a, b)
        ra, rb = a == y, b == y
        table = [[np.sum(ra & rb), np.sum(ra & ~rb)], [np.sum(~ra & rb), np.sum(~ra & ~rb)]]
        ref = mcnemar(table, exact=True)
        assert (res.b, res.c, res.n) == (table[0][1], table[1][0], n)
        assert res.p_value == pytest.approx(ref.pvalue, rel=1e-9)


def test_mcnemar_no_discordant_pairs_is_one() -> None:
    y = np.array([0, 1, 2, 3])
    assert mcnemar_exact(y, y, y).p_value == 1.0


def test_bootstrap_ci_contains_point_and_narrows_with_n() -> None:
    widths = []
    for n in (100, 1600):
        y, p = _fixed_arrays(n, seed=11)
        m = classification_metrics(y, p)
        cis = bootstrap_cis(
            y, p, metrics=["accuracy", "macro_auc", "sensitivity:graves"], n_boot=300
        )
        for name, (lo, hi) in cis.items():
            assert lo <= m.value(name) <= hi, name
        widths.append(cis["accuracy"][1] - cis["accuracy"][0])
    # The width shrinks like 1/sqrt(n): 16x the cases -> about a quarter of the width.
    assert widths[1] < 0.5 * widths[0]
    single = bootstrap_ci(y, p, metric="accuracy", n_boot=300)
    assert single == bootstrap_cis(y, p, metrics=["accuracy"], n_boot=300)["accuracy"]


def test_grouped_bootstrap_resamples_patients() -> None:
    # 40 patients with 10 identical images each: the effective sample is 40, not 400.
    rng = np.random.default_rng(5)
    patient_right = rng.random(40) < 0.7
    groups = np.repeat(np.arange(40), 10)
    y = np.zeros(400, dtype=int)
    p = np.tile(np.array([[0.1, 0.9, 0.0, 0.0]]), (400, 1))
    p[np.repeat(patient_right, 10)] = [0.9, 0.1, 0.0, 0.0]
    naive = bootstrap_ci(y, p, n_boot=400)
    grouped = bootstrap_ci(y, p, n_boot=400, groups=groups)
    assert grouped[1] - grouped[0] > 2.0 * (naive[1] - naive[0])
    # Resampling whole patients of identical images is resampling one row per patient.
    one_each = bootstrap_ci(y[::10], p[::10], n_boot=400)
    assert grouped == pytest.approx(one_each)


def _simulated_patients(n_patients: int = 120, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    per_patient = rng.choice([1, 2, 3], size=n_patients, p=[0.75, 0.17, 0.08])
    labels = rng.choice(K, size=n_patients, p=[0.4, 0.25, 0.15, 0.2])
    groups = np.repeat(np.array([f"p{i:04d}" for i in range(n_patients)]), per_patient)
    return np.repeat(labels, per_patient), groups


def test_grouped_folds_never_leak_patients_and_keep_strata() -> None:
    y, groups = _simulated_patients()
    assert np.unique(groups).size < groups.size  # repeated patients exist
    folds = patient_grouped_folds(y, groups, n_splits=5, seed=0)
    assert len(folds) == 5
    val_all = np.concatenate([va for _, va in folds])
    assert np.array_equal(np.sort(val_all), np.arange(y.size))
    overall = np.bincount(y, minlength=K) / y.size
    for i, (tr, va) in enumerate(folds):
        assert set(groups[tr]).isdisjoint(groups[va])
        for j, (_, other) in enumerate(folds):
            if i != j:
                assert set(groups[va]).isdisjoint(groups[other])
        share = np.bincount(y[va], minlength=K) / va.size
        assert np.abs(share - overall).max() < 0.1
    # Seeded: the same seed gives the same folds, another seed different ones.
    again = patient_grouped_folds(y, groups, n_splits=5, seed=0)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))
    other = patient_grouped_folds(y, groups, n_splits=5, seed=1)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds, other, strict=True))


def test_grouped_folds_refuse_too_few_patients() -> None:
    with pytest.raises(ValueError, match="patients"):
        patient_grouped_folds(np.array([0, 1, 0, 1]), np.array(["a", "a", "b", "b"]), n_splits=5)


def test_summarize_folds_mean_and_sd() -> None:
    folds = []
    for seed in range(5):
        y, p = _fixed_arrays(80, seed=seed)
        folds.append(classification_metrics(y, p))
    summary = summarize_folds(folds)
    accs = [f.accuracy for f in folds]
    assert summary["accuracy"] == pytest.approx((np.mean(accs), np.std(accs, ddof=1)))
    sens = [f.per_class["graves"]["sensitivity"] for f in folds]
    assert summary["sensitivity:graves"] == pytest.approx((np.mean(sens), np.std(sens, ddof=1)))
    assert summary["macro_auc"][0] == pytest.approx(np.mean([f.macro_auc for f in folds]))
    for c in CLASSES:
        for stat in ("sensitivity", "specificity", "f1", "auc"):
            assert f"{stat}:{c}" in summary
    assert summary["ece"][0] > 0


def test_temperature_recovers_known_value_and_lowers_nll() -> None:
    rng = np.random.default_rng(0)
    n, true_t = 4000, 2.5
    base = rng.normal(size=(n, K)) * 1.5
    y = np.array([rng.choice(K, p=row) for row in softmax(base)])
    overconfident = base * true_t  # what an over-confident net emits: logits x T
    t = fit_temperature(overconfident, y)
    assert t == pytest.approx(true_t, rel=0.08)
    before = negative_log_likelihood(overconfident, y)
    after = negative_log_likelihood(overconfident, y, temperature=t)
    assert after < before - 0.05
    assert expected_calibration_error(y, softmax(overconfident, t)) < expected_calibration_error(
        y, softmax(overconfident)
    )
    # Scaling never changes the decision.
    assert np.array_equal(softmax(overconfident, t).argmax(1), overconfident.argmax(1))


def test_softmax_rows_sum_to_one_and_are_stable() -> None:
    z = np.array([[1000.0, 0.0, -1000.0, 5.0], [0.0, 0.0, 0.0, 0.0]])
    p = softmax(z)
    assert np.allclose(p.sum(1), 1.0)
    assert np.all(np.isfinite(p))
    assert p[1] == pytest.approx(np.full(4, 0.25))


def test_compare_readers_pairs_cases_and_counts_unknown_keys() -> None:
    rng = np.random.default_rng(2)
    n = 300
    keys = [f"{i:064x}" for i in range(n)]
    y = rng.integers(0, K, size=n)
    model = np.where(rng.random(n) < 0.93, y, (y + 1) % K)
    reader = np.where(rng.random(n) < 0.80, y, (y + 3) % K)
    subset = np.arange(0, n, 2)  # the reader read half the cases
    reads = [ReaderRead("dr-a", keys[i], CLASSES[reader[i]]) for i in subset]
    reads += [ReaderRead("dr-a", "f" * 64, "normal"), ReaderRead("dr-a", keys[0], "graves")]
    reads += [ReaderRead("simulated-senior", k, CLASSES[t]) for k, t in zip(keys, y, strict=True)]
    out = {r.reader_id: r for r in compare_readers(keys, y, model, reads)}
    a = out["dr-a"]
    assert a.n == subset.size
    assert a.ignored == 2  # one unknown key, one repeated read of a known key
    assert not a.simulated
    assert a.reader_metrics.accuracy == pytest.approx(np.mean(reader[subset] == y[subset]))
    assert a.model_accuracy == pytest.approx(np.mean(model[subset] == y[subset]))
    assert a.mcnemar == mcnemar_exact(y[subset], model[subset], reader[subset])
    assert a.mcnemar.p_value < 0.05  # 0.93 vs 0.80 on 150 cases
    senior = out["simulated-senior"]
    assert senior.simulated
    assert senior.n == n
    assert senior.reader_metrics.accuracy == 1.0
    assert math.isnan(senior.reader_metrics.macro_auc)
    assert json.dumps(senior.to_dict(), allow_nan=False)


def test_study_result_to_dict_is_json() -> None:
    y, p = _fixed_arrays(100)
    m = classification_metrics(y, p)
    groups = np.arange(100) // 2
    res = ArchResult(
        arch="resnet34",
        folds=[m, m],
        cv_summary=summarize_folds([m, m]),
        internal=m,
        internal_ci=bootstrap_cis(y, p, n_boot=50, groups=groups),
        external=None,
        external_ci={},
        temperature=1.3,
        train_seconds=2.0,
        epochs_run=3,
        eval_sets=[EvalSet("internal", [str(i) for i in range(100)], y, p, groups)],
    )
    study = StudyResult([res], "resnet34", [], {"epochs": 3}, {"simulated": True})
    d = json.loads(json.dumps(study.to_dict(), allow_nan=False))
    assert d["archs"][0]["eval_sets"] == [{"name": "internal", "n": 100, "n_groups": 50}]
    assert d["archs"][0]["cv_summary"]["accuracy"][1] == 0.0
    assert d["archs"][0]["internal"]["confusion"] == m.confusion
