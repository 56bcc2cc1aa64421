# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Lambda step planner: every predefined CodeDeploy configuration, custom ones, bad input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.rollwright.deploy.plugins.module_utils.traffic.traffic_shift import (
    MAX_SHIFT_SECONDS,
    PREDEFINED_CONFIGS,
    ShiftConfig,
    ShiftConfigError,
    Step,
    format_seconds,
    parse_interval,
    parse_lambda_config,
    plan_steps,
)


def plan(config):
    return [(s.at_seconds, s.weight) for s in plan_steps(parse_lambda_config(config))]


@pytest.mark.parametrize("minutes", [5, 10, 15, 30])
def test_predefined_canary(minutes):
    assert plan(f"CodeDeployDefault.LambdaCanary10Percent{minutes}Minutes") == [
        (0.0, 0.1),
        (minutes * 60.0, 1.0),
    ]


@pytest.mark.parametrize("minutes,unit", [(1, "Minute"), (2, "Minutes"), (3, "Minutes"), (10, "Minutes")])
def test_predefined_linear_first_increment_is_immediate(minutes, unit):
    steps = plan(f"CodeDeployDefault.LambdaLinear10PercentEvery{minutes}{unit}")
    interval = minutes * 60.0
    # CodeDeploy: the percentage is shifted at the *start* of each increment, equal intervals.
    assert steps[:-1] == [(k * interval, round((k + 1) / 10, 6)) for k in range(9)]
    assert steps[-1] == (9 * interval, 1.0)
    assert len(steps) == 10


def test_linear_every_minute_exact_plan():
    assert plan("CodeDeployDefault.LambdaLinear10PercentEvery1Minute") == [
        (0.0, 0.1), (60.0, 0.2), (120.0, 0.3), (180.0, 0.4), (240.0, 0.5),
        (300.0, 0.6), (360.0, 0.7), (420.0, 0.8), (480.0, 0.9), (540.0, 1.0),
    ]


def test_all_at_once():
    assert plan("CodeDeployDefault.LambdaAllAtOnce") == [(0.0, 1.0)]
    assert plan_steps(parse_lambda_config("CodeDeployDefault.LambdaAllAtOnce"))[0].promote


def test_there_are_exactly_nine_predefined_configs():
    assert len(PREDEFINED_CONFIGS) == 9
    for name, config in PREDEFINED_CONFIGS.items():
        assert config.name == name
        assert plan_steps(config)[-1].weight == 1.0


@pytest.mark.parametrize(
    "alias,expected",
    [
        ("LambdaCanary10Percent5Minutes", "CodeDeployDefault.LambdaCanary10Percent5Minutes"),
        ("Canary10Percent30Minutes", "CodeDeployDefault.LambdaCanary10Percent30Minutes"),
        ("Linear10PercentEvery3Minutes", "CodeDeployDefault.LambdaLinear10PercentEvery3Minutes"),
        ("AllAtOnce", "CodeDeployDefault.LambdaAllAtOnce"),
        ("codedeploydefault.lambdaallatonce", "CodeDeployDefault.LambdaAllAtOnce"),
    ],
)
def test_short_and_sam_names(alias, expected):
    assert parse_lambda_config(alias) == PREDEFINED_CONFIGS[expected]


def test_custom_linear_seconds():
    assert plan({"type": "linear", "percentage": 25, "interval": "2s"}) == [
        (0.0, 0.25), (2.0, 0.5), (4.0, 0.75), (6.0, 1.0),
    ]


def test_custom_linear_not_dividing_100_promotes_after_last_partial_step():
    assert plan({"type": "linear", "percentage": 30, "interval": "1m"}) == [
        (0.0, 0.3), (60.0, 0.6), (120.0, 0.9), (180.0, 1.0),
    ]


def test_custom_canary_minutes_and_int_seconds():
    assert plan({"type": "canary", "percentage": 10, "interval": "5m"}) == [(0.0, 0.1), (300.0, 1.0)]
    assert plan({"type": "canary", "percentage": 20, "interval": 3}) == [(0.0, 0.2), (3.0, 1.0)]
    assert plan({"type": "Canary", "percentage": "99", "interval": "90"}) == [(0.0, 0.99), (90.0, 1.0)]


def test_codedeploy_traffic_routing_shapes_in_minutes():
    assert plan({"TimeBasedCanary": {"CanaryPercentage": 15, "CanaryInterval": 10}}) == [(0.0, 0.15), (600.0, 1.0)]
    assert plan({"timeBasedLinear": {"linearPercentage": 50, "linearInterval": 1}}) == [(0.0, 0.5), (60.0, 1.0)]


def test_custom_all_at_once():
    assert plan({"type": "all_at_once"}) == [(0.0, 1.0)]


