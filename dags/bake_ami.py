"""Bake the serving AMI of the EC2 target: Docker and the serving image's base layers, baked once.

1. **launch_builder** starts a builder instance from Amazon Linux 2023 (the public SSM parameter, or
   `base_ami`) whose user data installs Docker, logs in to ECR and pulls `base_image` (its layers are
   then in the AMI), cleans up and shuts the instance down (it stops). The builder is tagged with the
   run id: a retry finds it instead of launching a second one.
2. **wait_builder_stopped** waits for "stopped" (the provider's EC2InstanceStateSensor, in reschedule
   mode: it frees its worker slot between polls and gives up after 30 minutes. Not deferrable: this
   provider's deferrable path defers without a timeout and Airflow does not apply execution_timeout to
   deferred tasks, so a builder whose script failed would be waited for forever).
3. **create_image** images the stopped builder (no reboot) and waits until the AMI is available.
4. **record_ami** writes the AMI id to SSM `/flightdeck/ami/serving`, where the EC2 target reads it.
5. **terminate_builder** (trigger rule all_done) terminates every builder of the run, whatever failed:
   the builder never outlives the bake.
6. **outcome** fails the run when any step failed (a run's state follows its last tasks, and
   terminate_builder succeeds after a failed bake too); it is skipped when all went well.

Params: `aws_conn_id`, `base_ami` (empty: the latest Amazon Linux 2023), `instance_type`, `subnet_id` and
`security_group_ids` (comma-separated; empty: the default VPC), `instance_profile` (the builder's IAM
instance profile name: it needs ECR pull rights for `base_image`) and `base_image` (empty: Docker only).
One bake at a time (max_active_runs=1).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.providers.amazon.aws.sensors.ec2 import EC2InstanceStateSensor
from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowFailException
from flightdeck_notify import FlightdeckFailureNotifier  # plugins/: log line, Slack or SNS

from flightdeck.deploy.ami import Bake, BakeSpec

SPEC = BakeSpec()


@dag(
    dag_id=Path(__file__).stem,
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # one builder and one SSM parameter
    tags=["flightdeck", "ec2", "ami"],
    doc_md=__doc__,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "owner": "flightdeck",
        "on_failure_callback": FlightdeckFailureNotifier(),
    },
    params={
        "aws_conn_id": Param("aws_default", type="string", title="AWS connection"),
        "base_ami": Param(SPEC.base_ami, type="string", title="Base AMI id (empty: latest Amazon Linux 2023)"),
        "instance_type": Param(SPEC.instance_type, type="string", title="Builder instance type"),
        "subnet_id": Param(SPEC.subnet_id, type="string", title="Builder subnet (empty: the default VPC)"),
        "security_group_ids": Param("", type="string", title="Builder security groups, comma-separated"),
        "instance_profile": Param(SPEC.instance_profile, type="string", title="Builder IAM instance profile name"),
        "base_image": Param(
            SPEC.base_image,
            type="string",
            title="Image whose layers the AMI caches (empty: none)",
            description="e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/flightdeck-serving:base",
        ),
    },
)
def bake_ami() -> None:
    @task(task_id="launch_builder")
    def launch_builder(params: dict | None = None, run_id: str | None = None) -> str:
        return Bake(run_id, params).launch_builder()

    wait_builder_stopped = EC2InstanceStateSensor(
        task_id="wait_builder_stopped",
        instance_id="{{ ti.xcom_pull(task_ids='launch_builder') }}",
        target_state="stopped",
        aws_conn_id="{{ params.aws_conn_id }}",
        mode="reschedule",
        poke_interval=30,
        timeout=timedelta(minutes=30),
        deferrable=False,
    )

    @task(task_id="create_image")
    def create_image(instance_id: str, params: dict | None = None, run_id: str | None = None) -> str:
        return Bake(run_id, params).create_image(instance_id)

    @task(task_id="record_ami")
    def record_ami(ami_id: str, params: dict | None = None, run_id: str | None = None) -> dict[str, Any]:
        return Bake(run_id, params).record_ami(ami_id)

    @task(task_id="terminate_builder", trigger_rule="all_done")
    def terminate_builder(params: dict | None = None, run_id: str | None = None) -> list[str]:
        return Bake(run_id, params).terminate_builder()

    @task(
        task_id="outcome",
        trigger_rule="one_failed",
        retries=0,
        doc_md="Fail fast: fails the run when a bake step failed (it is skipped when none did).",
    )
    def outcome() -> None:
        raise AirflowFailException("the bake failed: see the failed task's log (its builder was terminated)")

    launched = launch_builder()
    image = create_image(launched)
    recorded = record_ami(image)
    cleanup = terminate_builder()
    launched >> wait_builder_stopped >> image
    [launched, wait_builder_stopped, image, recorded] >> cleanup
    [launched, wait_builder_stopped, image, recorded, cleanup] >> outcome()


bake_ami()
