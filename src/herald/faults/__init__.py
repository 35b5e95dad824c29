"""Fault scenarios with message accounting: ``herald faults run`` (see ``docs/guarantees.md``).

Each scenario starts its own servers on loopback, injects its fault, counts every message with a
:class:`~herald.faults.checker.Checker` and returns a report dict with the checks it made.

Example::

    from herald.faults.runner import run
    reports = run(["server-kill"], scale="smoke")
    assert all(r["passed"] for r in reports)
"""
