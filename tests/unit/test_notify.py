"""Failure notifications: the log line, a Slack webhook (a real local HTTP server), SNS (moto, delivered to
an SQS queue), channel selection from the environment, and failures of a channel never raising."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
from moto import mock_aws

from flightdeck import notify

HOOK_PORT = 8602  # ops' private range


def _context(error: BaseException | None = None) -> dict:
    ti = SimpleNamespace(
        dag_id="deploy",
        task_id="wait_healthy",
        run_id="manual__1",
        try_number=1,
        max_tries=0,
        map_index=-1,
        log_url="http://af:8080/dags/deploy/runs/manual__1/tasks/wait_healthy",
    )
    return {"ti": ti, "run_id": "manual__1", "exception": error or RuntimeError("0/1 targets up"), "logical_date": None}


class _Hook(BaseHTTPRequestHandler):
    status = 200
    received: list = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.headers["Content-Type"], json.loads(body)))
        self.send_response(self.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def slack() -> Iterator[type[_Hook]]:
    handler = type("H", (_Hook,), {"received": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", HOOK_PORT), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield handler
    server.shutdown()
    server.server_close()


def test_event_from_an_airflow_context():
    e = notify.event_from_context(_context())
    assert (e.dag_id, e.task_id, e.run_id, e.try_number) == ("deploy", "wait_healthy", "manual__1", 1)
    assert e.error == "RuntimeError: 0/1 targets up"
    assert e.text().splitlines() == [
        "deploy.wait_healthy failed (try 1 of 1) in run manual__1",
        "error: RuntimeError: 0/1 targets up",
        "log: http://af:8080/dags/deploy/runs/manual__1/tasks/wait_healthy",
    ]


def test_default_is_one_log_line(caplog, monkeypatch):
    monkeypatch.delenv("FLIGHTDECK_NOTIFY", raising=False)
    with caplog.at_level(logging.ERROR, logger="flightdeck.notify"):
        assert notify.notify_failure(_context()) == {"log": "sent"}
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert lines == [
        "NOTIFY deploy.wait_healthy failed (try 1 of 1) in run manual__1 | error: RuntimeError: "
        "0/1 targets up | log: http://af:8080/dags/deploy/runs/manual__1/tasks/wait_healthy"
    ]


def test_slack_webhook_gets_the_message(slack):
    env = {"FLIGHTDECK_NOTIFY": "slack", "FLIGHTDECK_SLACK_WEBHOOK_URL": f"http://127.0.0.1:{HOOK_PORT}/hook"}
    results = notify.send(notify.event_from_context(_context()), notify.configured_senders(env))
    assert results == {"log": "sent", "slack": "sent"}
    [(ctype, body)] = slack.received
    assert ctype == "application/json"
    assert body["text"].startswith("*[flightdeck] deploy.wait_healthy failed*\ndeploy.wait_healthy failed")


def test_a_failing_channel_is_reported_not_raised(slack, caplog):
    slack.status = 500
    env = {"FLIGHTDECK_NOTIFY": "slack", "FLIGHTDECK_SLACK_WEBHOOK_URL": f"http://127.0.0.1:{HOOK_PORT}/hook"}
    with caplog.at_level(logging.ERROR, logger="flightdeck.notify"):
        results = notify.notify_failure(_context(), notify.configured_senders(env))
    assert results["log"] == "sent" and results["slack"].startswith("failed: slack webhook answered 500")
    assert f"127.0.0.1:{HOOK_PORT}" not in caplog.text  # the webhook URL is a secret


def test_sns_publishes_to_the_topic():
    with mock_aws():
        sns, sqs = boto3.client("sns", region_name="us-east-1"), boto3.client("sqs", region_name="us-east-1")
        topic = sns.create_topic(Name="flightdeck-alerts")["TopicArn"]
        queue = sqs.create_queue(QueueName="alerts")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
        env = {"FLIGHTDECK_NOTIFY": "sns", "FLIGHTDECK_SNS_TOPIC_ARN": topic}
        assert notify.notify_failure(_context(), notify.configured_senders(env, sns_client=lambda: sns)) == {
            "log": "sent",
            "sns": "sent",
        }
        [msg] = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
        body = json.loads(msg["Body"])
        assert body["Subject"] == "[flightdeck] deploy.wait_healthy failed"
        assert body["Message"].startswith("deploy.wait_healthy failed (try 1 of 1) in run manual__1")
        assert body["MessageAttributes"]["task_id"]["Value"] == "wait_healthy"


def test_channel_selection_and_misconfiguration(caplog, monkeypatch):
    assert notify.channels({}) == ["log"]
    assert notify.channels({"FLIGHTDECK_NOTIFY": "sns, slack"}) == ["log", "sns", "slack"]
    with pytest.raises(ValueError, match="unknown channel"):
        notify.channels({"FLIGHTDECK_NOTIFY": "pager"})
    with pytest.raises(ValueError, match="webhook URL"):
        notify.configured_senders({"FLIGHTDECK_NOTIFY": "slack"})
    with pytest.raises(ValueError, match="FLIGHTDECK_SNS_TOPIC_ARN"):
        notify.configured_senders({"FLIGHTDECK_NOTIFY": "sns"}, sns_client=lambda: None)
    monkeypatch.setenv("FLIGHTDECK_NOTIFY", "pager")  # a typo still leaves the log line
    with caplog.at_level(logging.ERROR, logger="flightdeck.notify"):
        assert notify.notify_failure(_context()) == {"log": "sent"}
    assert "notification settings invalid" in caplog.text


def test_airflow_notifier_adapter(monkeypatch, slack):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))
    try:
        from flightdeck_notify import FlightdeckFailureNotifier
    finally:
        sys.path.pop(0)
    monkeypatch.setenv("FLIGHTDECK_NOTIFY", "slack")
    monkeypatch.setenv("FLIGHTDECK_SLACK_WEBHOOK_URL", f"http://127.0.0.1:{HOOK_PORT}/hook")
    FlightdeckFailureNotifier()(_context())  # what Airflow calls on a failure
    assert len(slack.received) == 1 and "deploy.wait_healthy failed" in slack.received[0][1]["text"]
