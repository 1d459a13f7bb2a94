"""EPICS pvAccess in streamd pipelines, on the EPICS community's own library (p4p; PvaPy
for Channel Access metadata). The protocol is theirs; the rings are streamd's.

- ``Source`` (``[source] kind = "pva"``): the NTNDArray updates of a channel (an
  areaDetector NDPluginPva, PvaPy's ``pvapy-ad-sim-server``) become frames: ``uniqueId``
  is the frame id, ``timeStamp`` the timestamp, ``dimension`` the shape, the value union's
  type the dtype and the NDAttributes the frame's attributes. Gaps in ``uniqueId`` are
  counted as missed (whether the server's queue or the client's overran).
- ``Sink`` (``processor = "pva"``): serves a ring's frames as an NTNDArray channel with
  ``uniqueId`` = frame id and the frames' attributes, for ``pvget``,
  ``pvapy-hpc-consumer`` and image viewers.
- ``MetadataChannels`` (``metadata = { channels = "pva://x,ca://y" }`` on a pva or Python
  source): each PV update's value and timestamp go into the metadata ring, for the
  ``metadata`` stage to match to frames.

All of them read the usual EPICS environment (``EPICS_PVA_ADDR_LIST``, ...).
"""

import collections
import threading
import time

import numpy as np

try:
    from p4p import Value
    from p4p.client.raw import Context, Disconnected, Finished
    from p4p.nt import NTNDArray
    from p4p.server import Server
    from p4p.server.raw import SharedPV
except ImportError as e:  # pragma: no cover - depends on the interpreter
    raise ImportError(
        "streamd.pva needs p4p, the EPICS pvAccess library: install it with "
        "`python -m pip install p4p` into the interpreter that runs the pipeline's Python "
        f"stages ({e})"
    ) from None

from . import _streamd

__all__ = ["Source", "Sink", "MetadataChannels"]

# How long the source waits for an update before handing control back to streamd, which
# then looks for a stop request (a None item).
IDLE_WAIT_S = 0.05

# pvData scalar type codes (codec.parameters of a compressed NTNDArray) to NumPy.
SCALAR_TYPES = {
    1: np.int8, 2: np.int16, 3: np.int32, 4: np.int64,
    5: np.uint8, 6: np.uint16, 7: np.uint32, 8: np.uint64,
    9: np.float32, 10: np.float64,
}


def _request(queue_size, fields="field()"):
    """A monitor request, with the server-side queue PvaPy's ``--server-queue-size`` asks for."""
    return f"record[queueSize={int(queue_size)}]{fields}" if queue_size else fields


def _stamp_ns(value, prefix="timeStamp"):
    """An EPICS timestamp in ns since the Unix epoch; None when it was never set."""
    seconds = value[f"{prefix}.secondsPastEpoch"]
    if not seconds:
        return None
    return int(seconds) * 1_000_000_000 + int(value[f"{prefix}.nanoseconds"])


def _decompress(codec, data, parameters, size):
    """The pixels of a codec-compressed NTNDArray (areaDetector's NDPluginCodec)."""
    dtype = SCALAR_TYPES.get(parameters if isinstance(parameters, int) else None)
    if dtype is None:
        raise ValueError(
            f"a frame compressed with {codec!r} does not say its pixel type "
            f"(codec.parameters = {parameters!r})"
        )
    raw = np.ascontiguousarray(data).view(np.uint8)
    try:
        if codec == "lz4":
            import lz4.block
            out = lz4.block.decompress(raw.tobytes(), uncompressed_size=int(size))
            return np.frombuffer(out, dtype=dtype)
        if codec == "blosc":
            import blosc
            return np.frombuffer(blosc.decompress(raw.tobytes()), dtype=dtype)
        if codec == "bslz4":
            import bitshuffle
            count = int(size) // np.dtype(dtype).itemsize
            return bitshuffle.decompress_lz4(raw, (count,), np.dtype(dtype), 0)
    except ImportError as e:
        module = {"lz4": "lz4", "blosc": "blosc", "bslz4": "bitshuffle"}[codec]
        raise ValueError(
            f"frames arrive compressed with {codec!r}; install the {module} package "
            f"(`python -m pip install {module}`) to decompress them ({e})"
        ) from None
    raise ValueError(
        f"frames arrive compressed with {codec!r}, which streamd cannot decompress "
        "(lz4, bslz4 and blosc can be); turn the codec off in the IOC (NDPluginCodec) "
        "or choose one of those"
    )


