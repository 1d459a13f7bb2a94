#!/usr/bin/env python3
"""Writes a reference NXmx data set: the minimal master-file structure that DIALS's
reader (the `nxmx` package, as dxtbx's FormatNXmx uses it), silx, fabio and h5py all
accept, over data files whose frames interleave. It documents the target of streamd's
HDF5 writer; scripts/check_nxmx.py checks a master against it.

    make_nxmx_reference.py OUTDIR [--prefix ref] [--compression bslz4|none]
                           [--omit /entry/source/name ...] [--crash-data-file 2]

OUTDIR gets {prefix}_data_000001.h5, {prefix}_data_000002.h5, {prefix}_master.h5 and
expected_ids.txt, and the tree of the master is printed. Data file 1 holds frame ids
0-3 and 8-11 (in that order), data file 2 holds 4-7, so the master's virtual datasets
need three mappings each. All names in the master are relative: the folder can move.

--omit PATH leaves PATH out of the master (to make a broken one); --crash-data-file K
writes data file K in a child process that enables SWMR and dies without closing it,
leaving the file flagged "open for write" (as a killed writer does).

Strings are written as streamd writes them: scalar, fixed-length ASCII, NULLTERM, sized
to the text (variable-length UTF-8 works as well with every reader checked).
"""
import argparse
import os
import sys

import h5py
import hdf5plugin
import numpy as np

# Detector: 6 x 8 pixels (slow x fast), u16, 75 um pixels, beam centre at pixel
# (fast 4.0, slow 3.0), 100 mm from the sample, 1 Angstrom.
NY, NX = 6, 8
DTYPE = np.uint16
PIXEL_MM = 0.075
BEAM_CENTRE_PX = (4.0, 3.0)  # (fast, slow)
DISTANCE_MM = 100.0
WAVELENGTH_A = 1.0
SATURATION = 65534
FILES = {1: [0, 1, 2, 3, 8, 9, 10, 11], 2: [4, 5, 6, 7]}  # frame ids, in file order
METADATA = {"exposure_ns": np.uint64, "gain_mode": np.uint8}
LIBVER = ("v110", "v110")  # readable by libhdf5 1.10 (h5dump, streamd's own library)


def frame(frame_id):
    return ((frame_id * 1000 + np.arange(NY * NX)) % 65535).astype(DTYPE).reshape(NY, NX)


def timestamp_ns(frame_id):
    return 1_780_000_000_000_000_000 + frame_id * 1_000_000


def metadata_value(name, frame_id):
    return {"exposure_ns": 500_000 + frame_id, "gain_mode": frame_id % 3}[name]


# ---- strings the way streamd writes them: fixed length, NULLTERM, sized to the text --
def _str_type(text):
    t = h5py.h5t.C_S1.copy()
    t.set_size(max(len(text), 1))
    t.set_strpad(h5py.h5t.STR_NULLTERM)
    return t


def str_attr(obj, name, text):
    data = np.array(text.encode("ascii"), dtype=f"S{max(len(text), 1)}")
    t = _str_type(text)
    attr = h5py.h5a.create(obj.id, name.encode(), t, h5py.h5s.create(h5py.h5s.SCALAR))
    attr.write(data, mtype=t)  # memory type = file type: no conversion (which would
    #                            put a terminator over the last character)


def str_dataset(group, name, text):
    data = np.array(text.encode("ascii"), dtype=f"S{max(len(text), 1)}")
    t = _str_type(text)
    ds = h5py.h5d.create(group.id, name.encode(), t, h5py.h5s.create(h5py.h5s.SCALAR))
    ds.write(h5py.h5s.ALL, h5py.h5s.ALL, data, mtype=t)


def nx_group(parent, name, nx_class):
    g = parent.create_group(name)
    str_attr(g, "NX_class", nx_class)
    return g


def number(group, name, value, dtype, units=None):
    ds = group.create_dataset(name, data=np.asarray(value, dtype=dtype))
    if units:
        str_attr(ds, "units", units)
    return ds


def axis(group, name, value, dtype, units, kind, vector, offset=(0.0, 0.0, 0.0), depends_on="."):
    """An NXtransformations axis: a dataset with the five attributes nxmx reads."""
    ds = number(group, name, value, dtype, units)
    str_attr(ds, "transformation_type", kind)
    ds.attrs.create("vector", np.asarray(vector, dtype=np.float64))
    ds.attrs.create("offset", np.asarray(offset, dtype=np.float64))
    str_attr(ds, "depends_on", depends_on)
    return ds


