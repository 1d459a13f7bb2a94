"""The release rule (tests/python.rs): no array ever sees a slot's bytes after the slot
was released and reused. Every check below fails if the rule is broken."""

import numpy as np

import streamd

ring = __import__("sys").argv[1]
shape = (32, 64)
producer = streamd.Producer(ring, shape, "uint16", slots=8, policy="drop-newest")
consumer = streamd.Consumer(ring)


def publish(frame_id):
    slot = producer.claim()
    if slot is None:
        return False
    slot.array[:] = frame_id
    slot.publish(frame_id)
    return True


# 1. A view that outlives its frame keeps the slot: the producer cannot reuse it.
assert publish(0)
first = next(consumer)
kept = first.array
for frame_id in range(1, 3):
    assert publish(frame_id)
for _ in range(2):
    next(consumer)  # takes frames 1 and 2, releasing the Frame objects before them
# The ring has 8 slots; frame 0's slot is still held by `kept`, so of the next frames
# only those that fit in the 7 other slots are published; the rest are dropped.
published = sum(publish(frame_id) for frame_id in range(3, 20))
assert producer.counters()["dropped"] > 0, producer.counters()
assert (kept == 0).all(), f"a held slot was rewritten: {np.unique(kept)}"
try:
    first.array
    raise AssertionError("a released frame still gave an array")
except ValueError:
    pass
# 2. Once the view is gone, the slot comes back.
del kept
# Drain what was published, then the producer can publish into the slots again.
got = []
for _ in range(published):
    with next(consumer) as frame:
        got.append(frame.id)
assert got == list(range(3, 3 + published)), got
assert publish(100) and publish(101), producer.counters()
assert [next(consumer).id, next(consumer).id] == [100, 101]

# 3. A view kept beyond the window raises instead of letting the slot go.
held = []
raised = False
try:
    for frame_id in range(102, 120):
        while not publish(frame_id):
            pass
        held.append(next(consumer).array)
except streamd.FramesHeld:
    raised = True
assert raised, "a consumer released frames whose arrays were still referenced"
assert all((a == a.flat[0]).all() for a in held)
values = [int(a.flat[0]) for a in held]
assert values == sorted(set(values)), values

# 4. A lossy consumer keeps one frame: reading on while its array lives raises.
producer.finish()
lossy_ring = ring + "-lossy"
lossy_producer = streamd.Producer(lossy_ring, shape, "uint16", slots=4, policy="drop-newest")
lossy = streamd.Consumer(lossy_ring, delivery="lossy")
for frame_id in range(2):
    slot = lossy_producer.claim()
    slot.array[:] = frame_id
    slot.publish(frame_id)
view = next(lossy).array
try:
    next(lossy)
    raise AssertionError("a lossy consumer read on while an array of its frame lived")
except streamd.FramesHeld:
    pass
assert (view == 0).all()
del view
assert next(lossy).id == 1
lossy_producer.finish()
print("release rule holds")
