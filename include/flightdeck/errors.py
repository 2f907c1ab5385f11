"""The root of every exception the flightdeck package defines.

`except FlightdeckError` catches any failure the platform itself reports (a gate that refuses, a backend
that cannot roll, a service that does not answer), and lets a programming error (KeyError, TypeError, ...)
through. Each subclass lives next to the code that raises it and names what went wrong; subclasses keep
the builtin base their callers already catch (`class ConfigError(FlightdeckError, ValueError)`), so
`except ValueError` keeps working.

serving/ is not part of this tree: it ships in the model-server image without flightdeck installed and
has its own root, serving.errors.ServingError. tests/unit/test_errors.py enforces both roots.
"""

from __future__ import annotations


class FlightdeckError(Exception):
    """Base class of every exception raised on purpose by flightdeck code."""
