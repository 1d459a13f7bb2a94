#!/usr/bin/env python3
"""Checks that an NXmx master file imports in the readers scientists use: DIALS's
reader (the `nxmx` package, read the way dxtbx's FormatNXmx reads it), h5py (+
hdf5plugin for bitshuffle-LZ4, filter 32008), silx and fabio. Independent of streamd's
own code; the tests run it on masters streamd writes. scripts/make_nxmx_reference.py
writes the structure it expects.

    check_nxmx.py MASTER [--expect-ids FILE] [--ids-path /entry/data/frame_id]

- opens MASTER and every file it links (virtual-dataset sources, external links) with
  a plain h5py.File(path, "r"): a file still flagged "open for write" fails here;
- nxmx: the NXmx entry, the sample's depends_on chain and goniometer axes, instrument
  name, source name, beam wavelength, the detector's depends_on chain, each module's
  data_origin/data_size and fast/slow pixel-direction chains, saturation_value, sensor
  material (one dxtbx knows) and thickness, start_time, end_time or end_time_estimated,
  and the number of images dxtbx would count;
- /entry/data/data through h5py; every virtual mapping of every virtual dataset in the
  master equals its source read directly (a missing or unreadable source would
  otherwise read as fill values, silently); the per-frame ids (--ids-path) strictly
  increase and, with --expect-ids (one id a line), equal that set;
- silx.io.open: the data shape and the default NXdata; fabio.open: nframes and frames
  first, middle and last equal /entry/data/data[k].

Prints one JSON object on its last line; on any failure exits 1 with a one-line reason
on stderr.
"""
import argparse
import json
import os
import sys
import warnings

import h5py
import hdf5plugin  # noqa: F401  (registers filter 32008 with h5py)
import numpy as np

KNOWN_SENSOR_MATERIALS = {"Si", "Silicon", "CdTe", "GaAs"}  # dxtbx.nexus
MCSTAS_TO_IMGCIF = np.diag([-1, 1, -1])


class Fail(Exception):
    pass


def need(what, fn):
    """Runs fn(); any exception (or a None result) fails naming `what`."""
    try:
        value = fn()
    except Fail:
        raise
    except Exception as e:  # noqa: BLE001 - the reason goes in the message
        raise Fail(f"{what}: {type(e).__name__}: {e}".replace("\n", " ")) from e
    if value is None:
        raise Fail(f"{what}: missing")
    return value


def text(value):
    if isinstance(value, np.ndarray) and value.shape in ((), (1,)):
        value = value.reshape(-1)[0]
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode()
    return str(value)


def open_plain(path, what):
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise Fail(f"cannot open {what} {path} with h5py.File(path, 'r'): {e}".replace("\n", " ")) from e


# ---- the files a master reaches -------------------------------------------------------
def walk_master(f):
    """Yields (path, obj_or_link) for every object of the master, without following
    external links (returned as h5py.ExternalLink) or visiting an object twice."""
    seen = set()
    stack = [f]
    while stack:
        g = stack.pop()
        for name in g:
            link = g.get(name, getlink=True)
            path = g.name.rstrip("/") + "/" + name
            if isinstance(link, h5py.ExternalLink):
                yield path, link
                continue
            obj = g.get(name)
            if obj is None:
                raise Fail(f"{path}: dangling link")
            if obj.id in seen:
                continue
            seen.add(obj.id)
            yield path, obj
            if isinstance(obj, h5py.Group):
                stack.append(obj)


def resolve(master_dir, name):
    return name if os.path.isabs(name) else os.path.normpath(os.path.join(master_dir, name))


def box(space, shape):
    """(start, stop) per dimension of a selection that must be one block; `shape` is
    the extent an "all" selection stands for."""
    if space.get_select_type() == h5py.h5s.SEL_ALL:
        return tuple(slice(0, n) for n in shape)
    lo, hi = space.get_select_bounds()
    shape = tuple(b - a + 1 for a, b in zip(lo, hi))
    if space.get_select_npoints() != int(np.prod(shape)):
        raise Fail("a virtual mapping that is not one block")
    return tuple(slice(a, b + 1) for a, b in zip(lo, hi))


