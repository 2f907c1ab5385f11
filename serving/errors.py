"""The root of every exception the model server defines.

serving/ is its own package: the model-server image ships it without flightdeck installed (the Dockerfile
copies serving/ alone, beside its own requirements), so it cannot derive from flightdeck.errors.
FlightdeckError. ServingError plays the same role here: `except ServingError` catches every failure the
server reports on purpose (a bad request, a model that cannot load, an auth file that cannot be read).
Subclasses keep the builtin base their callers catch (`class AuthConfigError(ServingError, ValueError)`).
tests/unit/test_errors.py enforces it.
"""

from __future__ import annotations


class ServingError(Exception):
    """Base class of every exception raised on purpose by the model server."""
