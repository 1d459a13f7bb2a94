"""Reads an NXmx master written from a Stream V2 series (stream2_sender.py's) with h5py
+ hdf5plugin: every frame against the ramp, and the start message's geometry where
NXmx puts it.

    check_series_master.py MASTER.h5

Prints one JSON line: frames, the ids of frames that differ, and the geometry fields
whose value differs from what the sender's start message said.
"""

import json
import sys

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle filter)
import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from stream2_sender import GEOMETRY, SERIES_ID, ramp  # noqa: E402


def main():
    report = {"frames": 0, "wrong": [], "geometry_mismatches": []}
    with h5py.File(sys.argv[1]) as f:
        data = f["/entry/data/data"]
        ids = f["/entry/data/frame_id"][:]
        report["frames"] = int(data.shape[0])
        _, ny, nx = data.shape
        for k in range(data.shape[0]):
            if not np.array_equal(data[k], ramp(int(ids[k]), ny, nx)):
                report["wrong"].append(int(ids[k]))
        d = f["/entry/instrument/detector"]
        g = GEOMETRY
        omega = f["/entry/sample/transformations/omega"][:]
        axis = g["goniometer"]["omega"]
        expected = {
            "beam_center_x": (d["beam_center_x"][()], g["beam_center_x"]),
            "beam_center_y": (d["beam_center_y"][()], g["beam_center_y"]),
            "x_pixel_size": (d["x_pixel_size"][()], g["pixel_size_x"]),
            "y_pixel_size": (d["y_pixel_size"][()], g["pixel_size_y"]),
            "distance": (d["distance"][()], g["detector_translation"][2]),
            "wavelength": (f["/entry/instrument/beam/incident_wavelength"][()], g["incident_wavelength"]),
            "sensor_material": (d["sensor_material"][()].decode(), g["sensor_material"]),
            "sensor_thickness": (d["sensor_thickness"][()], g["sensor_thickness"]),
            "saturation_value": (d["saturation_value"][()], g["saturation_value"]),
            "count_time": (d["count_time"][()], g["count_time"]),
            "frame_time": (d["frame_time"][()], g["frame_time"]),
            "threshold_energy": (d["threshold_energy"][()], g["threshold_energy"]["threshold_1"]),
            "description": (d["description"][()].decode(), g["detector_description"]),
            "serial_number": (d["serial_number"][()].decode(), g["detector_serial_number"]),
            "series_id": (d["detectorSpecific/series_id"][()], SERIES_ID),
            "omega": (list(omega), [axis["start"] + axis["increment"] * int(i) for i in ids]),
        }
        for name, (got, want) in expected.items():
            same = np.allclose(got, want) if not isinstance(want, str) else got == want
            if not same:
                report["geometry_mismatches"].append([name, str(got)[:80], str(want)[:80]])
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