def check_links(master_path, f):
    """Opens every linked file plainly and checks every virtual mapping against its
    source. Returns (linked file paths, {virtual dataset: number of mappings})."""
    master_dir = os.path.dirname(os.path.abspath(master_path))
    opened, vds = {}, {}

    def get(path):
        if path not in opened:
            opened[path] = open_plain(path, "linked file")
        return opened[path]

    try:
        for path, obj in walk_master(f):
            if isinstance(obj, h5py.ExternalLink):
                target = get(resolve(master_dir, obj.filename))
                if obj.path not in target:
                    raise Fail(f"{path}: external link to {obj.filename}:{obj.path}, which is missing")
                continue
            if not (isinstance(obj, h5py.Dataset) and obj.is_virtual):
                continue
            sources = obj.virtual_sources()
            covered = np.zeros(obj.shape[0] if obj.shape else 1, dtype=bool)
            for vs in sources:
                if vs.file_name == ".":
                    src_file = f
                else:
                    if os.path.isabs(vs.file_name):
                        raise Fail(f"{path}: virtual source {vs.file_name} is an absolute path (the folder could not move)")
                    src_file = get(resolve(master_dir, vs.file_name))
                if vs.dset_name not in src_file:
                    raise Fail(f"{path}: virtual source {vs.file_name}:{vs.dset_name} is missing")
                src = src_file[vs.dset_name]
                vsel, ssel = box(vs.vspace, obj.shape), box(vs.src_space, src.shape)
                for sl, n in zip(ssel, src.shape):
                    if sl.stop > n:
                        raise Fail(f"{path}: mapping reads {vs.file_name}:{vs.dset_name} rows up to {sl.stop}, the source has {n}")
                if vsel:
                    covered[vsel[0]] = True
                rows = vsel[0].stop - vsel[0].start if vsel else 1
                if vsel and obj.dtype.itemsize * np.prod([sl.stop - sl.start for sl in vsel]) > 64 << 20:
                    # a large block: its first and last frames
                    pick = sorted({0, rows - 1})
                    got = np.stack([obj[(vsel[0].start + i,) + vsel[1:]] for i in pick])
                    want = np.stack([src[(ssel[0].start + i,) + ssel[1:]] for i in pick])
                else:
                    got, want = obj[vsel], src[ssel]
                if got.shape != want.shape or not np.array_equal(got, want):
                    raise Fail(f"{path}{[(s.start, s.stop) for s in vsel]} differs from "
                               f"{vs.file_name}:{vs.dset_name}{[(s.start, s.stop) for s in ssel]} "
                               "(a source the library could not open reads as fill values)")
            if not covered.all():
                raise Fail(f"{path}: rows {np.flatnonzero(~covered)[:8].tolist()} have no virtual source")
            vds[path] = len(sources)
    finally:
        for h in opened.values():
            h.close()
    return sorted(opened), vds