# ---- data files -----------------------------------------------------------------------
def write_data_file(path, ids, compression, crash=False):
    """One data file as streamd writes them (SWMR, libver >= 1.10, one frame a chunk)."""
    if crash:
        pid = os.fork()
        if pid:
            _, status = os.waitpid(pid, 0)
            if status != 0:
                sys.exit(f"child writing {path} failed")
            return
    f = h5py.File(path, "w", libver=LIBVER)
    entry = nx_group(f, "entry", "NXentry")
    data = nx_group(entry, "data", "NXdata")
    meta = nx_group(entry, "metadata", "NXcollection")
    n = len(ids)
    kwargs = dict(hdf5plugin.Bitshuffle(cname="lz4")) if compression == "bslz4" else {}
    d = data.create_dataset("data", shape=(n, NY, NX), maxshape=(None, NY, NX),
                            chunks=(1, NY, NX), dtype=DTYPE, **kwargs)
    fid = data.create_dataset("frame_id", shape=(n,), maxshape=(None,), chunks=(1024,), dtype=np.uint64)
    ts = data.create_dataset("timestamp_ns", shape=(n,), maxshape=(None,), chunks=(1024,), dtype=np.uint64)
    mds = {k: meta.create_dataset(k, shape=(n,), maxshape=(None,), chunks=(1024,), dtype=t)
           for k, t in METADATA.items()}
    if crash:
        f.swmr_mode = True
    for row, i in enumerate(ids):
        d[row] = frame(i)
        fid[row] = i
        ts[row] = timestamp_ns(i)
        for k, ds in mds.items():
            ds[row] = metadata_value(k, i)
    if crash:
        f.flush()
        os._exit(0)  # dies with the file open: its superblock stays flagged
    f.close()


# ---- the virtual-dataset layout ---------------------------------------------------------
def runs(files):
    """Maps master rows to file rows in frame-id order: a list of
    (master_start, count, file_index, file_start), one per VDS mapping."""
    rows = sorted((i, k, r) for k, ids in files.items() for r, i in enumerate(ids))
    out = []
    for m, (_, k, r) in enumerate(rows):
        if out and out[-1][2] == k and out[-1][3] + out[-1][1] == r and out[-1][0] + out[-1][1] == m:
            out[-1][1] += 1
        else:
            out.append([m, 1, k, r])
    return [tuple(x) for x in out]


def virtual(group, name, files, names, src_path, shape_tail, dtype, fillvalue):
    n = sum(len(v) for v in files.values())
    layout = h5py.VirtualLayout(shape=(n,) + shape_tail, dtype=dtype)
    for m0, count, k, r0 in runs(files):
        src = h5py.VirtualSource(names[k], src_path, shape=(len(files[k]),) + shape_tail)
        layout[m0:m0 + count] = src[r0:r0 + count]
    return group.create_virtual_dataset(name, layout, fillvalue=fillvalue)


# ---- the master -------------------------------------------------------------------------
def write_master(path, names, omit):
    n = sum(len(v) for v in FILES.values())
    f = h5py.File(path, "w", libver=LIBVER)
    str_attr(f, "default", "entry")                      # silx: default plot
    entry = nx_group(f, "entry", "NXentry")
    str_attr(entry, "default", "data")
    str_dataset(entry, "definition", "NXmx")             # scalar: dxtbx reads [()]
    str_dataset(entry, "start_time", "2026-05-28T10:00:00.000Z")
    str_dataset(entry, "end_time", "2026-05-28T10:00:00.012Z")  # or end_time_estimated

    data = nx_group(entry, "data", "NXdata")
    str_attr(data, "signal", "data")
    virtual(data, "data", FILES, names, "/entry/data/data", (NY, NX), DTYPE, 0)
    virtual(data, "frame_id", FILES, names, "/entry/data/frame_id", (), np.uint64, np.iinfo(np.uint64).max)
    virtual(data, "timestamp_ns", FILES, names, "/entry/data/timestamp_ns", (), np.uint64, 0)
    meta = nx_group(entry, "metadata", "NXcollection")
    for k, t in METADATA.items():
        virtual(meta, k, FILES, names, f"/entry/metadata/{k}", (), t, 0)

    sample = nx_group(entry, "sample", "NXsample")
    str_dataset(sample, "name", "sample")
    str_dataset(sample, "depends_on", "/entry/sample/transformations/omega")
    st = nx_group(sample, "transformations", "NXtransformations")
    # one value PER FRAME: dxtbx takes the number of images from this axis' length
    axis(st, "omega", np.zeros(n), np.float64, "deg", "rotation", (-1.0, 0.0, 0.0))

    source = nx_group(entry, "source", "NXsource")       # a child of /entry, not instrument
    str_dataset(source, "name", "streamd source")

    inst = nx_group(entry, "instrument", "NXinstrument")
    str_dataset(inst, "name", "streamd")
    beam = nx_group(inst, "beam", "NXbeam")
    number(beam, "incident_wavelength", WAVELENGTH_A, np.float64, "angstrom")
    sample["beam"] = beam                                 # hard link: older readers look here

    det = nx_group(inst, "detector", "NXdetector")
    str_dataset(det, "depends_on", "/entry/instrument/detector/transformations/translation")
    str_dataset(det, "sensor_material", "Si")            # dxtbx knows Si, Silicon, CdTe, GaAs
    number(det, "sensor_thickness", 0.45, np.float64, "mm")
    number(det, "saturation_value", SATURATION, np.int64)
    dt = nx_group(det, "transformations", "NXtransformations")
    axis(dt, "translation", DISTANCE_MM, np.float64, "mm", "translation", (0.0, 0.0, 1.0))
    mod = nx_group(det, "module", "NXdetector_module")
    number(mod, "data_origin", [0, 0], np.int32)
    number(mod, "data_size", [NY, NX], np.int32)        # slow, fast
    bx, by = BEAM_CENTRE_PX
    axis(mod, "module_offset", 0.0, np.float64, "mm", "translation", (1.0, 0.0, 0.0),
         offset=(bx * PIXEL_MM, by * PIXEL_MM, 0.0),
         depends_on="/entry/instrument/detector/transformations/translation")
    axis(mod, "fast_pixel_direction", PIXEL_MM, np.float64, "mm", "translation", (-1.0, 0.0, 0.0),
         depends_on="/entry/instrument/detector/module/module_offset")
    axis(mod, "slow_pixel_direction", PIXEL_MM, np.float64, "mm", "translation", (0.0, -1.0, 0.0),
         depends_on="/entry/instrument/detector/module/module_offset")

    for p in omit:
        if p not in f:
            sys.exit(f"--omit {p}: no such object")
        del f[p]
    f.close()


