//! `streamd demo` (issue 19, item 1): the built-in pipeline runs on its own, loses
//! nothing, and its files are read back by the independent readers
//! (`scripts/check_files.py`: h5py + hdf5plugin, tifffile, numpy; `scripts/check_nxmx.py`:
//! DIALS's `nxmx`, silx, fabio): every frame in the NXmx HDF5 file with its metadata and
//! reductions, and exactly the hits as TIFF files.

mod common;

use common::*;

#[test]
fn the_demo_writes_hits_to_tiff_and_every_frame_with_its_metadata_and_reductions_to_nxmx() {
    let dir = tempfile::tempdir().unwrap();
    let out = finish(
        spawn(&[
            "demo",
            "--runtime",
            "3",
            "--output",
            dir.path().to_str().unwrap(),
            "--json",
        ]),
        "streamd demo",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report = counters(&out, "streamd demo");
    let frames = num(stage(&report, "source"), "frames_out");
    assert!(frames > 0, "{report}");
    for s in report["stages"].as_array().unwrap() {
        for key in ["missed", "dropped", "errors", "restarts"] {
            assert_eq!(num(s, key), 0, "{} {key}", s["name"]);
        }
    }
    // Every frame through every stage: tiles out and back, each frame routed once.
    assert_eq!(frames_in(&report, "split"), frames);
    assert_eq!(frames_in(&report, "work"), 4 * frames);
    assert_eq!(counter(&report, "stitch", "stitched"), frames);
    assert_eq!(counter(&report, "stitch", "incomplete"), 0);
    // Pixel i of frame f is (f + i) mod 256 and the region of interest is 4 rows of
    // columns 240..256, so a frame has a pixel above 250 when f mod 256 is 252..=255 or
    // 0..=15: those are the hits.
    let hits: Vec<u64> = (0..frames)
        .filter(|f| f % 256 >= 252 || f % 256 <= 15)
        .collect();
    let hit_count = hits.len() as u64;
    assert_eq!(counter(&report, "gate", "hits"), hit_count);
    assert_eq!(counter(&report, "gate", "misses"), frames - hit_count);
    assert_eq!(counter(&report, "check", "verified"), frames - hit_count);
    assert_eq!(counter(&report, "check", "verify_errors"), 0);
    assert_eq!(counter(&report, "hits", "frames_written"), hit_count);
    assert_eq!(counter(&report, "store", "frames_written"), frames);

    let folder = dir.path().to_str().unwrap();
    let tiffs = read_back(
        "check_files.py",
        &["tiff", folder, "--channels", "energy,theta"],
    );
    assert_eq!(tiffs["ids"], serde_json::json!(hits));
    let master = dir.path().join("demo_master.h5");
    let master = master.to_str().unwrap();
    let frames_arg = frames.to_string();
    let h5 = read_back(
        "check_files.py",
        &[
            "hdf5",
            master,
            "--frames",
            &frames_arg,
            "--compression",
            "bslz4",
            "--channels",
            "energy,theta",
            "--reductions",
            "sum,min,max,mean,count,above",
            "--roi",
            "0,240,4,16",
            "--threshold",
            "250",
        ],
    );
    // energy comes with every frame, theta with every second one.
    assert_eq!(h5["values"]["energy"], frames);
    assert_eq!(h5["values"]["theta"], frames.div_ceil(2));
    for reduction in ["sum", "min", "max", "mean", "count", "above"] {
        assert_eq!(h5["values"][reduction], frames, "{reduction}");
    }
    assert_eq!(h5["shape"], serde_json::json!([512, 512]));
    read_back("check_nxmx.py", &[master]);

    // It ends by saying what each stage did and where the files are.
    let told = stderr(&out);
    let at = told
        .find("What each stage did (files in ")
        .unwrap_or_else(|| panic!("no summary in:\n{told}"));
    let summary = &told[at..];
    for line in [
        format!("  split    cut {frames} frames into {} tiles", 4 * frames),
        format!(
            "  gate     routed {frames} frames: {hit_count} to hits, {} to misses, 0 to no_value",
            frames - hit_count
        ),
        format!("  store    wrote {frames} frames to {master} (NXmx, over 1 data file(s))"),
        format!(
            "  check    checked every pixel of {} frames: 0 differed",
            frames - hit_count
        ),
        "  nothing was lost: no frame missed, dropped or failed".to_string(),
    ] {
        assert!(summary.contains(&line), "{line:?} in:\n{summary}");
    }
    assert!(
        summary.contains(&format!(
            "  hits     wrote {hit_count} frames to {folder}/hit_000000.tiff … "
        )),
        "{summary}"
    );
}
