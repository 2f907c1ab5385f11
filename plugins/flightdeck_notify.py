"""Airflow adapter for flightdeck.notify: a notifier usable as on_failure_callback, and `send_notices` for tasks.

    from flightdeck_notify import FlightdeckFailureNotifier
    @dag(..., default_args={"on_failure_callback": FlightdeckFailureNotifier()})

Channels come from the environment (FLIGHTDECK_NOTIFY=log|slack|sns, see flightdeck.notify); this
adapter supplies what needs Airflow: the SNS client from the provider's SnsHook and the Slack webhook
URL from an Airflow connection (its password) when FLIGHTDECK_SLACK_CONN_ID names one.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import BaseNotifier

from flightdeck import notify


def _sns_client(aws_conn_id: str | None) -> Any:
    from airflow.providers.amazon.aws.hooks.sns import SnsHook

    return SnsHook(aws_conn_id=aws_conn_id).get_conn()


def _slack_url(conn_id: str) -> str:
    from airflow.sdk import BaseHook

    return BaseHook.get_connection(conn_id).password or ""


def configured_senders(aws_conn_id: str | None = None, slack_conn_id: str | None = None) -> list[notify.Sender]:
    """The channels FLIGHTDECK_NOTIFY asks for, with the clients only Airflow can supply; the log line alone
    when the settings are invalid (logged)."""
    aws_conn_id = aws_conn_id or os.environ.get("FLIGHTDECK_NOTIFY_AWS_CONN_ID", "aws_default")
    slack_conn_id = slack_conn_id or os.environ.get("FLIGHTDECK_SLACK_CONN_ID", "")
    try:
        return notify.configured_senders(
            slack_url=(lambda: _slack_url(slack_conn_id)) if slack_conn_id else None,
            sns_client=lambda: _sns_client(aws_conn_id),
        )
    except ValueError as e:
        notify.log.error("notification settings invalid (%s); logging only", e)
        return [notify.LogSender()]


def send_notices(notices: list[notify.Notice]) -> dict[str, dict[str, str]]:
    """Send each notice (e.g. the monitor's alerts) to every configured channel: subject -> channel -> result.
    Never raises (see flightdeck.notify)."""
    senders = configured_senders() if notices else []
    return {n.subject: notify.send(n, senders) for n in notices}


class FlightdeckFailureNotifier(BaseNotifier):
    """Log line always; Slack/SNS as configured. Never raises (see flightdeck.notify)."""

    def __init__(self, *, aws_conn_id: str | None = None, slack_conn_id: str | None = None) -> None:
        super().__init__()
        self.aws_conn_id = aws_conn_id or os.environ.get("FLIGHTDECK_NOTIFY_AWS_CONN_ID", "aws_default")
        self.slack_conn_id = slack_conn_id or os.environ.get("FLIGHTDECK_SLACK_CONN_ID", "")

    def notify(self, context: Any) -> None:
        """Send the failed task's event (from Airflow's callback `context`) to every configured channel;
        invalid settings fall back to the log line alone."""
        notify.notify_failure(context, configured_senders(self.aws_conn_id, self.slack_conn_id))
