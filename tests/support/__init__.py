"""Test data and helpers shared by the suites (never shipped in an image)."""
