"""`nightshift suite check` and the `suite.guards` preflight check: what each category can guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from daemon import stats
from daemon.cli import cli
from daemon.config import load_config
from daemon.gate import CategoryPolicy, CategoryScores, GatePolicy, ModelScores, decide_promotion
from daemon.guards import check_suite_guards, plan_guards
from daemon.preflight.guards import check_guards
from daemon.preflight.report import Level
from daemon.registry import Registry, Trigger
from daemon.suite import load_suite


def _suite(tmp_path: Path, n_main: int = 300, n_small: int = 5, repeats: int = 1) -> Path:
    items = "\n".join(f'      - {{id: m{i}, prompt: "q{i}", gold: A}}' for i in range(n_main))
    small = "\n".join(f'      - {{id: s{i}, prompt: "p{i}", gold: A}}' for i in range(n_small))
    path = tmp_path / "suite.yaml"
    path.write_text(
        "categories:\n"
        f"  - name: main\n    kind: choice\n    repeats: {repeats}\n    temperature: 0.7\n    items:\n{items}\n"
        f"  - name: know\n    kind: choice\n    preserve: true\n    tolerance: 0.02\n    items:\n{small}\n"
    )
    return path


def test_prior_plan_names_what_each_category_can_guard(tmp_path: Path) -> None:
    suite = load_suite(_suite(tmp_path))
    main, know = plan_guards(suite, GatePolicy())
    # prior SD 0.5: 300 items detect (1.645 + 0.385) * 0.5 / sqrt(300) = 0.0586 > 0.05
    assert main.sd == stats.PRIOR_SD and main.sd_source == "prior"
    assert main.detectable == pytest.approx(stats.min_detectable_difference(300, power=0.65))
    assert not main.can_guard and main.guard == main.detectable and main.counted
    assert main.items_needed == stats.required_items(0.05, power=0.65)
    assert (know.limit_name, know.limit, know.counted) == ("tolerance", 0.02, False)


def test_last_nights_spread_replaces_the_prior(tmp_path: Path) -> None:
    suite = load_suite(_suite(tmp_path, repeats=3))
    # a night in which main's items differed by SD ~0.2 with a within-item spread
    champ = {f"m{i}": (i % 4) / 3 for i in range(300)}
    chall = {k: min(1.0, v + (1 / 3 if int(k[1:]) % 5 == 0 else 0.0)) for k, v in champ.items()}
    know = {f"s{i}": 1.0 for i in range(5)}

    def model(label: str, main: dict[str, float]) -> ModelScores:
        return ModelScores(label, {
            "main": CategoryScores("main", "choice", 1.0, main, False, 0, 0, repeats=3, within_var=0.04),
            "know": CategoryScores("know", "choice", 1.0, know, True, 0, 0,
                                   policy=CategoryPolicy(preserve=True, tolerance=0.02)),
        })  # fmt: skip

    last = decide_promotion(model("champion", champ), model("challenger", chall), GatePolicy(resamples=500))
    main, _ = plan_guards(suite, GatePolicy(), last)
    observed = next(v for v in last.categories if v.name == "main")
    assert main.sd_source == "last night" and main.sd == pytest.approx(stats.shrunk_sd(observed.sd, 300))
    assert main.can_guard and main.guard == 0.05
    assert main.repeats_needed == stats.required_repeats(
        main.sd, observed.within_sd, 3, 300, 0.05, power=0.65
    )


def test_suite_check_command_and_preflight_on_the_demo_suite(demo_workspace: Path) -> None:
    config = demo_workspace / "nightshift.yaml"
    result = CliRunner().invoke(cli, ["suite", "check", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert "prior SD 0.5" in result.output
    assert "sentiment_known" in result.output and "cannot guard its margin 0.050: catches a drop of 0.160" in result.output
    data = json.loads(CliRunner().invoke(cli, ["suite", "check", "-c", str(config), "--json"]).output)
    assert {c["name"] for c in data["categories"]} >= {"sentiment", "refusal", "reference_loss"}
    (res,) = check_guards(load_config(config))
    assert res.name == "suite.guards" and res.level is Level.WARN
    assert "run `nightshift suite check`" in res.message and res.details

    # after a decided night the check uses that night's spread
    cfg = load_config(config)
    guards = check_suite_guards(cfg)
    reg = Registry.open(cfg.paths.state_dir)
    try:
        run = reg.create_run(trigger=Trigger.MANUAL, config_snapshot={}, config_path=None, profile=None)
        cats = {
            p.name: CategoryScores(p.name, p.kind, 1.0, {str(i): 1.0 for i in range(p.items)}, True, 0, 0)
            for p in guards.plans
        }
        d = decide_promotion(ModelScores("c", cats), ModelScores("x", cats), GatePolicy(resamples=200))
        reg.update_run(run.id, decision=json.dumps(d.to_dict()))
    finally:
        reg.close()
    after = check_suite_guards(cfg)
    assert after.from_run == run.id
    assert all(p.sd_source == "last night" for p in after.plans)
    assert f"paired SDs from run {run.id}" in CliRunner().invoke(cli, ["suite", "check", "-c", str(config)]).output


def test_a_broken_suite_is_a_suite_error(demo_workspace: Path) -> None:
    config = demo_workspace / "nightshift.yaml"
    cfg = load_config(config)
    cfg.paths.eval_suite.write_text("categories: 3\n")
    (res,) = check_guards(cfg)
    assert res.level is Level.WARN and res.message.startswith("not checked: ")
    assert "suite.yaml" in res.message
    result = CliRunner().invoke(cli, ["suite", "check", "-c", str(config)])
    assert result.exit_code == 1  # the CLI's one error path: `Error: ...` and exit 1
