"""Timing harness, machine description and the benchmark suites."""
from .machine import describe_machine

__all__ = ["describe_machine"]
