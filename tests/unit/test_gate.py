"""The promotion gate's decision table, its records and its Markdown rendering."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from daemon import stats
from daemon.config import PromotionConfig
from daemon.gate import (
    CategoryPolicy,
    CategoryScores,
    Decision,
    GatePolicy,
    ModelScores,
    decide_promotion,
)
from daemon.report.decision import render_decision_markdown

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
        ce = kw.pop("champion_empty", 0)
        le = kw.pop("challenger_empty", 0)
        champ[name] = scores(name, a, empty=ce, **kw)
        chall[name] = scores(name, b, empty=le, **kw)
    return ModelScores(champion_label, champ), ModelScores("challenger", chall)


def big_win(name: str = "main", **kw: object) -> Cat:
    a, b = binary_pair(400, 240, gained=80)
    return (name, a, b, {"policy": CategoryPolicy(margin=0.1), **kw})


# ---------------------------------------------------------------- the decision table


def test_clear_win_single_binary_category_uses_exact_mcnemar() -> None:
    a, b = binary_pair(200, 120, gained=30, lost=2)
    d = decide_promotion(*models(("mc", a, b, {"policy": CategoryPolicy(margin=0.2)})), POLICY)
    assert d.promote, d.reasons
    assert d.checks == {
        "sanity": True,
        "superiority": True,
        "non_inferiority": True,
        "floors": True,
        "preservation": True,
    }
    assert d.composite is not None and d.composite.method == "mcnemar-exact"
    ref = stats.mcnemar_exact(a, b)
    assert d.composite.p_value == pytest.approx(ref.p_greater)
    assert d.composite.delta == pytest.approx(28 / 200)
    assert d.composite.lower_bound == pytest.approx(ref.lower_bound) and d.composite.lower_bound > 0
    assert d.summary.startswith("PROMOTE: challenger beats champion by +0.1400")
    assert [v.verdict for v in d.categories] == ["better"]
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
    assert d.composite.resamples == 2000
    assert d.composite.delta == pytest.approx(0.1)  # (0.2 + 0) / 2
    assert [(v.name, v.verdict) for v in d.categories] == [
        ("main", "better"),
        ("num", "non-inferior"),
    ]


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
    a, b = binary_pair(400, 300, lost=48)  # -0.12 against a margin of 0.1, 400 items: powered
    d = decide_promotion(
        *models(big_win(), ("other", a, b, {"policy": CategoryPolicy(margin=0.1)})), POLICY
    )
    assert not d.promote
    assert d.checks["superiority"] is True and d.checks["non_inferiority"] is False
    other = next(v for v in d.categories if v.name == "other")
    assert (other.verdict, other.non_inferior, other.underpowered) == ("regressed", False, False)
    assert other.delta == pytest.approx(-0.12) and other.p_value > 0.05
    assert other.p_adjusted is not None and other.p_adjusted >= other.p_value
    assert d.reasons[0].startswith(
        "FAILED non_inferiority: 1 category not non-inferior (other delta -0.1200"
    )
    assert d.summary.startswith("REJECT: challenger vs champion: failed non_inferiority")


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
    assert js.verdict == "floor-breach" and js.blocking
    assert "FAILED floors: json challenger mean 0.9800 < floor 1.0000" in d.reasons


def test_underpowered_category_is_informational() -> None:
    a, b = binary_pair(20, 15, lost=2)  # -0.1 on 20 items, margin 0.05: cannot be shown either way
    d = decide_promotion(*models(big_win(), ("small", a, b, {"weight": 0.25})), POLICY)
    assert d.promote, d.reasons
    small = next(v for v in d.categories if v.name == "small")
    assert (small.verdict, small.underpowered, small.non_inferior, small.p_adjusted) == (
        "underpowered",
        True,
        None,
        None,
    )
    assert small.min_detectable == pytest.approx(stats.min_detectable_difference(20))
    assert small.n_required == 619
    assert (
        "underpowered (informational): small (n=20, detectable 0.278 > margin 0.050, needs 619 items)"
        in d.reasons[2]
    )
    # the powered category's Holm family excludes it
    main = next(v for v in d.categories if v.name == "main")
    assert main.p_adjusted == pytest.approx(main.p_value)


def test_underpowered_category_with_a_proven_regression_still_blocks() -> None:
    a, b = binary_pair(20, 20, lost=15)
    d = decide_promotion(*models(big_win(), ("small", a, b, {"weight": 0.1})), POLICY)
    assert not d.promote
    assert d.checks["superiority"] is True and d.checks["non_inferiority"] is False
    small = next(v for v in d.categories if v.name == "small")
    assert (small.verdict, small.underpowered, small.non_inferior) == ("regressed", True, False)
    assert small.hi < -small.margin
    assert "proven regression" in d.reasons[0]


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


def test_more_empty_replies_than_allowed_is_rejected() -> None:
    name, a, b, kw = big_win()
    cat = (name, a, b, {**kw, "champion_empty": 1, "challenger_empty": 3})
    d = decide_promotion(*models(cat), replace(POLICY, max_empty_increase=1))
    assert not d.promote and d.checks["sanity"] is False
    assert d.reasons[0] == (
        "FAILED sanity: same 1 categories and item ids, scores finite in [0, 1]; empty replies 1 -> 3 "
        "(allowed increase 1)"
    )
    cat = (name, a, b, {**kw, "champion_empty": 1, "challenger_empty": 3})
    assert decide_promotion(*models(cat), replace(POLICY, max_empty_increase=2)).promote


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


def test_knowledge_preservation() -> None:
    keep = CategoryPolicy(preserve=True, tolerance=0.02)
    know = ("know", [0.5] * 50, [0.47] * 50, {"kind": "loss", "policy": keep})
    d = decide_promotion(*models(big_win(), know), POLICY)
    assert not d.promote and d.checks["preservation"] is False
    v = next(v for v in d.categories if v.name == "know")
    assert v.verdict == "preserve-breach" and v.preserve_p == pytest.approx(1.0)
    assert "FAILED preservation: know drop +0.0300 > tolerance 0.0200 (p=1)" in d.reasons
    md = render_decision_markdown(d)
    assert "### Knowledge preservation" in md
    assert "| know | 0.500 | 0.470 | +0.030 | 0.020 | 1.0000 | LOST |" in md

    loose = (
        "know",
        [0.5] * 50,
        [0.47] * 50,
        {"kind": "loss", "policy": CategoryPolicy(preserve=True, tolerance=0.05)},
    )
    d = decide_promotion(*models(big_win(), loose), POLICY)
    assert d.promote, d.reasons
    v = next(v for v in d.categories if v.name == "know")
    assert v.verdict != "preserve-breach" and v.preserve_p == pytest.approx(1 / 2001)


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


def test_holm_adjustment_is_applied_across_powered_categories() -> None:
    cats: list[Cat] = []
    for i, lost in enumerate([20, 24, 28]):
        a, b = binary_pair(400, 300, lost=lost)
        cats.append((f"c{i}", a, b, {"policy": CategoryPolicy(margin=0.1)}))
    d = decide_promotion(*models(big_win(), *cats), POLICY)
    powered = [v for v in d.categories if not v.underpowered]
    assert len(powered) == 4
    expected = stats.holm_adjust([v.p_value for v in powered])
    assert [v.p_adjusted for v in powered] == pytest.approx(expected)


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
    assert set(data["categories"][0]) >= {
        "name", "champion_mean", "challenger_mean", "delta", "lo", "hi", "p_value", "p_adjusted",
        "verdict", "underpowered",
    }  # fmt: skip


def test_markdown_has_the_table_and_the_why() -> None:
    a, b = binary_pair(20, 15, lost=2)
    d = decide_promotion(*models(big_win(), ("small", a, b, {"weight": 0.25})), POLICY)
    md = render_decision_markdown(d)
    assert md.startswith("## Promotion decision: PROMOTE\n\nPROMOTE: challenger beats champion")
    assert (
        "| category | kind | n | champion (CI) | challenger (CI) | delta [lo, hi] | margin | p (NI) | p (Holm) | verdict |"
        in md
    )
    main = d.categories[0]
    assert (
        f"| main | choice | 400 | 0.600 [{main.champion_ci[0]:.3f}, {main.champion_ci[1]:.3f}] "
        f"| 0.800 [{main.challenger_ci[0]:.3f}, {main.challenger_ci[1]:.3f}] "
        f"| +0.200 [{main.lo:+.3f}, {main.hi:+.3f}] | 0.100 |"
    ) in md
    assert "| small | choice | 20 |" in md and md.rstrip().splitlines()[-1].startswith("- passed")
    assert "### Why\n\nchallenger improves the weighted composite by +0.1400" in md
    assert "### Knowledge preservation" not in md


def test_default_policy_and_from_config() -> None:
    assert GatePolicy().resamples == 10_000
    cfg = PromotionConfig(
        min_gain=0.01,
        confidence=0.9,
        bootstrap_resamples=5000,
        seed=3,
        default_margin=0.02,
        max_empty_increase=4,
    )
    assert GatePolicy.from_config(cfg) == GatePolicy(
        min_gain=0.01,
        confidence=0.9,
        resamples=5000,
        seed=3,
        default_margin=0.02,
        max_empty_increase=4,
    )
    d = decide_promotion(*models(big_win()), GatePolicy())
    assert d.composite is not None and d.composite.method == "mcnemar-exact"
    two = decide_promotion(*models(big_win(), big_win("b")), GatePolicy())
    assert two.composite is not None and two.composite.resamples == 10_000 and two.promote
