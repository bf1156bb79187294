import math

import numpy as np
import pytest

from heal.config import PureConfig
from heal.pure import answer_token_span, prefilter, pure_scores, verdict


def test_answer_token_span():
    pieces = ["So", " \\", "boxed", "{", "-1", "345", "}", "."]
    assert answer_token_span(pieces) == (4, 6)
    assert answer_token_span(["no", " box"]) is None
    assert answer_token_span(["\\boxed{", "12", "}"]) == (1, 2)


def test_pure_scores_formulas():
    nll = [0.2, 0.4, 0.1, 0.3, 2.0, 0.05, 0.05]
    spans = [(0, 2), (2, 4), (4, 7)]
    s = pure_scores(nll, spans, (5, 7), s_ref=0.25, eps=0.01)
    l = [0.3, 0.2, 0.7]
    assert s["l_steps"] == pytest.approx(l)
    assert s["S"] == pytest.approx(0.4) and s["l_max"] == pytest.approx(0.7) and s["U"] == pytest.approx(0.05)
    assert s["rho_ans"] == pytest.approx(0.05 / 0.41)
    assert s["rho_step"] == pytest.approx(0.7 / 0.26)
    none = pure_scores(nll, spans, None, 0.25)
    assert none["U"] is None and none["rho_ans"] is None and none["rho_step"] == pytest.approx(0.7 / 0.26)


def test_fabricated_step_is_caught_by_rho_step_not_rho_ans():
    """The probe's trap: a false equation then its own boxed result makes U small."""
    nll = [0.1] * 10 + [3.0] * 5 + [0.02, 0.02]  # a surprising (fabricated) step, then an easy answer
    spans = [(0, 10), (10, 15), (15, 17)]
    s = pure_scores(nll, spans, (15, 17), s_ref=0.1, eps=0.01)
    assert s["rho_ans"] < 0.2  # looks fine by the answer-uncertainty ratio
    assert s["rho_step"] > 10  # the spike stands out against the teacher's own reasoning


def test_verdict_and_prefilter():
    cfg = PureConfig(score="rho_step", threshold=2.0)
    assert verdict({"prefilter": None, "rho_step": 1.5, "derivation_ok": False}, cfg) == (True, "accepted")
    assert not verdict({"prefilter": None, "rho_step": 2.5}, cfg)[0]
    assert verdict({"prefilter": "mentions the hint", "rho_step": 0.1}, cfg) == (False, "mentions the hint")
    assert not verdict({"prefilter": None, "rho_step": None}, cfg)[0]
    strict = PureConfig(score="rho_step", threshold=2.0, verify_steps="arithmetic")
    assert not verdict({"prefilter": None, "rho_step": 1.0, "derivation_ok": False}, strict)[0]
    assert prefilter("Since the hint says 7, ...", "7", cfg)
    assert prefilter("The answer is 7. Check: 3 + 4 = 7", "7", cfg) == "states the answer before deriving it"
    assert prefilter("3 + 4 = 7, \\boxed{7}", "7", cfg) is None


def test_teacher_scorer_engine_reuses_the_teacher_config(tiny_model_dir):
    from heal.config import RunConfig
    from heal.pure import make_scorer

    cfg = RunConfig.model_validate({"teacher": {"model": tiny_model_dir, "engine": "hf"},
                                    "pure": {"scorer_engine": "teacher"}})
    eng = make_scorer(cfg)
    assert eng.name == "hf"
    eng.close()
    bad = RunConfig.model_validate({"teacher": {"model": tiny_model_dir, "engine": "hf"},
                                    "pure": {"scorer_engine": "teacher", "scorer": "other"}})
    with pytest.raises(ValueError, match="leave pure.scorer unset"):
        make_scorer(bad)


def test_every_score_is_selectable_and_derived_scores_by_hand():
    from heal.pure import SCORES, score_value

    rec = {"prefilter": None, "S": 0.2, "l_max": 0.5, "U": 0.01, "S_ref": 0.09, "rho_ans": 0.05, "rho_step": 5.0}
    assert score_value(rec, "rho_sum") == pytest.approx(5.05)
    assert score_value(rec, "S_rel", eps=0.01) == pytest.approx(0.2 / 0.1)
    assert score_value({"S": 0.2, "S_ref": None}, "S_rel") is None
    for name in SCORES:  # each one a PureConfig accepts, thresholded on the value score_value gives
        v = score_value(rec, name, 0.01)
        assert verdict(rec, PureConfig(score=name, threshold=v)) == (True, "accepted")
        assert not verdict(rec, PureConfig(score=name, threshold=v * 0.99))[0]
    with pytest.raises(ValueError):
        score_value(rec, "U_max")
    assert PureConfig().score == "S"  # the default chosen in experiments/pure_calibration.py
