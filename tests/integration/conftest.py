"""Fixtures for the integration tests: a Node per test (stopped by PID in
teardown) and the synthetic CT series, generated once per session."""

import pytest

import vigil


@pytest.fixture
def node(tmp_path):
    """A configured, not yet started Node; always stopped afterwards."""
    n = vigil.Node(tmp_path)
    yield n
    n.stop()


@pytest.fixture
def node_factory(tmp_path):
    """Makes extra Nodes (each with its own dir), all stopped afterwards."""
    made = []

    def make(name):
        n = vigil.Node(tmp_path, name)
        made.append(n)
        return n

    yield make
    for n in made:
        n.stop()


@pytest.fixture
def started(node):
    return node.start()


@pytest.fixture(scope="session")
def ct_series(tmp_path_factory):
    """The 300-slice 512x512 CT series (dict: study_uid, series_uid,
    files, sop_uids). Read-only: tests must not modify these files."""
    out = tmp_path_factory.mktemp("ct300")
    return vigil.make_ct_series(out, slices=300, size=512, seed=1,
                                patient_id="VGTEST300",
                                accession="ACC300")


@pytest.fixture
def small_series(tmp_path):
    """Factory: small CT series (quick to write and send)."""
    count = [0]

    def make(slices=25, size=128, **kw):
        count[0] += 1
        out = tmp_path / ("series%d" % count[0])
        return vigil.make_ct_series(out, slices=slices, size=size,
                                    seed=count[0], **kw)
    return make
