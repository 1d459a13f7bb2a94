"""streamd's shared-memory frame rings as NumPy arrays, and Python stages and sources for
streamd pipelines.

    import streamd
    for frame in streamd.Consumer("pipeline.raw", group="py"):
        total = frame.array.sum()      # a read-only view of the ring slot, no copy

The release rule: a frame's slot stays reserved while the Frame or any array made from it
is referenced. Taking the next frame releases the previous Frame (its ``array`` then
raises); ``with frame:`` and ``frame.release()`` release it sooner; an array that outlives
its frame keeps the slot until the array is gone. A lossless consumer can keep up to half
its ring that way and raises ``FramesHeld`` beyond (in a group, also when its next run
needs every frame released); a lossy consumer keeps one frame. See the README.

``streamd.pva`` (imported on its own: it needs p4p) is the EPICS bridge that pipelines use
for ``[source] kind = "pva"``, ``processor = "pva"`` and ``pva://``/``ca://`` metadata.
"""

from ._streamd import Consumer, Frame, FramesHeld, Producer, Slot, rings, status

__all__ = ["Consumer", "Frame", "FramesHeld", "Producer", "Slot", "rings", "status"]
