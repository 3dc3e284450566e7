"""docs/protocol.md against a live daemon, checked by a client in another language: the C
program in conformance/c (libzmq + jansson), written from the document alone. Its checks fail
the test one by one, by name."""
from __future__ import annotations

import subprocess

import pytest

from .daemon_util import REPO, Daemon
from .test_daemon import base_sections


@pytest.fixture(scope="module")
def conformance(tmp_path_factory):
    binary = tmp_path_factory.mktemp("conformance") / "conformance"
    subprocess.run(["cc", "-O2", "-Wall", "-Werror", "-o", str(binary), str(REPO / "conformance/c/conformance.c"),
                    "-lzmq", "-ljansson"], check=True)
    return binary


def test_a_c_client_written_from_the_protocol_document(conformance, int4_package, tmp_path):
    d = Daemon(tmp_path / "d", base_sections(int4_package))
    try:
        run = subprocess.run([str(conformance), d.address, "--speech"], capture_output=True, text=True, timeout=300)
    finally:
        d.stop()
    failed = [line for line in run.stdout.splitlines() if line.startswith("FAIL")]
    assert run.returncode == 0 and not failed, run.stdout + run.stderr
    assert run.stdout.splitlines()[-1].endswith("checks passed") and run.stdout.count("PASS") >= 25