# ---- tree -------------------------------------------------------------------------------
def show(value):
    if isinstance(value, bytes):
        return repr(value.decode())
    if isinstance(value, np.ndarray) and value.ndim:
        return "[" + ", ".join(str(v) for v in value.tolist()) + "]"
    if isinstance(value, (np.ndarray, np.generic)):
        return str(value.item() if hasattr(value, "item") else value)
    return repr(value)


def dtype_name(obj):
    t = obj.get_type() if hasattr(obj, "get_type") else obj.id.get_type()
    if isinstance(t, h5py.h5t.TypeStringID):
        pad = {0: "NULLTERM", 1: "NULLPAD", 2: "SPACEPAD"}.get(t.get_strpad(), "?")
        return "vlen str" if t.is_variable_str() else f"str[{t.get_size()}] {pad}"
    return str(obj.dtype)


def tree(f):
    lines = []

    def attrs(obj, indent):
        for k in obj.attrs:
            a = obj.attrs.get_id(k)
            v = obj.attrs[k]
            lines.append(f"{indent}@{k} = {show(v)}  ({dtype_name(a)})")

    seen = {}

    def walk(g, indent):
        for name in g:
            link = g.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                lines.append(f"{indent}{name} -> external {link.filename}:{link.path}")
                continue
            if isinstance(link, h5py.SoftLink):
                lines.append(f"{indent}{name} -> soft link {link.path}")
                continue
            obj = g[name]
            path = g.name.rstrip("/") + "/" + name
            if obj.id in seen:
                lines.append(f"{indent}{name} -> hard link to {seen[obj.id]}")
                continue
            seen[obj.id] = path
            if isinstance(obj, h5py.Group):
                lines.append(f"{indent}{name}/")
                attrs(obj, indent + "    ")
                walk(obj, indent + "    ")
            else:
                desc = f"{indent}{name}  {dtype_name(obj)} {obj.shape}"
                if obj.is_virtual:
                    desc += "  VIRTUAL"
                elif obj.size <= 16:
                    desc += f" = {show(obj[()])}"
                lines.append(desc)
                attrs(obj, indent + "    ")
                if obj.is_virtual:
                    for vs in obj.virtual_sources():
                        (a0, *_), (a1, *_) = vs.vspace.get_select_bounds()
                        (b0, *_), (b1, *_) = vs.src_space.get_select_bounds()
                        lines.append(f"{indent}    [{a0}:{a1 + 1}] <- {vs.file_name}:{vs.dset_name}[{b0}:{b1 + 1}]")

    attrs(f, "")
    walk(f, "")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("outdir")
    p.add_argument("--prefix", default="ref")
    p.add_argument("--compression", choices=["bslz4", "none"], default="bslz4")
    p.add_argument("--omit", action="append", default=[])
    p.add_argument("--crash-data-file", type=int, choices=sorted(FILES))
    args = p.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    names = {k: f"{args.prefix}_data_{k:06d}.h5" for k in FILES}   # relative names
    for k, ids in FILES.items():
        write_data_file(os.path.join(args.outdir, names[k]), ids, args.compression,
                        crash=args.crash_data_file == k)
    master = os.path.join(args.outdir, f"{args.prefix}_master.h5")
    write_master(master, names, args.omit)
    with open(os.path.join(args.outdir, "expected_ids.txt"), "w") as out:
        out.write("".join(f"{i}\n" for i in sorted(i for v in FILES.values() for i in v)))
    print(f"# {master}  (mappings: {runs(FILES)})")
    with h5py.File(master, "r") as f:
        print(tree(f))


if __name__ == "__main__":
    main()
