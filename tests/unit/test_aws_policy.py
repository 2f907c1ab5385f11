"""deploy/aws/iam-policy.json: valid, covers every AWS call the deploy code makes, and grants nothing broader
than needed (no service wildcards; `*` resources only for actions AWS cannot scope, or under a condition)."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

import pytest

from flightdeck import settings

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "deploy" / "aws" / "iam-policy.json"
# boto3 client attribute in flightdeck/deploy/ecs.py -> IAM service prefix
PREFIX = {
    "ecs": "ecs",
    "elb": "elasticloadbalancing",
    "logs": "logs",
    "scaling": "application-autoscaling",
    "cw": "cloudwatch",
}
# actions that take no resource-level permissions (AWS service authorization reference)
UNSCOPABLE = {
    "ecr:GetAuthorizationToken",
    "ecs:RegisterTaskDefinition",
    "ecs:DescribeTaskDefinition",
    "ecs:DeregisterTaskDefinition",
    "elasticloadbalancing:DescribeListeners",
    "elasticloadbalancing:DescribeTargetGroups",
    "elasticloadbalancing:DescribeTargetHealth",
    "elasticloadbalancing:DescribeRules",
    "cloudwatch:GetMetricStatistics",
}


@pytest.fixture(scope="module")
def statements() -> list[dict]:
    policy = json.loads(POLICY.read_text())
    assert policy["Version"] == "2012-10-17"
    assert len({s["Sid"] for s in policy["Statement"]}) == len(policy["Statement"])
    return policy["Statement"]


def _as_list(v: str | list[str]) -> list[str]:
    return [v] if isinstance(v, str) else list(v)


def _allowed(statements: list[dict], action: str) -> list[dict]:
    return [
        s
        for s in statements
        if s["Effect"] == "Allow" and any(fnmatch.fnmatchcase(action, a) for a in _as_list(s["Action"]))
    ]


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def test_every_aws_call_of_the_deploy_code_is_allowed(statements):
    source = (ROOT / "include" / "flightdeck" / "deploy" / "ecs.py").read_text()
    calls = {
        f"{PREFIX[svc]}:{_camel(m)}" for svc, m in re.findall(r"self\.(ecs|elb|logs|scaling|cw)\.([a-z_]+)\(", source)
    }
    assert len(calls) >= 15, calls  # the scan found the backend's calls
    calls |= {"ecr:CreateRepository", "ecr:DescribeRepositories", "ecr:GetAuthorizationToken"}  # deploy/aws.py
    # docker push/pull to ECR
    calls |= {
        "ecr:BatchCheckLayerAvailability",
        "ecr:InitiateLayerUpload",
        "ecr:UploadLayerPart",
        "ecr:CompleteLayerUpload",
        "ecr:PutImage",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
    }
    calls |= {"iam:PassRole", "s3:GetObject", "s3:PutObject", "s3:ListBucket"}
    missing = sorted(c for c in calls if not _allowed(statements, c))
    assert not missing, f"actions the code needs but the policy lacks: {missing}"


def test_no_wildcard_actions_and_star_resources_only_where_unavoidable(statements):
    for s in statements:
        for action in _as_list(s["Action"]):
            assert "*" not in action, f"{s['Sid']}: wildcard action {action}"
        if "*" in _as_list(s["Resource"]):
            scoped_by_condition = "Condition" in s
            unscopable = set(_as_list(s["Action"])) <= UNSCOPABLE
            assert scoped_by_condition or unscopable, f"{s['Sid']} grants {s['Action']} on every resource"
        for res in _as_list(s["Resource"]):
            assert res == "*" or res.startswith("arn:aws:"), res


def test_pass_role_only_to_ecs_tasks_and_only_the_serving_roles(statements):
    [s] = _allowed(statements, "iam:PassRole")
    assert s["Condition"] == {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}
    assert all(
        re.fullmatch(r"arn:aws:iam::ACCOUNT_ID:role/flightdeck-serving-[a-z-]+", r) for r in _as_list(s["Resource"])
    )


def test_s3_access_is_the_platform_buckets_only(statements, monkeypatch):
    for var in (
        "FLIGHTDECK_DATA_BUCKET",
        "FLIGHTDECK_MLFLOW_BUCKET",
        "FLIGHTDECK_LOGS_BUCKET",
        "FLIGHTDECK_DEPLOY_BUCKET",
    ):
        monkeypatch.delenv(var, raising=False)
    expected = set(settings.load().buckets)  # the defaults of settings.py
    assert expected == {"flightdeck-data", "flightdeck-mlflow", "flightdeck-logs", "flightdeck-deployments"}
    s3 = [s for s in statements if any(a.startswith("s3:") for a in _as_list(s["Action"]))]
    resources = {r for s in s3 for r in _as_list(s["Resource"])}
    assert resources == {f"arn:aws:s3:::{b}" for b in expected} | {f"arn:aws:s3:::{b}/*" for b in expected}
    assert not _allowed(statements, "s3:DeleteBucket") and not _allowed(statements, "s3:PutBucketPolicy")


def test_required_capabilities_are_present(statements):
    for action in (
        "ecr:PutImage",
        "ecs:UpdateService",
        "ecs:CreateService",
        "elasticloadbalancing:ModifyListener",
        "elasticloadbalancing:CreateTargetGroup",
        "application-autoscaling:RegisterScalableTarget",
        "application-autoscaling:PutScalingPolicy",
        "logs:CreateLogGroup",
        "iam:PassRole",
        "s3:PutObject",
    ):
        assert _allowed(statements, action), action
