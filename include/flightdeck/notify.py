"""Notifications (task failures; the monitor's drift and live-quality alerts): one line in the log always;
Slack and/or SNS when configured.

    FLIGHTDECK_NOTIFY=log            (default) an ERROR line in the callback's log
    FLIGHTDECK_NOTIFY=slack          + POST to a Slack incoming webhook: FLIGHTDECK_SLACK_WEBHOOK_URL, or
                                       the password of the Airflow connection FLIGHTDECK_SLACK_CONN_ID
    FLIGHTDECK_NOTIFY=sns            + publish to FLIGHTDECK_SNS_TOPIC_ARN (client from the provider's
                                       SnsHook, connection FLIGHTDECK_NOTIFY_AWS_CONN_ID, default aws_default)
    FLIGHTDECK_NOTIFY=slack,sns      both

The Airflow side (plugins/flightdeck_notify.py) turns a task's callback context into a FailureEvent
and hands over the clients; nothing here imports Airflow. A notifier that fails logs why and never
raises: it must not hide the failure it reports.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import requests

from flightdeck.errors import FlightdeckError

log = logging.getLogger(__name__)

CHANNELS = ("log", "slack", "sns")


class NotifyFailed(FlightdeckError, RuntimeError):
    """A notification channel refused the message (the answer's status and the start of its body)."""


@dataclass(frozen=True)
class FailureEvent:
    dag_id: str
    task_id: str
    run_id: str
    try_number: int | None = None
    max_tries: int | None = None
    map_index: int = -1
    error: str = ""
    log_url: str = ""
    logical_date: str = ""

    @property
    def subject(self) -> str:
        """One line: `[flightdeck] <dag>.<task> failed` (SNS cuts subjects at 100 characters)."""
        return f"[flightdeck] {self.dag_id}.{self.task_id} failed"

    def text(self) -> str:
        """The message body: what failed on which try in which run, the error (first 1500 characters), the log."""
        task = self.task_id if self.map_index < 0 else f"{self.task_id}[{self.map_index}]"
        tries = f" (try {self.try_number} of {(self.max_tries or 0) + 1})" if self.try_number else ""
        lines = [f"{self.dag_id}.{task} failed{tries} in run {self.run_id}"]
        if self.error:
            lines.append(f"error: {self.error[:1500]}")
        if self.log_url:
            lines.append(f"log: {self.log_url}")
        return "\n".join(lines)


def event_from_context(context: Mapping[str, Any]) -> FailureEvent:
    """A FailureEvent from an Airflow callback context (read by attribute, so no Airflow import)."""
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    err = context.get("exception")
    return FailureEvent(
        dag_id=str(getattr(ti, "dag_id", "") or getattr(dag_run, "dag_id", "") or ""),
        task_id=str(getattr(ti, "task_id", "") or ""),
        run_id=str(context.get("run_id") or getattr(dag_run, "run_id", "") or getattr(ti, "run_id", "")),
        try_number=getattr(ti, "try_number", None),
        max_tries=getattr(ti, "max_tries", None),
        map_index=int(getattr(ti, "map_index", -1) if getattr(ti, "map_index", None) is not None else -1),
        error=f"{type(err).__name__}: {err}"
        if isinstance(err, BaseException)
        else str(err or context.get("reason") or ""),
        log_url=str(getattr(ti, "log_url", "") or ""),
        logical_date=str(context.get("logical_date") or ""),
    )


class Notice(Protocol):
    """What a channel sends: a FailureEvent, or another notice of the same shape (the monitor's alerts)."""

    dag_id: str
    task_id: str

    @property
    def subject(self) -> str:
        """One line."""
        ...

    def text(self) -> str:
        """The body."""
        ...


class Sender(Protocol):
    """One notification channel; `name` is its FLIGHTDECK_NOTIFY word."""

    name: str

    def send(self, event: Notice) -> None:
        """Deliver `event`; raise on failure (notify.send logs it and goes on to the next channel)."""
        ...


class LogSender:
    """The task log itself: one ERROR line starting with NOTIFY (always on)."""

    name = "log"

    def send(self, event: Notice) -> None:
        """Log the event's text as one line (newlines become " | ")."""
        log.error("NOTIFY %s", event.text().replace("\n", " | "))


class SlackWebhookSender:
    """Slack incoming webhook: a JSON POST (the URL is a secret: never logged)."""

    name = "slack"

    def __init__(self, webhook_url: str, timeout: float = 10) -> None:
        if not webhook_url:
            raise ValueError("slack notifications need a webhook URL")
        self.webhook_url = webhook_url
        self.timeout = timeout

    def send(self, event: Notice) -> None:
        """POST the event's subject and text; raises NotifyFailed when Slack answers 3xx or above."""
        resp = requests.post(
            self.webhook_url, json={"text": f"*{event.subject}*\n{event.text()}"}, timeout=self.timeout
        )
        if resp.status_code >= 300:
            raise NotifyFailed(f"slack webhook answered {resp.status_code}: {resp.text[:200]}")


class SnsSender:
    """SNS publish through a client the caller builds (the Airflow adapter uses SnsHook)."""

    name = "sns"

    def __init__(self, topic_arn: str, client_factory: Callable[[], Any]) -> None:
        if not topic_arn:
            raise ValueError("sns notifications need FLIGHTDECK_SNS_TOPIC_ARN")
        self.topic_arn = topic_arn
        self.client_factory = client_factory

    def send(self, event: Notice) -> None:
        """SNS Publish to the topic, with dag_id and task_id as message attributes for subscription filters.

        Raises botocore's ClientError when SNS refuses."""
        self.client_factory().publish(
            TopicArn=self.topic_arn,
            Subject=event.subject[:100],
            Message=event.text(),
            MessageAttributes={
                "dag_id": {"DataType": "String", "StringValue": event.dag_id or "-"},
                "task_id": {"DataType": "String", "StringValue": event.task_id or "-"},
            },
        )


def channels(env: Mapping[str, str] | None = None) -> list[str]:
    """The channels FLIGHTDECK_NOTIFY (comma-separated, default "log") asks for, "log" always first.

    Raises ValueError naming any word that is not one of CHANNELS."""
    env = os.environ if env is None else env
    wanted = [c.strip().lower() for c in env.get("FLIGHTDECK_NOTIFY", "log").split(",") if c.strip()]
    unknown = [c for c in wanted if c not in CHANNELS]
    if unknown:
        raise ValueError(f"FLIGHTDECK_NOTIFY: unknown channel(s) {unknown}; use {', '.join(CHANNELS)}")
    return ["log", *[c for c in wanted if c != "log"]]  # the log line is always written


def configured_senders(
    env: Mapping[str, str] | None = None,
    *,
    slack_url: Callable[[], str] | None = None,
    sns_client: Callable[[], Any] | None = None,
) -> list[Sender]:
    """Senders for the channels the environment asks for. `slack_url` / `sns_client` let the Airflow
    adapter supply a connection's secret and a hook's client."""
    env = os.environ if env is None else env
    out: list[Sender] = []
    for ch in channels(env):
        if ch == "log":
            out.append(LogSender())
        elif ch == "slack":
            url = env.get("FLIGHTDECK_SLACK_WEBHOOK_URL") or (slack_url() if slack_url else "")
            out.append(SlackWebhookSender(url))
        elif ch == "sns":
            if sns_client is None:
                raise ValueError("sns notifications need an SNS client factory")
            out.append(SnsSender(env.get("FLIGHTDECK_SNS_TOPIC_ARN", ""), sns_client))
    return out


def send(event: Notice, senders: Sequence[Sender]) -> dict[str, str]:
    """Send to every channel; a channel that fails is logged and reported, never raised."""
    results: dict[str, str] = {}
    for sender in senders:
        try:
            sender.send(event)
            results[sender.name] = "sent"
        except Exception as e:  # see the module docstring
            log.error("notification via %s failed for %s.%s: %s", sender.name, event.dag_id, event.task_id, e)
            results[sender.name] = f"failed: {e}"
    return results


def notify_failure(context: Mapping[str, Any], senders: Sequence[Sender] | None = None) -> dict[str, str]:
    """on_failure_callback body: build the event, send it to the configured channels."""
    event = event_from_context(context)
    try:
        senders = configured_senders() if senders is None else senders
    except ValueError as e:  # misconfiguration: still say that the task failed
        log.error("notification settings invalid (%s); logging only", e)
        senders = [LogSender()]
    results = send(event, senders)
    log.info("failure notification for %s: %s", json.dumps(asdict(event))[:300], results)
    return results