def _attribute_value(value):
    """An NDAttribute's value as a frame attribute: int, float or str; None otherwise."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        value = int(value)
        return value if -(2**63) <= value < 2**63 else str(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, str):
        return value
    return None


def _record_size(key, value):
    """Bytes an attribute takes in a slot (spec §3.6: 4 + key + value)."""
    size = len(value.encode()) if isinstance(value, str) else 8
    return 4 + len(key.encode()) + size


class Source:
    """``[source] kind = "pva"``: frames from the NTNDArray updates of ``channel``.

    Arguments: ``channel``; ``queue_size`` (the server-side monitor queue,
    ``record[queueSize=N]``, PvaPy's ``--server-queue-size``; 0 leaves the server's
    default); ``until_disconnect`` (end the stream when the server goes away after it
    sent frames; otherwise wait for it to come back); ``frames`` (end after this many).

    Frame ids are the ``uniqueId``s; when the numbering starts again (an IOC restarted,
    a new acquisition reset the counter) ids continue after the last one instead, so
    they never repeat (``id_resets`` counts it). A gap in ``uniqueId`` is missed frames,
    counted in the source's ``missed``. Updates without pixels (an IOC's array before
    its first frame) are not frames (``empty_updates``).
    """

    def __init__(self, args):
        self.channel = str(args["channel"])
        self.queue_size = int(args.get("queue_size", 0))
        self.until_disconnect = bool(args.get("until_disconnect", False))
        self.limit = args.get("frames")
        self.last_uid = None
        self.last_id = None
        self.offset = 0
        self.capacity = _streamd.ATTRIBUTE_CAPACITY
        self.reset_stats()

    def reset_stats(self):
        self.stats = dict.fromkeys(
            ("updates", "empty_updates", "disconnects", "id_resets", "attributes_dropped"), 0
        )

    def get_stats(self):
        return dict(self.stats)

    def frames(self):
        context = Context("pva", nt=False, useenv=True)
        wake = threading.Event()
        subscription = context.monitor(self.channel, wake.set, request=_request(self.queue_size))
        taken = 0
        try:
            while self.limit is None or taken < self.limit:
                wake.clear()
                update = subscription.pop()
                if update is None:
                    if not wake.wait(IDLE_WAIT_S):
                        yield None
                    continue
                if isinstance(update, Disconnected):
                    self.stats["disconnects"] += 1
                    if self.until_disconnect and self.stats["updates"]:
                        return
                    continue
                if isinstance(update, Finished):
                    return
                if isinstance(update, Exception):
                    raise RuntimeError(f"channel {self.channel!r}: {update}")
                self.stats["updates"] += 1
                frame = self._frame(update)
                if frame is None:
                    self.stats["empty_updates"] += 1
                    continue
                taken += 1
                yield frame
        finally:
            subscription.close()
            context.close()

    def _frame(self, update):
        """An NTNDArray update as a frame item, or None when it holds no pixels."""
        pixels = update["value"]
        sizes = [int(d["size"]) for d in update["dimension"]]
        if pixels is None or not sizes or not np.size(pixels):
            return None
        codec = update["codec.name"]
        if codec:
            pixels = _decompress(codec, pixels, update["codec.parameters"], update["uncompressedSize"])
        if pixels.dtype == np.bool_:
            raise ValueError(f"channel {self.channel!r} serves a boolean array, not pixels")
        # areaDetector lists the fastest axis first; NumPy (and the ring) the slowest.
        shape = tuple(reversed(sizes))
        if int(np.prod(shape)) != pixels.size:
            raise ValueError(
                f"channel {self.channel!r}: dimension {sizes} does not match "
                f"{pixels.size} pixels"
            )
        uid = int(update["uniqueId"])
        missed = 0
        if self.last_uid is None:
            # Frame ids are unsigned: a first uniqueId below 0 is moved to 0.
            self.offset = max(0, -uid)
        elif uid > self.last_uid:
            missed = uid - self.last_uid - 1
        else:
            self.stats["id_resets"] += 1
            self.offset = self.last_id + 1 - uid
        self.last_uid = uid
        self.last_id = uid + self.offset
        return {
            "array": pixels.reshape(shape),
            "id": self.last_id,
            "timestamp_ns": _stamp_ns(update),
            "attrs": self._attributes(update),
            "missed": missed,
        }

    def _attributes(self, update):
        """The NDAttributes that fit a slot's attribute area; the rest are counted."""
        attrs, used = {}, 0
        for attribute in update["attribute"]:
            name, value = attribute["name"], _attribute_value(attribute["value"])
            if not name or value is None or len(name.encode()) > 255:
                self.stats["attributes_dropped"] += 1
                continue
            size = _record_size(name, value)
            if used + size > self.capacity or (isinstance(value, str) and len(value.encode()) > 65535):
                self.stats["attributes_dropped"] += 1
                continue
            attrs[name] = value
            used += size
        return attrs


