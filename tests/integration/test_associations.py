"""Association acceptance: the called AE, the calling AE and its host, and
accept_unknown_sources; each rejection counted in /metrics and logged with
the peer address and both AE titles."""

import re

import pytest

import vigil
from vigil import echoscu


def rejected_with(res, result, reason):
    """echoscu printed an A-ASSOCIATE-RJ with this result and reason."""
    text = res.output.lower()
    return ("association rejected" in text and result.lower() in text
            and reason.lower() in text)


def rejection_logged(node, calling, called):
    """A log line about a rejection names the peer address and both AE
    titles."""
    for line in node.log().splitlines():
        if ("reject" in line.lower() and vigil.HOST in line
                and re.search(r"\b%s\b" % calling, line)
                and re.search(r"\b%s\b" % called, line)):
            return line
    return None


@pytest.fixture
def strict_node(node):
    node.aes["farhost"] = {"ae_title": "FARHOST", "host": "127.0.0.2",
                           "role": "source"}
    node.aes["pacs"] = {"ae_title": "PACS", "host": vigil.HOST,
                        "port": vigil.free_port(), "role": "destination"}
    node.aes["anyhost"] = {"ae_title": "ANYHOST", "role": "source"}
    return node.start()


def test_echo_accepted(strict_node):
    before = strict_node.metric("vigil_associations_accepted_total")
    res = echoscu(strict_node.port)
    assert res.returncode == 0, res
    assert vigil.assoc_accepted(res), res
    assert "Received Echo Response (Success)" in res.output, res
    assert strict_node.metric("vigil_associations_accepted_total") \
        == before + 1


def test_source_without_host_accepted_from_anywhere(strict_node):
    res = echoscu(strict_node.port, aet="ANYHOST")
    assert res.returncode == 0 and vigil.assoc_accepted(res), res


@pytest.mark.parametrize("calling,called,reason,label", [
    (vigil.SOURCE_AET, "NOTVIGIL", "Called AE Title Not Recognized",
     "called_ae"),
    ("STRANGER", vigil.NODE_AET, "Calling AE Title Not Recognized",
     "calling_ae"),
    # A destination is not allowed to send to us.
    ("PACS", vigil.NODE_AET, "Calling AE Title Not Recognized",
     "calling_ae"),
    # Known source, but configured on 127.0.0.2 and calling from 127.0.0.1.
    ("FARHOST", vigil.NODE_AET, "Calling AE Title Not Recognized",
     "calling_host"),
], ids=["wrong_called_ae", "unknown_calling_ae", "destination_calling",
        "wrong_host"])
def test_rejected(strict_node, calling, called, reason, label):
    n = strict_node
    before = n.metric("vigil_associations_rejected_total", reason=label)
    accepted = n.metric("vigil_associations_accepted_total")
    res = echoscu(n.port, aet=calling, aec=called)
    assert res.returncode != 0, res
    assert rejected_with(res, "Rejected Permanent", reason), res
    assert "Echo Response" not in res.output, res
    # The rejection is counted and logged right after the A-ASSOCIATE-RJ
    # goes out, so the peer may see it a moment before the counter moves.
    n.wait_for(lambda: n.metric("vigil_associations_rejected_total", reason=label)
               == before + 1, timeout=5, what="rejection counted")
    assert n.metric("vigil_associations_accepted_total") == accepted
    n.wait_for(lambda: rejection_logged(n, calling, called), timeout=5,
               what="rejection log line")
    # The node keeps serving.
    ok = echoscu(n.port)
    assert ok.returncode == 0 and vigil.assoc_accepted(ok), ok


def test_accept_unknown_sources(node):
    node.node["accept_unknown_sources"] = "yes"
    node.start()
    res = echoscu(node.port, aet="STRANGER")
    assert res.returncode == 0, res
    assert vigil.assoc_accepted(res), res
    assert "Received Echo Response (Success)" in res.output, res
    assert node.metric("vigil_associations_rejected_total",
                       reason="calling_ae") == 0
    # The called AE is still checked.
    res = echoscu(node.port, aet="STRANGER", aec="NOTVIGIL")
    assert rejected_with(res, "Rejected Permanent",
                         "Called AE Title Not Recognized"), res


def test_store_from_unknown_source_rejected(started, small_series):
    s = small_series(slices=2, size=64)
    res = vigil.storescu(started.port, s["files"], aet="STRANGER")
    assert res.returncode != 0, res
    assert vigil.assoc_rejected(res), res
    assert started.stored_files() == set()
    assert started.metric("vigil_instances_stored_total") == 0


def test_too_many_associations(node, ct_series, tmp_path):
    node.node["max_associations"] = 1
    node.start()
    scu = vigil.start_paused_send(node, ct_series["files"][:100],
                                  tmp_path / "storescu.log")
    try:
        res = echoscu(node.port)
        assert res.returncode != 0, res
        assert rejected_with(res, "Rejected Transient",
                             "Local Limit Exceeded"), res
        assert node.metric("vigil_associations_rejected_total",
                           reason="too_many_associations") == 1
        assert rejection_logged(node, vigil.SOURCE_AET, vigil.NODE_AET), \
            node.log_tail()
    finally:
        rc = vigil.finish_paused(scu)
    assert rc == 0, (tmp_path / "storescu.log").read_text()[-2000:]
    ok = echoscu(node.port)
    assert ok.returncode == 0 and vigil.assoc_accepted(ok), ok


def mappings(pid):
    with open("/proc/%d/maps" % pid) as f:
        return sum(1 for _ in f)


def test_ended_associations_leave_no_threads_behind(node):
    """Each association runs on a thread of its own; once it ends, nothing
    of that thread (its stack is a mapping of its own) may stay, or a node
    that takes tens of thousands of associations runs out of mappings and
    refuses every study."""
    node.start()
    for _ in range(5):  # the allocator's arenas settle first
        assert echoscu(node.port).returncode == 0
    before = mappings(node.pid)
    for _ in range(60):
        res = echoscu(node.port)
        assert res.returncode == 0, res
    grown = mappings(node.pid) - before
    assert grown < 20, "%d new mappings after 60 associations" % grown
