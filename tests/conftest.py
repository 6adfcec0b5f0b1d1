"""Shared fixtures: simulated labs (namespaced hosts with real OVS) that always clean up."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from lab.hosts import Lab, LabError, cleanup_stale, require_lab_tools

LabFactory = Callable[..., Lab]

# What a test needs from the machine (pyproject's marker list); exactly one per test.
KIND_MARKERS = ("unit", "api", "ovs", "e2e")

_LABS_OF_TEST = pytest.StashKey[list[Lab]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # `-m unit` must select every pure test and nothing that needs root or daemons:
    # a test with no kind, or two, would be run in the wrong place or never.
    wrong = []
    for item in items:
        kinds = sorted({mark.name for mark in item.iter_markers() if mark.name in KIND_MARKERS})
        if len(kinds) != 1:
            wrong.append(f"{item.nodeid}: {kinds or 'none'}")
    if wrong:
        raise pytest.UsageError(
            f"every test needs exactly one of the markers {', '.join(KIND_MARKERS)}"
            " (a `pytestmark` line in its file):\n  " + "\n  ".join(wrong)
        )


def pytest_sessionstart(session: pytest.Session) -> None:
    # Labs of earlier runs that crashed (owner process gone) would otherwise keep
    # their namespaces and daemons forever; labs of runs still alive are left alone.
    if os.geteuid() != 0:
        return
    try:
        removed = cleanup_stale("*")
    except (LabError, OSError) as exc:
        warnings.warn(f"could not remove stale labs: {exc}", stacklevel=1)
        return
    if removed:
        warnings.warn(f"removed stale labs of crashed runs: {removed}", stacklevel=1)


@pytest.fixture(scope="session")
def lab_tools() -> None:
    """Fail (never skip) when the machine cannot run labs: CI installs what they need."""
    try:
        require_lab_tools()
    except LabError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def lab_factory(request: pytest.FixtureRequest, lab_tools: None) -> Iterator[LabFactory]:
    """Builds labs (`lab_factory()` or `lab_factory(prefix=..., workdir=...)`);
    every one is closed after the test, whatever happened in it."""
    labs: list[Lab] = []
    request.node.stash[_LABS_OF_TEST] = labs

    def make(prefix: str | None = None, workdir: Path | None = None) -> Lab:
        lab = Lab(prefix=prefix, workdir=workdir)
        labs.append(lab)
        return lab

    yield make

    failures = []
    for lab in reversed(labs):
        try:
            lab.close()
        except LabError as exc:
            failures.append(str(exc))
    if failures:
        pytest.fail("lab teardown failed: " + "; ".join(failures), pytrace=False)


@pytest.fixture
def lab(lab_factory: LabFactory) -> Lab:
    """A fresh, empty lab (only the fabric) for this test."""
    return lab_factory()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    # While the test's labs still exist, attach what OVS saw to the failure report.
    if report.failed and report.when == "call":
        for lab in item.stash.get(_LABS_OF_TEST, []):
            if not lab.closed:
                report.sections.append((f"lab {lab.prefix}", lab.diagnostics()))
    return report
