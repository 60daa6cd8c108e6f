"""Table-driven tests of the replay buffer's selection (pure logic)."""
import pytest

from antibody_reload.replay import EventRing


def msg(seq, event="tick", room=None, namespace="/", skip_sid=None, wrap=True):
    data = {"seq": seq} if seq is not None else {"x": 1}
    return {"method": "emit", "event": event, "data": [data] if wrap else data,
            "namespace": namespace, "room": room, "skip_sid": skip_sid}


CASES = [
    ("newer than last seen, in order", [msg(1), msg(2), msg(3)], [], 1, [("tick", 2), ("tick", 3)]),
    ("nothing newer", [msg(1), msg(2)], [], 2, []),
    ("room messages are not replayed", [msg(2, room="r1"), msg(3)], [], 1, [("tick", 3)]),
    ("skip_sid messages are not replayed", [msg(2, skip_sid="s"), msg(3)], [], 1, [("tick", 3)]),
    ("other namespace", [msg(2, namespace="/admin"), msg(3)], [], 1, [("tick", 3)]),
    ("payload without the field", [msg(None), msg(3)], [], 1, [("tick", 3)]),
    ("unwrapped payload", [msg(2, wrap=False)], [], 1, [("tick", 2)]),
    ("handed-over and own merged, deduplicated, sorted",
     [msg(4), msg(5)], [msg(2), msg(3), msg(4)], 1, [("tick", 2), ("tick", 3), ("tick", 4), ("tick", 5)]),
    ("same seq, different events both kept", [msg(2, event="a"), msg(2, event="b")], [], 1,
     [("a", 2), ("b", 2)]),
    ("incomparable field values are skipped", [msg("x"), msg(3)], [], 1, [("tick", 3)]),
]


@pytest.mark.parametrize("name,own,handed,after,want", CASES, ids=[c[0] for c in CASES])
def test_broadcasts_after(name, own, handed, after, want):
    ring = EventRing(seconds=10)
    for m in own:
        ring.add(m)
    got = ring.broadcasts_after("/", "seq", after, handed)
    assert sorted((e, d["seq"]) for e, d in got) == sorted(want)
    assert [d["seq"] for _, d in got] == sorted(d["seq"] for _, d in got)


def test_old_events_expire():
    ring = EventRing(seconds=0.0)
    ring.add(msg(1))
    ring.add(msg(2))
    assert [d["seq"] for _, d in ring.broadcasts_after("/", "seq", 0)] == [2]
