"""The deploy run's params: autoscaling, rolling pace and the container environment are validated and turned
into what the AWS targets take (ScalingSpec, RollPlan)."""

from __future__ import annotations

import pytest

from flightdeck.deploy.backend import ScalingMetric, ScalingSpec
from flightdeck.deploy.params import DEFAULTS, DeployParams, InvalidParams


def test_scaling_target_zero_means_the_metrics_default():
    assert DEFAULTS.scaling() == ScalingSpec(1, 4, ScalingMetric.CPU, 60.0)
    p = DeployParams.from_dict({"scaling_metric": "request_count_per_target", "min_capacity": 2, "max_capacity": 6})
    assert p.scaling() == ScalingSpec(2, 6, ScalingMetric.REQUEST_COUNT_PER_TARGET, 1000.0)
    assert DeployParams.from_dict({"scaling_target": 45}).scaling().target_value == 45.0


def test_roll_plan_is_the_canary_plan_as_checkpoints():
    plan = DeployParams.from_dict(
        {"canary_percent": 25, "canary_steps": 3, "step_seconds": 30, "min_healthy_percent": 90}
    ).roll_plan()
    assert plan.checkpoint_percentages == (25, 62, 100) and plan.checkpoint_delay_s == 30
    assert plan.min_healthy_percentage == 90


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"scaling_metric": "memory"}, "scaling_metric"),
        ({"min_capacity": 3, "max_capacity": 2}, "min_capacity"),
        ({"min_healthy_percent": 101}, "min_healthy_percent"),
        ({"target": "lambda"}, "target"),
        ({"env": {"A": "one\nSECOND=line"}}, "one-line"),
        ({"env": {"NOT A NAME": "x"}}, "variable name"),
    ],
)
def test_out_of_range_params_are_refused_with_their_name(params, message):
    with pytest.raises(InvalidParams, match=message):
        DeployParams.from_dict(params).validate()


def test_ec2_is_a_target():
    DeployParams.from_dict({"target": "ec2", "strategy": "rolling"}).validate()
