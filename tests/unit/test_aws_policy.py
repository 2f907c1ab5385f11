"""deploy/aws/iam-policy.json: valid, covers every AWS call the deploy code makes (ECS and EC2 targets, the AMI
bake), and grants nothing broader than needed (no service wildcards; `*` resources only for actions AWS cannot
scope, or under a condition)."""

from __future__ import annotations

import ast
import fnmatch
import json
import re
from functools import cache
from pathlib import Path

import pytest

from flightdeck import settings

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "deploy" / "aws" / "iam-policy.json"
DEPLOY = ROOT / "include" / "flightdeck" / "deploy"
# boto3 client variable / attribute in the deploy code -> (botocore service name, IAM service prefix)
CLIENTS = {
    "ecs": ("ecs", "ecs"),
    "elb": ("elbv2", "elasticloadbalancing"),
    "logs": ("logs", "logs"),
    "scaling": ("application-autoscaling", "application-autoscaling"),
    "cw": ("cloudwatch", "cloudwatch"),
    "ec2": ("ec2", "ec2"),
    "autoscaling": ("autoscaling", "autoscaling"),
    "ssm": ("ssm", "ssm"),
}
# the modules that call AWS, and how many distinct actions the scan finds in each today: fewer means calls moved
# somewhere the scan does not look (or behind another variable name), and this test would pass vacuously
SCANNED = {"alb.py": 7, "ecs.py": 12, "ec2.py": 13, "instance_refresh.py": 2, "ami.py": 7}
# actions that take no resource-level permissions (AWS Service Authorization Reference: no resource type)
UNSCOPABLE = {
    "ecr:GetAuthorizationToken",
    "ecs:RegisterTaskDefinition",
    "ecs:DescribeTaskDefinition",
    "ecs:DeregisterTaskDefinition",
    "elasticloadbalancing:DescribeLoadBalancers",
    "elasticloadbalancing:DescribeListeners",
    "elasticloadbalancing:DescribeTargetGroups",
    "elasticloadbalancing:DescribeTargetHealth",
    "elasticloadbalancing:DescribeRules",
    "cloudwatch:GetMetricStatistics",
    "ec2:DescribeInstances",
    "ec2:DescribeImages",
    "ec2:DescribeLaunchTemplates",
    "ec2:DescribeLaunchTemplateVersions",
    "ec2:DescribeSecurityGroups",
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeInstanceRefreshes",
    "ssm:DescribeParameters",
}
ASG_ARN = "arn:aws:autoscaling:REGION:ACCOUNT_ID:autoScalingGroup:*:autoScalingGroupName/flightdeck-serving-*"
AMI_PARAMETER_ARN = "arn:aws:ssm:REGION:ACCOUNT_ID:parameter/flightdeck/ami/*"
PUBLIC_AL2023_ARN = "arn:aws:ssm:REGION::parameter/aws/service/ami-amazon-linux-latest/*"


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


def _resources(statements: list[dict], action: str) -> set[str]:
    return {r for s in _allowed(statements, action) for r in _as_list(s["Resource"])}


@cache
def _operations(service: str) -> dict[str, str]:
    """boto3 method name -> API operation name (= the IAM action name) of a botocore service."""
    import botocore.session
    from botocore import xform_name

    model = botocore.session.get_session().get_service_model(service)
    return {xform_name(op): op for op in model.operation_names}


def _client(node: ast.expr) -> str | None:
    """The client variable `node` names: `X` or `self.X` with X in CLIENTS, else None."""
    if isinstance(node, ast.Name) and node.id in CLIENTS:
        return node.id
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
        and node.attr in CLIENTS
    ):
        return node.attr
    return None


def _string_arg(call: ast.Call) -> str | None:
    return next((a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)), None)


def _builtin_waiter_operation(service: str, name: str) -> str:
    import botocore.session

    model = botocore.session.get_session().get_waiter_model(service)
    return model.get_waiter("".join(part.capitalize() for part in name.split("_"))).operation


def _scan(path: Path) -> set[str]:
    """IAM actions of the AWS calls in one module: `X.method(...)` / `self.X.method(...)` on a client variable of
    CLIENTS, `X.get_paginator("op")`, and boto waiters asked for by name with the client (`_waiter(X, "name")`,
    `hook.get_waiter("name", client=X)`), whose polling operation is the action."""
    actions: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and (var := _client(func.value)):
            service, prefix = CLIENTS[var]
            method = func.attr
            if method == "get_paginator":
                method = _string_arg(node) or ""
            ops = _operations(service)
            assert method in ops, f"{path.name}: {var}.{method}( is no {service} API call (wrong client mapping?)"
            actions.add(f"{prefix}:{ops[method]}")
            continue
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name.endswith("waiter") and (waiter := _string_arg(node)):
            candidates = [*node.args, *(k.value for k in node.keywords if k.arg == "client")]
            var = next((v for v in map(_client, candidates) if v), None)
            if var:
                service, prefix = CLIENTS[var]
                actions.add(f"{prefix}:{_builtin_waiter_operation(service, waiter)}")
    return actions