# ---- nxmx / dxtbx -----------------------------------------------------------------------
def check_nxmx(f, n_frames):
    import nxmx

    out = {}
    entries = need("nxmx: NXentry with definition 'NXmx' (scalar string)", lambda: nxmx.NXmx(f).entries)
    if not entries:
        raise Fail("nxmx: no NXentry whose 'definition' dataset is 'NXmx'")
    entry = entries[0]
    # dxtbx's FormatNXmx.understand reads definition with [()]: it must be a scalar
    need("/entry/definition (a scalar string, as dxtbx reads it)",
         lambda: nxmx.h5str(entry._handle["definition"][()]) == "NXmx" or None)

    # sample and goniometer
    samples = entry.samples
    if not samples:
        raise Fail("nxmx: no NXsample in the entry")
    sample = samples[0]
    top = need("nxmx: /entry/sample/depends_on (the goniometer chain)", lambda: sample.depends_on)
    chain = need("nxmx: sample depends_on chain", lambda: nxmx.get_dependency_chain(top))
    need("nxmx: sample chain transformation", lambda: nxmx.get_cumulative_transformation(chain))
    axes = need("nxmx: goniometer rotation axes", lambda: nxmx.get_rotation_axes(chain))
    if len(axes.axes) == 0:
        raise Fail("nxmx: the sample's depends_on chain has no rotation axis")
    out["goniometer"] = [
        {"name": str(nm), "vector": [float(x) for x in v], "angle": float(a), "scan": bool(s)}
        for nm, v, a, s in zip(axes.names, axes.axes, axes.angles, axes.is_scan_axis)]
    # dxtbx.nexus.get_dxtbx_scan: the first varying rotation axis, else the first
    # varying axis, else the axis depends_on names; its length is the number of images
    scan_axis = next((t for t in chain if t.transformation_type == "rotation" and len(t) > 1
                      and not np.all(t[()] == t[0])), None) \
        or next((t for t in chain if len(t) > 1 and not np.all(t[()] == t[0])), None) or top
    dxtbx_images = len(scan_axis)
    out["dxtbx_images"] = dxtbx_images
    if dxtbx_images != n_frames:
        raise Fail(f"dxtbx would count {dxtbx_images} images (the length of {scan_axis.path}), "
                   f"/entry/data/data has {n_frames}: give the axis one value per frame")

    # instrument, source, beam
    if not entry.instruments:
        raise Fail("nxmx: no NXinstrument in the entry")
    inst = entry.instruments[0]
    out["instrument"] = need("nxmx: /entry/instrument/name", lambda: inst.name)
    out["source"] = need("nxmx: /entry/source/name (NXsource must be a child of /entry)",
                         lambda: entry.source.name)
    if not inst.beams:
        raise Fail("nxmx: no NXbeam in /entry/instrument (dxtbx reads instrument.beams[0])")
    beam = inst.beams[0]
    wl = need("nxmx: /entry/instrument/beam/incident_wavelength (with units)",
              lambda: np.asarray(beam.incident_wavelength.to("angstrom").magnitude, dtype=float))
    if wl.size != 1 and wl.shape[0] != n_frames:
        raise Fail(f"incident_wavelength has {wl.size} values: one, or one per frame")
    if not np.all(wl > 0):
        raise Fail("incident_wavelength is not positive")
    out["wavelength_A"] = float(wl.reshape(-1)[0])
    for k in ("flux", "total_flux"):
        v = need(f"nxmx: beam {k}", lambda k=k: (getattr(beam, k) is not None and str(getattr(beam, k))) or "")
        if v:
            out[k] = v

    # detector
    if not inst.detectors:
        raise Fail("nxmx: no NXdetector in /entry/instrument")
    det = inst.detectors[0]
    dtop = need("nxmx: /entry/instrument/detector/depends_on (a scalar string)", lambda: det.depends_on)
    dchain = need("nxmx: detector depends_on chain", lambda: nxmx.get_dependency_chain(dtop))
    need("nxmx: detector chain transformation", lambda: nxmx.get_cumulative_transformation(dchain))
    out["detector_chain"] = [t.path for t in dchain]
    out["saturation_value"] = need("nxmx: /entry/instrument/detector/saturation_value", lambda: det.saturation_value)
    material = need("nxmx: /entry/instrument/detector/sensor_material", lambda: det.sensor_material)
    if material not in KNOWN_SENSOR_MATERIALS:
        raise Fail(f"sensor_material {material!r}: dxtbx knows only {sorted(KNOWN_SENSOR_MATERIALS)}")
    thickness = need("nxmx: /entry/instrument/detector/sensor_thickness (with units)",
                     lambda: float(det.sensor_thickness.to("mm").magnitude))
    out["sensor"] = f"{material} {thickness:g} mm"
    modules = det.modules
    if not modules:
        raise Fail("nxmx: no NXdetector_module in the detector")
    out["modules"] = []
    for m in modules:
        where = f"nxmx: {m.path}"
        origin = need(f"{where}/data_origin", lambda: np.asarray(m.data_origin))
        size = need(f"{where}/data_size", lambda: np.asarray(m.data_size))
        if origin.ndim != 1 or size.shape != origin.shape or size.size not in (2, 3):
            raise Fail(f"{where}: data_origin/data_size must be 2 (or 3) values, slow to fast")
        panel = {}
        for name in ("fast_pixel_direction", "slow_pixel_direction"):
            ax = need(f"{where}/{name}", lambda name=name: getattr(m, name))
            need(f"{where}/{name}@transformation_type", lambda: ax.transformation_type)
            vec = need(f"{where}/{name}@vector", lambda: np.asarray(ax.vector, dtype=float))
            if vec.shape != (3,):
                raise Fail(f"{where}/{name}@vector must be 3 numbers")
            panel[name] = need(f"{where}/{name} (a scalar pixel size with length units)",
                               lambda: float(ax[()].to("mm").magnitude.item()))
            axdep = need(f"{where}/{name}@depends_on (dxtbx follows it to place the panel)",
                         lambda: ax.depends_on)
            c = need(f"{where}/{name} depends_on chain", lambda: nxmx.get_dependency_chain(axdep))
            need(f"{where}/{name} chain transformation", lambda: nxmx.get_cumulative_transformation(c))
            need(f"{where}/{name}@offset", lambda: ax.offset is None or ax.offset.to("mm"))
        # the flat-panel frame dxtbx.nexus.get_dxtbx_detector builds (imgCIF, mm)
        fast, slow = m.fast_pixel_direction, m.slow_pixel_direction

        def rot(ax):
            r = [t for t in nxmx.get_dependency_chain(ax.depends_on) if t.transformation_type == "rotation"]
            return nxmx.get_cumulative_transformation(r)[0, :3, :3] if r else np.identity(3)

        A = nxmx.get_cumulative_transformation(nxmx.get_dependency_chain(fast.depends_on))
        off = fast.offset.to("mm").magnitude if fast.offset is not None else np.zeros(3)
        panel["origin_mm"] = [round(float(x), 6) for x in MCSTAS_TO_IMGCIF @ (off + A[0, :3, 3])]
        panel["fast_axis"] = [float(x) for x in MCSTAS_TO_IMGCIF @ rot(fast) @ fast.vector]
        panel["slow_axis"] = [float(x) for x in MCSTAS_TO_IMGCIF @ rot(slow) @ slow.vector]
        panel["data_origin"], panel["data_size"] = origin.tolist(), size.tolist()
        out["modules"].append(panel)

    start = need("nxmx: /entry/start_time (ISO 8601)", lambda: entry.start_time)
    end = need("nxmx: /entry/end_time", lambda: entry.end_time) if "end_time" in entry else \
        need("nxmx: /entry/end_time or /entry/end_time_estimated (ISO 8601)", lambda: entry.end_time_estimated)
    out["start_time"], out["end_time"] = start.isoformat(), end.isoformat()

    if not entry.data:
        raise Fail("nxmx: no NXdata in the entry")
    nxdata = entry.data[0]
    # dxtbx: nxdata[nxdata.signal], or the first member when there is no signal
    signal = nxmx.h5str(nxdata.signal) if nxdata.signal is not None else None
    picked = nxdata[signal] if signal else list(nxdata.values())[0]
    if picked.name != "/entry/data/data":
        raise Fail(f"dxtbx would read frames from {picked.name}: set /entry/data@signal = 'data'")
    return out


