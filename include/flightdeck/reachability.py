"""Reachability of the platform's services, with errors that name the service."""

from __future__ import annotations

import requests

from flightdeck.errors import FlightdeckError


class ServiceUnavailable(FlightdeckError, RuntimeError):
    """A platform service could not be reached; the message names it and its address."""

    def __init__(self, service: str, address: str, detail: str) -> None:
        self.service = service
        self.address = address
        super().__init__(f"{service} unreachable at {address}: {detail}")


def ping_mlflow(uri: str, timeout: float = 5.0) -> None:
    """Raise ServiceUnavailable unless the MLflow tracking server answers /health."""
    if not uri.startswith(("http://", "https://")):
        return  # a file or database store needs no server
    try:
        response = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as exc:
        raise ServiceUnavailable("MLflow", uri, f"{type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise ServiceUnavailable("MLflow", uri, f"/health answered HTTP {response.status_code}")
