"""The promotion gate's decision table, its records and its Markdown rendering."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from daemon import stats
from daemon.config import PromotionConfig
from daemon.gate import (
    CategoryPolicy,
    CategoryScores,
    Decision,
    GatePolicy,
    ModelScores,
    Verdict,
    decide_promotion,
)
from daemon.report.decision import render_decision_markdown
from daemon.report.escape import md_inline
from daemon.report.markdown import escaped_decision

POLICY = GatePolicy(resamples=2000)
#: (name, champion scores, challenger scores, keyword arguments for both CategoryScores)
Cat = tuple[
    str, list[float], list[float], dict
]  # the default (10,000) is tested in test_default_policy


def scores(name: str, values: list[float], *, kind: str = "choice", weight: float = 1.0,
           binary: bool | None = None, empty: int = 0, unparsed: int = 0,
           policy: CategoryPolicy | None = None) -> CategoryScores:  # fmt: skip
    if binary is None:
        binary = all(v in (0.0, 1.0) for v in values)
    return CategoryScores(
        name=name,
        kind=kind,
        weight=weight,
        item_scores={str(i): v for i, v in enumerate(values)},
        binary=binary,
        empty=empty,
        unparsed=unparsed,
        policy=policy or CategoryPolicy(),
    )


def binary_pair(
    n: int, correct: int, gained: int = 0, lost: int = 0
) -> tuple[list[float], list[float]]:
    """Champion gets the first ``correct`` of n right; the challenger also gets ``gained`` of the
    wrong ones right and ``lost`` of the right ones wrong."""
    champ = [1.0] * correct + [0.0] * (n - correct)
    chall = list(champ)
    for i in range(lost):
        chall[i] = 0.0
    for i in range(gained):
        chall[correct + i] = 1.0
    return champ, chall


def models(*cats: Cat, champion_label: str = "champion") -> tuple[ModelScores, ModelScores]:
    champ, chall = {}, {}
    for name, a, b, kw in cats:
        kw = dict(kw)
        ce = kw.pop("champion_empty", 0)
        le = kw.pop("challenger_empty", 0)
        ci = frozenset(kw.pop("champion_empty_items", ()))
        li = frozenset(kw.pop("challenger_empty_items", ()))
        champ[name] = replace(scores(name, a, empty=ce, **kw), empty_items=ci)
        chall[name] = replace(scores(name, b, empty=le, **kw), empty_items=li)
    return ModelScores(champion_label, champ), ModelScores("challenger", chall)


def big_win(name: str = "main", **kw: object) -> Cat:
    a, b = binary_pair(400, 240, gained=80)
    return (name, a, b, {"policy": CategoryPolicy(margin=0.1), **kw})


# ---------------------------------------------------------------- the decision table

CHECKS_OK = {
    "sanity": True,
    "empty_replies": True,
    "superiority": True,
    "non_inferiority": True,
    "floors": True,
    "preservation": True,
}


def test_clear_win_single_binary_category_uses_exact_mcnemar() -> None:
    a, b = binary_pair(200, 120, gained=30, lost=2)
    d = decide_promotion(*models(("mc", a, b, {"policy": CategoryPolicy(margin=0.2)})), POLICY)
    assert d.promote, d.reasons
    assert d.checks == CHECKS_OK
    assert d.composite is not None and d.composite.method == "mcnemar-exact"
    ref = stats.mcnemar_exact(a, b)
    assert d.composite.p_value == pytest.approx(ref.p_greater)
    assert d.composite.delta == pytest.approx(28 / 200)
    assert d.composite.lower_bound == pytest.approx(ref.lower_bound) and d.composite.lower_bound > 0
    assert d.summary.startswith("PROMOTE: challenger beats champion by +0.1400")
    assert [v.verdict for v in d.categories] == [Verdict.BETTER]
    assert d.categories[0].mcnemar_p == pytest.approx(ref.p_two_sided)


def test_clear_win_several_categories_uses_the_stratified_bootstrap() -> None:
    num = [0.5] * 100
    d = decide_promotion(
        *models(
            big_win(), ("num", num, num, {"kind": "numeric", "policy": CategoryPolicy(margin=0.2)})
        ),
        POLICY,
    )
    assert d.promote, d.reasons
    assert d.composite is not None and d.composite.method == "stratified-bootstrap"
    assert d.composite.resamples == 2000 and d.composite.counted == ["main", "num"]
    assert d.composite.delta == pytest.approx(0.1)  # (0.2 + 0) / 2
    assert [(v.name, v.verdict) for v in d.categories] == [
        ("main", Verdict.BETTER),
        ("num", Verdict.NON_INFERIOR),
    ]
    assert d.headline == []


def test_win_within_noise_is_rejected() -> None:
    a, b = binary_pair(200, 120, gained=3, lost=1)
    d = decide_promotion(*models(("mc", a, b, {"policy": CategoryPolicy(margin=0.2)})), POLICY)
    assert not d.promote
    assert d.checks["superiority"] is False
    assert all(ok for name, ok in d.checks.items() if name != "superiority")
    assert d.reasons[0].startswith("FAILED superiority: composite 0.6000 -> 0.6100 (delta +0.0100)")
    assert "within noise" in render_decision_markdown(d)
    # the same noise split over two categories: the bootstrap path refuses too
    c, e = binary_pair(200, 120, gained=2)
    d2 = decide_promotion(*models(("a", a, b, {}), ("b", c, e, {})), POLICY)
    assert not d2.promote and d2.checks["superiority"] is False


def test_win_overall_with_one_category_regressing_is_rejected() -> None:
    a, b = binary_pair(400, 300, lost=48)  # -0.12 against a margin of 0.1, 400 items: guardable
    d = decide_promotion(
        *models(big_win(), ("other", a, b, {"policy": CategoryPolicy(margin=0.1)})), POLICY
    )
    assert not d.promote
    assert d.checks["superiority"] is True and d.checks["non_inferiority"] is False
    other = next(v for v in d.categories if v.name == "other")
    assert (other.verdict, other.non_inferior, other.widened) == (Verdict.REGRESSED, False, False)
    assert other.guard == 0.1 and other.delta == pytest.approx(-0.12) and other.p_value > 0.05
    assert other.sd == pytest.approx(np.std(np.subtract(b, a), ddof=1))
    assert d.reasons[0].startswith(
        "FAILED non_inferiority: 1 category not shown within its guard at 95% (other delta -0.1200"
    )
    assert d.summary.startswith("REJECT: challenger vs champion: failed non_inferiority")
    assert d.headline[0] == (
        "other dropped 0.120 (0.750 -> 0.630), more than its margin 0.100; it blocks the promotion."
    )


def test_seeded_ten_point_regression_in_a_100_item_category_is_rejected() -> None:
    """Regression (issue 12): a real 10-point drop in a 100-item category passed while others
    rose 5 points, because a category under 619 items was only informational."""
    rng = np.random.default_rng(0)
    cats: list[Cat] = []
    for name, change in [("a", 0.05), ("b", 0.05), ("c", 0.05), ("d", 0.05), ("drop", -0.10)]:
        skill = rng.normal(0.0, 1.0, 100)  # shared item difficulty: paired answers
        champ = (skill + rng.normal(0, 1, 100) > -0.52).astype(float)  # about 70% right
        shift = {0.05: 0.17, -0.10: -0.34}[change]
        chall = (skill + rng.normal(0, 1, 100) > -0.52 - shift).astype(float)
        cats.append((name, list(champ), list(chall), {}))
    d = decide_promotion(*models(*cats), GatePolicy())
    assert not d.promote
    drop = next(v for v in d.categories if v.name == "drop")
    assert drop.delta < -0.05 and drop.blocking and drop.widened
    assert any(h.startswith("drop dropped") and "blocks the promotion" in h for h in d.headline)


def test_two_one_item_categories_never_promote() -> None:
    """Regression (issue 12): two categories of one item each, challenger right on both,
    promoted with "lower bound +1.0000, p=9.999e-05"."""
    d = decide_promotion(*models(("a", [0.0], [1.0], {}), ("b", [0.0], [1.0], {})), GatePolicy())
    assert not d.promote and d.checks["superiority"] is False
    assert d.composite is not None and d.composite.counted == []
    assert all(not v.counted for v in d.categories)
    assert "no category has at least 10 items, so none can carry a promotion" in d.reasons[0]
    assert d.headline[-1] == "Too small to count toward the composite (fewer than 10 items): a (1), b (1)."
    assert "no category is large enough to carry a promotion" in render_decision_markdown(d)


def test_tiny_categories_do_not_carry_a_promotion_beside_a_large_one() -> None:
    """Regression (issue 12): five 3-item categories decided nights (7.5-8% false promotions)."""
    a, _ = binary_pair(200, 120)
    tiny = [(f"t{i}", [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], {}) for i in range(5)]
    d = decide_promotion(*models(("big", a, a, {}), *tiny), POLICY)
    assert not d.promote and d.checks["superiority"] is False
    assert d.composite is not None and d.composite.counted == ["big"] and d.composite.delta == 0.0


def test_floor_breach_is_rejected() -> None:
    full = [1.0] * 50
    d = decide_promotion(
        *models(
            big_win(),
            (
                "json",
                full,
                [1.0] * 49 + [0.0],
                {"kind": "json_schema", "policy": CategoryPolicy(floor=1.0)},
            ),
        ),
        POLICY,
    )
    assert not d.promote
    assert d.checks["floors"] is False and d.checks["superiority"] is True
    js = next(v for v in d.categories if v.name == "json")
    assert js.verdict == Verdict.FLOOR_BREACH and js.blocking
    assert "FAILED floors: json challenger mean 0.9800 < floor 1.0000" in d.reasons


def noisy_tie(n: int = 20) -> tuple[list[float], list[float]]:
    """No change on n items, but each model wins 2 items the other loses."""
    return binary_pair(n, 15, gained=2, lost=2)


def test_small_unchanged_category_is_guarded_at_what_it_can_detect_and_named() -> None:
    a, b = noisy_tie()
    d = decide_promotion(*models(big_win(), ("small", a, b, {"weight": 0.25})), POLICY)
    assert d.promote, d.reasons
    small = next(v for v in d.categories if v.name == "small")
    assert (small.verdict, small.widened, small.non_inferior) == (Verdict.NON_INFERIOR, True, True)
    assert small.lo < -small.margin  # the margin itself was not shown
    sd = stats.shrunk_sd(small.sd, 20)
    assert small.detectable == pytest.approx(stats.min_detectable_difference(20, power=0.65, sd=sd))
    assert small.guard == small.detectable > small.margin == 0.05
    assert small.n_required == stats.required_items(0.05, power=0.65, sd=sd)
    assert "guarded only the drop they can detect: small" in d.reasons[-1] or any(
        "guarded only the drop they can detect: small" in r for r in d.reasons
    )
    assert d.headline == [
        f"Could not guard their limit at 95%: small (20 items, paired SD {small.sd:.3f}) can only "
        f"guard a drop of {small.guard:.3f}, not 0.050; about {small.n_required} items would."
    ]


def test_a_small_category_that_shows_its_margin_is_not_widened() -> None:
    a, _ = binary_pair(20, 15)  # identical answers: the margin is shown despite 20 items
    d = decide_promotion(*models(big_win(), ("small", a, a, {"weight": 0.25})), POLICY)
    small = next(v for v in d.categories if v.name == "small")
    assert d.promote and not small.widened and small.guard == 0.05 and d.headline == []


def test_small_category_observed_dropping_blocks_under_its_widened_guard() -> None:
    a, b = binary_pair(20, 15, lost=2)  # -0.1 on 20 items: a 0.15 drop cannot be ruled out
    d = decide_promotion(*models(big_win(), ("small", a, b, {"weight": 0.25})), POLICY)
    assert not d.promote and d.checks["non_inferiority"] is False
    small = next(v for v in d.categories if v.name == "small")
    assert small.widened and small.verdict == Verdict.REGRESSED and small.lo < -small.guard
    assert "widened: margin 0.0500 cannot be guarded with 20 items" in d.reasons[0]


def test_block_policy_rejects_a_category_that_cannot_guard_its_margin() -> None:
    a, b = noisy_tie()
    pair = models(big_win(), ("small", a, b, {"weight": 0.25}))
    d = decide_promotion(*pair, replace(POLICY, unguarded="block"))
    assert not d.promote and d.checks["non_inferiority"] is False
    small = next(v for v in d.categories if v.name == "small")
    assert small.verdict == Verdict.UNGUARDED and small.guard == 0.05
    assert "small cannot guard its margin 0.0500 with 20 items" in d.reasons[0]
    with pytest.raises(ValueError, match="unguarded policy"):
        decide_promotion(*pair, replace(POLICY, unguarded="ignore"))


def test_proven_regression_of_a_small_category_blocks() -> None:
    a, b = binary_pair(20, 20, lost=15)
    d = decide_promotion(*models(big_win(), ("small", a, b, {"weight": 0.1})), POLICY)
    assert not d.promote
    assert d.checks["superiority"] is True and d.checks["non_inferiority"] is False
    small = next(v for v in d.categories if v.name == "small")
    assert (small.verdict, small.widened, small.non_inferior) == (Verdict.REGRESSED, True, False)
    assert small.hi < -small.guard


def test_repeats_are_clusters_and_the_repeats_needed_are_reported() -> None:
    rng = np.random.default_rng(1)
    champ = list(rng.integers(0, 4, 60) / 3)  # means over 3 samples
    chall = list(np.clip(np.array(champ) + rng.choice([-1 / 3, 0, 1 / 3], 60), 0, 1))
    pair = models(big_win(), ("rep", champ, chall, {"kind": "judge", "binary": False}))
    champion, challenger = (
        replace(m, categories={**m.categories, "rep": replace(m.categories["rep"], repeats=3, within_var=0.05)})
        for m in pair
    )
    d = decide_promotion(champion, challenger, POLICY)
    rep = next(v for v in d.categories if v.name == "rep")
    assert rep.repeats == 3 and rep.within_sd == pytest.approx(math.sqrt(0.1))
    assert rep.sd == pytest.approx(np.std(np.subtract(chall, champ), ddof=1))
    expected = stats.required_repeats(
        stats.shrunk_sd(rep.sd, 60), rep.within_sd, 3, 60, 0.05, power=0.65
    )
    assert rep.repeats_required == expected


def test_first_night_against_the_base_model_follows_the_same_rules() -> None:
    a, b = binary_pair(200, 120, gained=30)
    d = decide_promotion(*models(("mc", a, b, {}), champion_label="base"), POLICY)
    assert d.promote and d.champion_label == "base"
    assert d.summary.startswith("PROMOTE: challenger beats base")
    d = decide_promotion(*models(("mc", a, a, {}), champion_label="base"), POLICY)
    assert not d.promote


@pytest.mark.parametrize("min_gain", [0.0, -0.05, -1.0])
@pytest.mark.parametrize("several", [False, True])
def test_ties_never_promote(min_gain: float, several: bool) -> None:
    a, _ = binary_pair(300, 200)
    cats: list[Cat] = [("a", a, a, {})]
    if several:
        cats.append(("b", [0.7] * 30, [0.7] * 30, {}))
    d = decide_promotion(*models(*cats), replace(POLICY, min_gain=min_gain))
    assert not d.promote
    assert d.checks["superiority"] is False
    assert d.reasons[0].endswith("; no observed improvement (ties never promote)")
    assert "ties never promote" in render_decision_markdown(d)


@pytest.mark.parametrize("bad", [math.nan, math.inf, 1.5, -0.1])
def test_nan_or_out_of_range_scores_are_a_hard_reject(bad: float) -> None:
    name, a, b, kw = big_win()
    b = list(b)
    b[7] = bad
    d = decide_promotion(*models((name, a, b, {**kw, "binary": True})), POLICY)
    assert not d.promote
    assert d.composite is None and d.categories == [] and d.checks == {"sanity": False}
    assert d.reasons == [
        "FAILED sanity: category main: challenger has 1 score(s) that are NaN, infinite or outside "
        "[0, 1] (items 7); the evaluation is broken, check its log"
    ]
    json.dumps(d.to_dict(), allow_nan=False)


def test_equal_one_percent_empty_replies_do_not_block() -> None:
    """Regression (issue 12): ``max_empty_increase: 0`` rejected 40-46% of nights in which both
    models left 1% of replies empty."""
    name, a, b, kw = big_win()
    cat = (name, a, b, {**kw, "champion_empty": 4, "challenger_empty": 5,
                        "champion_empty_items": {"1", "2", "3", "4"},
                        "challenger_empty_items": {"5", "6", "7", "8", "9"}})  # fmt: skip
    d = decide_promotion(*models(cat), POLICY)
    assert d.promote, d.reasons
    assert d.empty is not None and (d.empty.champion, d.empty.challenger) == (4, 5)
    assert d.empty.p_value == pytest.approx(stats.binom_sf(5, 9, 0.5))
    assert "passed empty_replies: items with an empty reply 4 -> 5" in " ".join(d.reasons)


def test_a_real_increase_of_empty_replies_blocks() -> None:
    name, a, b, kw = big_win()
    items = {str(i) for i in range(12)}
    cat = (name, a, b, {**kw, "challenger_empty": 12, "challenger_empty_items": items})
    d = decide_promotion(*models(cat), POLICY)
    assert not d.promote and d.checks["empty_replies"] is False
    assert d.empty is not None and d.empty.p_value == pytest.approx(0.5**12)
    assert d.reasons[0].startswith("FAILED empty_replies: items with an empty reply 0 -> 12")
    assert "significantly more items with empty replies" in render_decision_markdown(d)
    # the same increase within max_empty_increase passes; empties of the same items cancel
    assert decide_promotion(*models(cat), replace(POLICY, max_empty_increase=12)).promote
    same = (name, a, b, {**kw, "champion_empty": 12, "challenger_empty": 12,
                         "champion_empty_items": items, "challenger_empty_items": items})  # fmt: skip
    assert decide_promotion(*models(same), POLICY).promote


def test_mismatched_items_are_a_hard_reject_with_a_clear_reason() -> None:
    champ, chall = models(big_win())
    items = dict(chall.categories["main"].item_scores)
    del items["7"]
    items["x"] = 1.0
    chall = replace(
        chall, categories={"main": replace(chall.categories["main"], item_scores=items)}
    )
    d = decide_promotion(champ, chall, POLICY)
    assert not d.promote and d.composite is None
    assert d.reasons == [
        "FAILED sanity: category main: item sets differ (champion 400 items, challenger 400; missing "
        "in champion: x; missing in challenger: 7); re-score both on the same suite"
    ]
    assert d.summary.startswith("REJECT: category main: item sets differ")
    assert "cannot be paired" in render_decision_markdown(d)


def test_mismatched_categories_and_policies_are_a_hard_reject() -> None:
    champ, chall = models(big_win(), ("b", [1.0], [1.0], {}))
    only = replace(chall, categories={"main": chall.categories["main"]})
    d = decide_promotion(champ, only, POLICY)
    assert d.reasons == [
        "FAILED sanity: category sets differ (only champion: b) ; both models must be scored on the same suite"
    ]
    changed = replace(chall.categories["b"], policy=CategoryPolicy(margin=0.3))
    d = decide_promotion(
        champ, replace(chall, categories={**chall.categories, "b": changed}), POLICY
    )
    assert d.reasons == [
        "FAILED sanity: category b: kind/weight/sampling/policy differ between champion and challenger "
        "(the suite changed?); re-score both on the same suite"
    ]
    empty = ModelScores("challenger", {})
    assert (
        "challenger has no categories scored"
        in decide_promotion(ModelScores("c", {}), empty, POLICY).reasons[0]
    )


def test_knowledge_preservation_is_a_test_of_the_drop() -> None:
    keep = CategoryPolicy(preserve=True, tolerance=0.02)
    know = ("know", [0.5] * 50, [0.47] * 50, {"kind": "loss", "policy": keep})
    d = decide_promotion(*models(big_win(), know), POLICY)
    assert not d.promote and d.checks["preservation"] is False
    v = next(v for v in d.categories if v.name == "know")
    assert v.verdict == Verdict.PRESERVE_BREACH and v.preserve_p == pytest.approx(1.0)
    assert v.preserve_guard == pytest.approx(max(0.02, v.detectable))
    assert f"FAILED preservation: know drop +0.0300, NOT shown below {v.preserve_guard:.4f}" in d.reasons[0]
    md = render_decision_markdown(d)
    assert "### Knowledge preservation" in md
    assert f"| know | 0.500 | 0.470 | +0.030 | 0.020 | {v.preserve_guard:.3f} | 1.0000 | LOST |" in md

    loose = ("know", [0.5] * 50, [0.47] * 50,
             {"kind": "loss", "policy": CategoryPolicy(preserve=True, tolerance=0.05)})  # fmt: skip
    d = decide_promotion(*models(big_win(), loose), POLICY)
    assert d.promote, d.reasons
    v = next(v for v in d.categories if v.name == "know")
    assert v.verdict != Verdict.PRESERVE_BREACH and v.preserve_p == pytest.approx(1 / 2001)
    assert "passed preservation: know drop +0.0300, shown below tolerance 0.0500" in " ".join(d.reasons)


def test_noisy_preserve_category_with_no_change_passes() -> None:
    """Preservation is a test with the category's own spread: 300 noisy yes/no items cannot
    guard 0.02, so the guard widens (and says so) and a near-zero observed change passes."""
    a, b = binary_pair(300, 200, gained=20, lost=21)  # observed -0.0033, tolerance 0.02
    keep = ("know", a, b, {"policy": CategoryPolicy(preserve=True, tolerance=0.02)})
    d = decide_promotion(*models(big_win(), keep), POLICY)
    v = next(v for v in d.categories if v.name == "know")
    assert d.checks["preservation"] is True, d.reasons
    assert v.preserve_guard > 0.02  # 300 such items cannot guard 0.02: the guard widened


def test_min_gain_must_be_cleared() -> None:
    d = decide_promotion(*models(big_win()), replace(POLICY, min_gain=0.25))
    assert not d.promote and d.checks["superiority"] is False
    assert "<= min_gain +0.2500" in d.reasons[0]


def test_weights_shape_the_composite() -> None:
    name, a, b, kw = big_win()
    flat = [0.5] * 40
    d = decide_promotion(
        *models(
            (name, a, b, {**kw, "weight": 3.0}),
            ("flat", flat, flat, {"weight": 1.0, "policy": CategoryPolicy(margin=0.5)}),
        ),
        POLICY,
    )
    assert d.composite is not None
    assert d.composite.champion == pytest.approx((3 * 0.6 + 0.5) / 4)
    assert d.composite.delta == pytest.approx(3 * 0.2 / 4)


def test_every_category_is_tested_at_alpha_without_adjustment() -> None:
    # Intersection-union: three categories each just shown non-inferior at 5% promote together
    # (Holm would have demanded 5%/3 of the best one).
    cats: list[Cat] = [big_win()]
    for i in range(3):
        a, b = binary_pair(400, 300, lost=12)
        cats.append((f"c{i}", a, b, {"policy": CategoryPolicy(margin=0.046)}))
    d = decide_promotion(*models(*cats), POLICY)
    ps = [v.p_value for v in d.categories if v.name.startswith("c")]
    assert all(0.05 / 3 < p < 0.05 for p in ps), ps
    assert d.checks["non_inferiority"] is True


# ---------------------------------------------------------------- records and rendering


def test_decision_is_deterministic_and_round_trips_through_json() -> None:
    a, b = binary_pair(20, 15, lost=2)
    keep = (
        "know",
        [0.5] * 50,
        [0.49] * 50,
        {"kind": "loss", "policy": CategoryPolicy(preserve=True, tolerance=0.02)},
    )
    pair = models(big_win(), ("small", a, b, {}), keep)
    d = decide_promotion(*pair, POLICY)
    assert decide_promotion(*pair, POLICY) == d
    data = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert Decision.from_dict(data) == d
    assert data["composite"]["method"] == "stratified-bootstrap"
    assert data["policy"]["resamples"] == 2000
    assert [c["verdict"] for c in data["categories"]][1] == "better"  # know, main, small
    assert set(data["categories"][0]) >= {
        "name", "champion_mean", "challenger_mean", "delta", "lo", "hi", "p_value", "guard",
        "verdict", "widened", "sd", "detectable", "n_required",
    }  # fmt: skip


def test_a_decision_stored_by_the_old_gate_still_renders() -> None:
    old = {
        "promote": True, "reasons": ["passed sanity: ..."], "summary": "PROMOTE: x",
        "composite": {"champion": 0.5, "challenger": 0.6, "delta": 0.1, "lower_bound": 0.05,
                      "method": "stratified-bootstrap", "p_value": 0.001, "resamples": 10000},
        "categories": [{"name": "a", "kind": "choice", "n_items": 20, "weight": 1.0,
                        "champion_mean": 0.5, "challenger_mean": 0.6, "delta": 0.1, "lo": 0.0,
                        "hi": 0.2, "p_value": 0.2, "p_adjusted": None, "verdict": "underpowered",
                        "underpowered": True, "margin": 0.05, "non_inferior": None,
                        "min_detectable": 0.27, "champion_ci": [0.4, 0.6], "challenger_ci": [0.5, 0.7]}],
    }  # fmt: skip
    d = Decision.from_dict(old)
    assert d.categories[0].verdict == Verdict.UNDERPOWERED
    assert "| a | choice | 20 |" in render_decision_markdown(d)


def test_markdown_has_the_table_the_rule_outs_and_the_why() -> None:
    a, b = noisy_tie()
    d = decide_promotion(*models(big_win(), ("small", a, b, {"weight": 0.25})), POLICY)
    md = render_decision_markdown(d)
    assert md.startswith("## Promotion decision: PROMOTE\n\nPROMOTE: challenger beats champion")
    assert (
        "| category | kind | n | champion (CI) | challenger (CI) | delta [lo, hi] | margin | guard | p (guard) | verdict |"
        in md
    )
    main, small = d.categories
    assert (
        f"| main | choice | 400 | 0.600 [{main.champion_ci[0]:.3f}, {main.champion_ci[1]:.3f}] "
        f"| 0.800 [{main.challenger_ci[0]:.3f}, {main.challenger_ci[1]:.3f}] "
        f"| +0.200 [{main.lo:+.3f}, {main.hi:+.3f}] | 0.100 | 0.100 |"
    ) in md
    assert "| small | choice | 20 |" in md and f"| 0.050 | {small.guard:.3f}* |" in md
    assert "\\* small cannot guard the margin with the items it has" in md
    assert "### What the gate could rule out" in md
    assert f"- Ruled out at 95%: a drop of 0.100 or more in main, {small.guard:.3f} or more in small." in md
    assert "- Not ruled out: small may have dropped by up to" in md
    assert md.rstrip().splitlines()[-1].startswith("- passed")
    assert "### Why\n\nchallenger improves the weighted composite by +0.1600" in md
    assert "### Knowledge preservation" not in md
    assert "- **Could not guard their limit at 95%: small (20 items" in md


def test_the_report_escapes_category_names_in_the_decision_and_its_headline() -> None:
    name = "x|<b>y</b>"
    a, b = binary_pair(400, 300, lost=48)
    d = decide_promotion(*models(big_win(), (name, a, b, {})), POLICY)
    assert d.headline and name in d.headline[0]  # the gate words it as it is
    md = render_decision_markdown(escaped_decision(d))
    assert name not in md
    inert = md_inline(name, None)
    assert inert != name and md.count(inert) >= 3  # table row, headline, reasons


def test_default_policy_and_from_config() -> None:
    assert GatePolicy().resamples == 10_000 and GatePolicy().power == 0.65
    cfg = PromotionConfig(
        min_gain=0.01,
        confidence=0.9,
        bootstrap_resamples=5000,
        seed=3,
        default_margin=0.02,
        max_empty_increase=4,
        guard_power=0.8,
        min_items=30,
        unguarded="block",
    )
    assert GatePolicy.from_config(cfg) == GatePolicy(
        min_gain=0.01,
        confidence=0.9,
        resamples=5000,
        seed=3,
        default_margin=0.02,
        max_empty_increase=4,
        power=0.8,
        min_items=30,
        unguarded="block",
    )
    d = decide_promotion(*models(big_win()), GatePolicy())
    assert d.composite is not None and d.composite.method == "mcnemar-exact"
    two = decide_promotion(*models(big_win(), big_win("b")), GatePolicy())
    assert two.composite is not None and two.composite.resamples == 10_000 and two.promote