@pytest.mark.parametrize("value,seconds", [("5m", 300.0), ("30s", 30.0), (45, 45.0), ("1h", 3600.0), ("0.5s", 0.5), ("2 min", 120.0)])
def test_parse_interval(value, seconds):
    assert parse_interval(value) == seconds


@pytest.mark.parametrize("value", ["", "5x", "-1s", 0, "0s", -3, None, True, [5]])
def test_parse_interval_rejects(value):
    with pytest.raises(ShiftConfigError, match="interval"):
        parse_interval(value)


@pytest.mark.parametrize("pct", [0, 100, 150, -5, 0.5, "abc", None])
def test_bad_percentage_names_the_field(pct):
    with pytest.raises(ShiftConfigError, match=r"deployment_config\.percentage"):
        parse_lambda_config({"type": "linear", "percentage": pct, "interval": "1m"})


def test_percentage_100_hints_all_at_once():
    with pytest.raises(ShiftConfigError, match="LambdaAllAtOnce"):
        parse_lambda_config({"type": "canary", "percentage": 100, "interval": "1m"})


def test_unknown_name_lists_known_ones():
    with pytest.raises(ShiftConfigError, match=r"deployment_config: unknown deployment configuration 'CodeDeployDefault\.LambdaCanary50Percent1Minute'") as err:
        parse_lambda_config("CodeDeployDefault.LambdaCanary50Percent1Minute")
    assert "CodeDeployDefault.LambdaLinear10PercentEvery1Minute" in str(err.value)


@pytest.mark.parametrize(
    "config,match",
    [
        ({"type": "blue", "percentage": 10, "interval": "1m"}, r"deployment_config\.type"),
        ({"type": "linear", "interval": "1m"}, r"deployment_config\.percentage: required"),
        ({"type": "canary", "percentage": 10}, r"deployment_config\.interval: required"),
        ({"type": "canary", "percentage": 10, "interval": "1m", "bake": 3}, r"unknown key\(s\) bake"),
        ({"TimeBasedCanary": {"CanaryPercentage": 10}}, r"CanaryInterval"),
        ("", "required"),
        (None, "required"),
        (42, "expected a configuration name or a dict"),
    ],
)
def test_bad_custom(config, match):
    with pytest.raises(ShiftConfigError, match=match):
        parse_lambda_config(config)


def test_field_name_is_configurable():
    with pytest.raises(ShiftConfigError, match=r"^rollwright_lambda_config\.percentage"):
        parse_lambda_config({"type": "linear", "percentage": 0, "interval": 1}, field="rollwright_lambda_config")


def test_2880_minute_limit():
    # 1 % every 30 minutes: 99 increments after the first -> 2970 minutes: too long.
    with pytest.raises(ShiftConfigError, match="2880 minutes"):
        parse_lambda_config({"type": "linear", "percentage": 1, "interval": "30m"})
    ok = parse_lambda_config({"type": "canary", "percentage": 10, "interval": MAX_SHIFT_SECONDS})
    assert plan_steps(ok)[-1].at_seconds == MAX_SHIFT_SECONDS


def test_already_parsed_config_passes_through():
    config = ShiftConfig("canary", 10, 5.0)
    assert parse_lambda_config(config) is config


def test_step_promote_flag_and_dict():
    assert Step(3.0, 1.0).promote and not Step(0.0, 0.9).promote
    assert Step(3.0, 1.0).to_dict() == {"at_seconds": 3.0, "weight": 1.0, "promote": True}


def test_format_seconds():
    assert format_seconds(1.5) == "1.5s"
    assert format_seconds(90) == "1m30s"
    assert format_seconds(3661) == "1h1m1s"


@given(
    kind=st.sampled_from(["canary", "linear"]),
    pct=st.integers(min_value=1, max_value=99),
    interval=st.integers(min_value=1, max_value=600),
)
def test_plan_invariants(kind, pct, interval):
    try:
        steps = plan_steps(parse_lambda_config({"type": kind, "percentage": pct, "interval": interval}))
    except ShiftConfigError as exc:
        assert "2880 minutes" in str(exc)
        return
    assert steps[0].at_seconds == 0.0
    assert steps[-1].weight == 1.0 and steps[-1].promote
    # weights strictly increase, none of the weighted steps reaches 1.0, times strictly increase
    weights = [s.weight for s in steps]
    times = [s.at_seconds for s in steps]
    assert weights == sorted(set(weights))
    assert all(0 < w < 1 for w in weights[:-1])
    assert times == sorted(set(times))
    # equal spacing
    assert all(abs((b - a) - interval) < 1e-9 for a, b in zip(times, times[1:]))
    if kind == "canary":
        assert len(steps) == 2
    else:
        assert len(steps) == -(-100 // pct)