class Sink:
    """``processor = "pva"``: serves each frame as the next update of an NTNDArray channel.

    Arguments: ``channel``; ``wait_clients`` (before the first frame is served, wait
    until this many clients monitor the channel, so that a consumer started beforehand
    sees every frame; 0 by default). The channel holds an empty array until the first
    frame, as an areaDetector IOC's does; ``uniqueId`` is the frame id (its low 31 bits:
    NTNDArray's uniqueId is an int32), ``timeStamp`` and ``dataTimeStamp`` the frame's
    timestamp, and the frame's attributes are NDAttributes (with ``ColorMode`` 0 for a
    2-D frame, as image viewers expect).

    Each client's queue is its request's (``record[queueSize=N]``, PvaPy's
    ``--server-queue-size``); a client that falls that far behind loses updates and sees
    the gap in ``uniqueId``. PvaPy's distributor (``_[pydistributor=...]``) is a plugin of
    PvaPy's own server, not of p4p's, which refuses such a request: to share this
    channel's frames among PvaPy consumers, put ``pvapy-mirror-server`` in front (see
    the README).
    """

    def __init__(self, args):
        self.channel = str(args["channel"])
        self.wait_clients = int(args.get("wait_clients", 0))
        if self.wait_clients < 0:
            raise ValueError("wait_clients must be 0 or more")
        self.type = NTNDArray.buildType()
        self.server = None
        self.pv = None
        self.reset_stats()

    def reset_stats(self):
        self.stats = {"served": 0}

    def get_stats(self):
        return dict(self.stats)

    def configure(self, args):
        for key in args:
            raise ValueError(f"{key} cannot change while the stage runs; set it in the pipeline file")

    def start(self):
        self.pv = SharedPV(initial=Value(self.type, {"uniqueId": 0}))
        self.server = Server(providers=[{self.channel: self.pv}])
        if self.wait_clients:
            self._wait_for_clients()

    def _monitors(self):
        """Clients monitoring the channel now, from the server's report (p4p offers no
        count of subscribers): one line per operation, ending in its kind."""
        count = 0
        for line in self.server.tostr(5).splitlines():
            words = line.split()
            if words and words[-1] == "MONITOR" and self.channel in words:
                count += 1
        return count

    def _wait_for_clients(self):
        # The server tells no one when a client subscribes: look at its report until
        # enough have, or the worker is asked to stop.
        while self._monitors() < self.wait_clients:
            if _streamd.stopping():
                return
            time.sleep(0.02)

    def process(self, frame):
        pixels = frame.array
        # The slot is released when process returns: the update keeps its own copy.
        flat = np.array(pixels, copy=True).reshape(-1)
        member = NTNDArray._code2u[flat.dtype.char]
        attrs = dict(frame.attrs)
        if "ColorMode" not in attrs:
            if pixels.ndim == 2:
                attrs["ColorMode"] = 0
            elif pixels.ndim == 3 and pixels.shape[-1] == 3:
                attrs["ColorMode"] = 2  # RGB1: AD dims [3, nx, ny] are NumPy's (ny, nx, 3)
        seconds, nanoseconds = divmod(int(frame.timestamp_ns), 1_000_000_000)
        stamp = {"secondsPastEpoch": seconds, "nanoseconds": nanoseconds}
        self.pv.post(Value(self.type, {
            "value": (member, flat),
            "compressedSize": flat.nbytes,
            "uncompressedSize": flat.nbytes,
            "uniqueId": int(frame.id) & 0x7FFF_FFFF,
            "dimension": [
                {"size": n, "offset": 0, "fullSize": n, "binning": 1, "reverse": False}
                for n in reversed(pixels.shape)
            ],
            "attribute": [{"name": k, "value": v} for k, v in attrs.items()],
            "timeStamp": stamp,
            "dataTimeStamp": stamp,
        }))
        self.stats["served"] += 1
        return None

    def stop(self):
        if self.server is not None:
            self.server.stop()
            self.server = None