def _custom_waiter_actions() -> set[str]:
    """The operations our own waiter models (deploy/waiters/<botocore service>.json) poll."""
    prefix_of = dict(CLIENTS.values())
    actions = set()
    for path in sorted((DEPLOY / "waiters").glob("*.json")):
        assert path.stem in prefix_of, f"waiter model {path.name}: unknown service"
        for waiter in json.loads(path.read_text())["waiters"].values():
            actions.add(f"{prefix_of[path.stem]}:{waiter['operation']}")
    return actions


def test_the_scanner_reads_every_call_form(tmp_path):
    module = tmp_path / "example.py"
    module.write_text(
        '"""self.ecs.delete_service( in a docstring is not a call"""\n'
        "class Backend:\n"
        "    def go(self, ec2, ssm):\n"
        "        self.elb.modify_listener(ListenerArn='x')\n"
        "        self.autoscaling.get_paginator('describe_auto_scaling_groups').paginate()\n"
        "        ssm.put_parameter(Name='/flightdeck/ami/serving')\n"
        "        _waiter(ec2, 'image_available').wait(ImageIds=['ami-1'])\n"
        "        Hook(aws_conn_id=None).get_waiter('tasks_stopped', client=self.ecs)\n"
        "        self.ec2.exceptions.ClientError  # an attribute, not a call\n"
        "        other.ecs.create_service()  # not one of our clients\n"
    )
    assert _scan(module) == {
        "elasticloadbalancing:ModifyListener",
        "autoscaling:DescribeAutoScalingGroups",
        "ssm:PutParameter",
        "ec2:DescribeImages",
        "ecs:DescribeTasks",
    }
    assert _custom_waiter_actions() >= {"autoscaling:DescribeInstanceRefreshes", "ecs:DescribeServices"}


def test_the_scan_finds_the_calls_of_every_aws_module():
    found = {name: _scan(DEPLOY / name) for name in SCANNED}
    for name, minimum in SCANNED.items():
        assert len(found[name]) >= minimum, (name, sorted(found[name]))
    assert {"ecs:CreateService", "application-autoscaling:RegisterScalableTarget"} <= found["ecs.py"]
    assert {"elasticloadbalancing:ModifyListener", "cloudwatch:GetMetricStatistics"} <= found["alb.py"]
    assert {"autoscaling:CreateAutoScalingGroup", "ec2:CreateLaunchTemplateVersion"} <= found["ec2.py"]
    assert {"autoscaling:StartInstanceRefresh", "autoscaling:DescribeInstanceRefreshes"} <= found["instance_refresh.py"]
    assert {"ec2:RunInstances", "ec2:CreateImage", "ssm:PutParameter"} <= found["ami.py"]


def test_every_aws_call_of_the_deploy_code_is_allowed(statements):
    calls = set().union(*(_scan(DEPLOY / name) for name in SCANNED)) | _custom_waiter_actions()
    calls |= {"ec2:DescribeInstances"}  # dags/bake_ami.py: the provider's EC2InstanceStateSensor
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
    calls |= {"s3:GetObject", "s3:PutObject", "s3:ListBucket"}
    # what AWS checks besides the call itself: roles passed to ECS tasks and instances, tags on create, the
    # launch template's RunInstances when an Auto Scaling group is created or refreshed, service-linked roles
    calls |= {
        "iam:PassRole",
        "iam:CreateServiceLinkedRole",
        "autoscaling:CreateOrUpdateTags",  # CreateAutoScalingGroup with Tags (EC2 Auto Scaling permissions docs)
        "ec2:RunInstances",
        "ec2:CreateTags",
        "elasticloadbalancing:AddTags",
    }
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
            assert not re.search(r"\d{12}", res), f"{s['Sid']}: a real account id in {res} (use ACCOUNT_ID)"