# ---- main -------------------------------------------------------------------------------
def check(args):
    result = {}
    f = open_plain(args.master, "master")
    with f:
        linked, vds = check_links(args.master, f)
        result["linked_files"] = [os.path.relpath(p, os.path.dirname(os.path.abspath(args.master))) for p in linked]
        result["virtual"] = vds

        if "/entry/data/data" not in f:
            raise Fail("no /entry/data/data")
        data = f["/entry/data/data"]
        if data.ndim != 3:
            raise Fail(f"/entry/data/data has shape {data.shape}: (frames, slow, fast)")
        n = data.shape[0]
        if n == 0:
            raise Fail("/entry/data/data has no frames")
        result["frames"] = n
        result["frame_shape"] = list(data.shape[1:])
        result["dtype"] = str(data.dtype)
        sample = sorted({0, n // 2, n - 1})
        frames = {k: data[k] for k in sample}

        if args.ids_path not in f:
            raise Fail(f"no {args.ids_path} (the per-frame ids) in the master")
        ids = f[args.ids_path][()]
        if ids.ndim != 1 or ids.shape[0] != n or ids.dtype.kind not in "iu":
            raise Fail(f"{args.ids_path} is {ids.dtype}{ids.shape}: integers, one per frame ({n})")
        increasing = bool(np.all(np.diff(ids.astype(np.int64)) > 0))
        result.update(first_id=int(ids[0]), last_id=int(ids[-1]), ids_increasing=increasing)
        if not increasing:
            bad = int(np.flatnonzero(np.diff(ids.astype(np.int64)) <= 0)[0])
            raise Fail(f"{args.ids_path} not strictly increasing at row {bad + 1}: "
                       f"{int(ids[bad])} then {int(ids[bad + 1])}")
        if args.expect_ids:
            with open(args.expect_ids) as fh:
                expected = np.array(sorted(int(x) for x in fh.read().split()), dtype=np.int64)
            if len(expected) != n or not np.array_equal(expected, ids.astype(np.int64)):
                missing = sorted(set(expected.tolist()) - set(ids.tolist()))[:8]
                extra = sorted(set(ids.tolist()) - set(expected.tolist()))[:8]
                raise Fail(f"ids differ from {args.expect_ids}: {n} frames, {len(expected)} expected; "
                           f"missing {missing}, unexpected {extra}")
            result["ids_expected"] = True
        extra = [k for k in f["/entry/data"] if k.startswith("data") and k != "data"]
        if extra:
            raise Fail(f"/entry/data/{extra[0]}: fabio stacks every /entry/data member whose name "
                       "starts with 'data' after /entry/data/data (so would count frames twice); "
                       "keep per-file links elsewhere")
        per_frame = {}
        for group in ("/entry/data", "/entry/metadata"):
            if group in f:
                for name, ds in f[group].items():
                    path = f"{group}/{name}"
                    if path == "/entry/data/data" or not isinstance(ds, h5py.Dataset):
                        continue
                    if ds.ndim < 1 or ds.shape[0] != n:
                        raise Fail(f"{path} has shape {ds.shape}: one value per frame ({n})")
                    per_frame[path] = str(ds.dtype)
        result["per_frame"] = per_frame

        result.update(check_nxmx(f, n))
        result["nxmx"] = "ok"

    # silx
    import silx.io
    import silx.io.nxdata

    try:
        with silx.io.open(args.master) as h:
            result["silx_shape"] = list(h["/entry/data/data"].shape)
            default = silx.io.nxdata.get_default(h)
            result["silx_default_nxdata"] = default.signal.name if default is not None and default.is_valid else None
    except Fail:
        raise
    except Exception as e:  # noqa: BLE001
        raise Fail(f"silx: {type(e).__name__}: {e}".replace("\n", " ")) from e
    if result["silx_shape"] != [n] + result["frame_shape"]:
        raise Fail(f"silx reads shape {result['silx_shape']}")

    # fabio
    import fabio

    try:
        img = fabio.open(args.master)
    except Exception as e:  # noqa: BLE001
        raise Fail(f"fabio.open: {type(e).__name__}: {e}".replace("\n", " ")) from e
    try:
        result["fabio_class"] = type(img).__name__
        result["fabio_frames"] = int(img.nframes)
        if img.nframes != n:
            raise Fail(f"fabio counts {img.nframes} frames, /entry/data/data has {n} "
                       "(fabio stacks every /entry/data member whose name starts with 'data')")
        for k in sample:
            got = img.getframe(k).data if n > 1 else img.data
            if got is None or not np.array_equal(np.asarray(got), frames[k]):
                raise Fail(f"fabio frame {k} differs from /entry/data/data[{k}]")
        result["fabio_frames_checked"] = sample
    finally:
        img.close()
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("master")
    p.add_argument("--expect-ids", help="a file of frame ids, one per line")
    p.add_argument("--ids-path", default="/entry/data/frame_id")
    args = p.parse_args()
    warnings.simplefilter("ignore")
    try:
        result = check(args)
    except Fail as e:
        print(f"check_nxmx: {args.master}: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # noqa: BLE001
        print(f"check_nxmx: {args.master}: unexpected {type(e).__name__}: {e}".replace("\n", " "), file=sys.stderr)
        sys.exit(1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