class MetadataChannels:
    """Metadata channel values from EPICS PVs: ``pva://`` through p4p, ``ca://`` through
    PvaPy (p4p speaks pvAccess only). Run by a pva or Python source that has
    ``metadata = { ring = ..., channels = "pva://x,ca://y" }``; ``take()`` hands every
    update that arrived since the last call to streamd, which publishes it into the
    metadata ring before the next frame.

    An update whose timestamp was never set (a record before its first processing)
    cannot be matched to a frame by time: it is counted in ``metadata_unstamped`` and
    not published; one whose value is not a number in ``metadata_not_numeric``.
    """

    def __init__(self, args):
        self.channels = list(args["channels"])
        self.queue_size = int(args.get("queue_size", 0))
        self.context = None
        self.subscriptions = []
        self.ca_updates = collections.deque()
        self.ca_channels = []
        self.reset_stats()
        for index, channel in enumerate(self.channels):
            if channel["protocol"] == "pva":
                if self.context is None:
                    self.context = Context("pva", nt=False, useenv=True)
                request = _request(self.queue_size, "field(value,timeStamp)")
                self.subscriptions.append(
                    (index, self.context.monitor(channel["pv"], lambda: None, request=request))
                )
            else:
                self._monitor_ca(index, channel["pv"])

    def _monitor_ca(self, index, pv):
        try:
            import pvaccess
        except ImportError:
            raise ImportError(
                f"ca://{pv} needs PvaPy for Channel Access (p4p speaks pvAccess only): "
                "install it with `python -m pip install pvapy`"
            ) from None
        channel = pvaccess.Channel(pv, pvaccess.CA)

        def update(value, index=index):
            # PvaPy calls this from its own thread; the deque takes it without a lock.
            self.ca_updates.append((index, value))

        channel.monitor(update, _request(self.queue_size, "field(value,timeStamp)"))
        self.ca_channels.append(channel)

    def reset_stats(self):
        self.stats = dict.fromkeys(
            ("metadata_updates", "metadata_unstamped", "metadata_not_numeric",
             "metadata_disconnects"), 0
        )

    def get_stats(self):
        return dict(self.stats)

    def _value(self, index, value, stamp_ns, out):
        self.stats["metadata_updates"] += 1
        if stamp_ns is None:
            self.stats["metadata_unstamped"] += 1
        elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            out.append((index, stamp_ns, float(value)))
        else:
            self.stats["metadata_not_numeric"] += 1

    def take(self):
        out = []
        for index, subscription in self.subscriptions:
            while (update := subscription.pop()) is not None:
                if isinstance(update, Exception):
                    self.stats["metadata_disconnects"] += isinstance(update, Disconnected)
                    continue
                self._value(index, update["value"], _stamp_ns(update), out)
        while self.ca_updates:
            index, value = self.ca_updates.popleft()
            stamp = value["timeStamp"]
            seconds = stamp["secondsPastEpoch"]
            stamp_ns = seconds * 1_000_000_000 + stamp["nanoseconds"] if seconds else None
            self._value(index, value["value"], stamp_ns, out)
        return out