def test_pass_role_once_per_service_and_only_the_serving_roles(statements):
    by_service: dict[str, list[dict]] = {}
    for s in _allowed(statements, "iam:PassRole"):
        assert _as_list(s["Action"]) == ["iam:PassRole"], f"{s['Sid']}: PassRole shares its statement"
        assert set(s["Condition"]) == {"StringEquals"} and set(s["Condition"]["StringEquals"]) == {
            "iam:PassedToService"
        }, s["Sid"]
        service = s["Condition"]["StringEquals"]["iam:PassedToService"]
        assert isinstance(service, str), f"{s['Sid']} passes to several services: {service}"
        by_service.setdefault(service, []).append(s)
    assert sorted(by_service) == ["ec2.amazonaws.com", "ecs-tasks.amazonaws.com"]
    assert all(len(v) == 1 for v in by_service.values()), {k: [s["Sid"] for s in v] for k, v in by_service.items()}
    [ecs], [ec2] = by_service["ecs-tasks.amazonaws.com"], by_service["ec2.amazonaws.com"]
    assert set(_as_list(ecs["Resource"])) == {
        "arn:aws:iam::ACCOUNT_ID:role/flightdeck-serving-task-execution",
        "arn:aws:iam::ACCOUNT_ID:role/flightdeck-serving-task",
    }
    assert _as_list(ec2["Resource"]) == ["arn:aws:iam::ACCOUNT_ID:role/flightdeck-serving-instance"]


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


def test_ec2_target_and_ami_bake_capabilities_are_present_and_scoped(statements):
    # Auto Scaling groups: only the serving app's, by name
    for action in (
        "autoscaling:CreateAutoScalingGroup",
        "autoscaling:DeleteAutoScalingGroup",
        "autoscaling:DetachLoadBalancerTargetGroups",
        "autoscaling:PutScalingPolicy",
        "autoscaling:StartInstanceRefresh",
        "autoscaling:RollbackInstanceRefresh",
    ):
        assert _resources(statements, action) == {ASG_ARN}, action
    # launch templates: created tagged with the app, versioned and launched only when so tagged
    [create] = _allowed(statements, "ec2:CreateLaunchTemplate")
    assert create["Condition"] == {"StringEquals": {"aws:RequestTag/org.flightdeck.app": "flightdeck-serving"}}
    [version] = _allowed(statements, "ec2:CreateLaunchTemplateVersion")
    assert version["Condition"] == {"StringEquals": {"aws:ResourceTag/org.flightdeck.app": "flightdeck-serving"}}
    assert "arn:aws:ec2:REGION:ACCOUNT_ID:launch-template/*" in _resources(statements, "ec2:RunInstances")
    # the builder and the groups' instances: launched in the account, from Amazon's or our own AMIs
    for resource in ("instance", "volume", "network-interface", "security-group", "subnet"):
        assert f"arn:aws:ec2:REGION:ACCOUNT_ID:{resource}/*" in _resources(statements, "ec2:RunInstances")
    [images] = [s for s in _allowed(statements, "ec2:RunInstances") if "image/" in str(s["Resource"])]
    assert images["Condition"] == {"StringEquals": {"ec2:Owner": ["amazon", "ACCOUNT_ID"]}}
    # tags only on the resources those calls create
    [tags] = _allowed(statements, "ec2:CreateTags")
    assert set(tags["Condition"]["StringEquals"]["ec2:CreateAction"]) == {
        "RunInstances",
        "CreateLaunchTemplate",
        "CreateImage",
    }
    # only tagged builders are imaged or terminated
    for action in ("ec2:CreateImage", "ec2:TerminateInstances"):
        on_instances = [s for s in _allowed(statements, action) if "instance/" in str(s["Resource"])]
        assert [s.get("Condition") for s in on_instances] == [
            {"StringEquals": {"aws:ResourceTag/org.flightdeck.role": "ami-builder"}}
        ], action
    assert _resources(statements, "ec2:TerminateInstances") == {"arn:aws:ec2:REGION:ACCOUNT_ID:instance/*"}
    # the AMI id in SSM: our parameter written and read, Amazon Linux's public one read
    assert _resources(statements, "ssm:PutParameter") == {AMI_PARAMETER_ARN}
    assert _resources(statements, "ssm:GetParameter") == {AMI_PARAMETER_ARN, PUBLIC_AL2023_ARN}
    assert not _allowed(statements, "ssm:DeleteParameter")
    # Auto Scaling's service-linked role, created on the first group if missing
    [slr] = [
        s
        for s in _allowed(statements, "iam:CreateServiceLinkedRole")
        if s["Condition"]["StringEquals"]["iam:AWSServiceName"] == "autoscaling.amazonaws.com"
    ]
    assert _as_list(slr["Resource"]) == [
        "arn:aws:iam::ACCOUNT_ID:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
    ]
