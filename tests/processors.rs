//! The frame processors in real pipelines: split → stitch bit for bit (u8, u16, f32;
//! even and uneven cuts; tiles over two workers, handed on or read in place with
//! `after`), a stitcher after the workers waiting for the tile a stopped (then killed)
//! worker holds, a tile worker killed for good (and a tile too large for its rings
//! refused while it runs), metadata merged by timestamp with exact counters, and gating
//! with exact counts per route.

mod common;

use common::*;
use serde_json::Value;

/// `split-stitch.toml` with the stitcher reading the tiles ring itself, after the
/// workers (which then hand nothing on).
const AFTER_WORK: &[(&str, &str)] = &[
    ("[[ring]]\nname = \"worked\"\nslots = 16\n\n", ""),
    ("output = \"worked\"\n", ""),
    ("input = \"worked\"", "input = \"tiles\"\nafter = \"work\""),
];

#[test]
fn split_then_stitch_gives_back_every_frame_bit_for_bit() {
    let cases: [(&str, &[(&str, &str)]); 4] = [
        // u16, a 3 × 4 grid that divides 750 × 1000 evenly.
        ("u16-even", &[]),
        // u8, 256 × 300 tiles: edge tiles of 238 rows and 100 columns.
        (
            "u8-tiles",
            &[
                ("dtype = \"u16\"", "dtype = \"u8\""),
                ("grid = [3, 4]", "tile = [256, 300]"),
            ],
        ),
        // f32, a 4 × 3 grid: rows of 187 and 188, columns of 333 and 334.
        (
            "f32-grid",
            &[
                ("dtype = \"u16\"", "dtype = \"f32\""),
                ("grid = [3, 4]", "grid = [4, 3]"),
            ],
        ),
        // u16 again, the stitcher reading the workers' tiles in place, after them: the
        // wiring and the pixels (the order is the next test's).
        ("u16-after", AFTER_WORK),
    ];
    for (case, edits) in cases {
        let dir = tempfile::tempdir().unwrap();
        let report = run_edited("split-stitch.toml", "tiles", dir.path(), edits);
        let frames = 300;
        // Every frame came out whole, in order, once, and equal to the ramp pixel for pixel.
        let ids = read_ids(&dir.path().join("check.ids"));
        assert_eq!(
            ids,
            (0..frames).collect::<Vec<u64>>(),
            "{case}: ids at the check"
        );
        assert_eq!(counter(&report, "check", "verified"), frames, "{case}");
        assert_eq!(counter(&report, "check", "verify_errors"), 0, "{case}");
        assert_eq!(counter(&report, "stitch", "stitched"), frames, "{case}");
        for key in ["incomplete", "late_tiles", "duplicate_tiles", "skipped_ids"] {
            assert_eq!(counter(&report, "stitch", key), 0, "{case}: stitch {key}");
        }
        // The tiles really were shared by the two workers.
        let tiles = counter(&report, "split", "tiles");
        assert_eq!(tiles, 12 * frames, "{case}: 12 tiles a frame");
        let (w0, w1) = (
            num(worker(&report, "work", 0), "frames_in"),
            num(worker(&report, "work", 1), "frames_in"),
        );
        assert!(
            w0 > 0 && w1 > 0 && w0 + w1 == tiles,
            "{case}: tiles per worker {w0} + {w1}"
        );
    }
}

/// `ring` as `streamd rings --json` shows it now.
fn ring_now(ring: &str) -> Value {
    let out = streamd().args(["rings", "--json"]).output().expect("rings");
    let rings: Value = serde_json::from_slice(&out.stdout).expect("rings json");
    rings["rings"]
        .as_array()
        .and_then(|all| all.iter().find(|r| r["name"] == ring))
        .unwrap_or_else(|| panic!("no ring {ring}"))
        .clone()
}

/// `(published, delivered to the workers, delivered to the stitcher)` of a tiles ring.
fn tile_counts(ring: &Value) -> (u64, u64, u64) {
    let delivered = |group: &str| {
        ring["groups"]
            .as_array()
            .and_then(|g| g.iter().find(|g| g["name"] == group))
            .map_or(0, |g| num(g, "delivered"))
    };
    (
        num(ring, "published"),
        delivered("work"),
        delivered("stitch"),
    )
}

/// With `after = "work"` the stitcher takes a tile only once the workers' group is done
/// with it. A worker stopped (SIGSTOP) holding a tile holds the stitcher at that tile,
/// while the other worker takes every later one until the 32-slot ring is full; without
/// `after` the stitcher would take those too. Killed there, the worker leaves its tile to
/// the other worker or its own successor (spec §7.3), and the stitcher goes on once that
/// one has finished it: every frame comes out whole, once.
#[test]
fn a_stage_after_another_takes_only_the_frames_it_finished() {
    let dir = tempfile::tempdir().unwrap();
    let name = pipeline_name("after");
    let mut edits = AFTER_WORK.to_vec();
    edits.extend([
        ("frames = 300", "frames = 2400"),
        ("fps = 300", "fps = 1200"),
    ]);
    let child = start_edited("split-stitch.toml", &name, dir.path(), &edits);
    let live = wait_status(&name, "tiles worked", |s| frames_in(s, "work") > 24);
    let stopped = num(worker(&live, "work", 0), "pid");
    let tiles = format!("{name}.tiles");
    let signal = |sig: i32| {
        // SAFETY: signalling a pid the status reported for a live worker of our pipeline.
        assert_eq!(unsafe { libc::kill(stopped as i32, sig) }, 0);
    };
    // Stopped between two tiles, the worker holds none and the other takes them all:
    // let it run on and stop it again.
    // Stopped between two tiles, the worker holds none and the other takes them all;
    // stopped inside a claim, it holds the group's lock and nothing moves. Either way:
    // let it run on and stop it again.
    let held = (0..20).find_map(|_| {
        signal(libc::SIGSTOP);
        let (mut last, mut unchanged) = (None, 0);
        let outcome = loop {
            let ring = ring_now(&tiles);
            let counts = tile_counts(&ring);
            let (published, work, stitch) = counts;
            let steady = last == Some(counts);
            if work == published || unchanged >= 100 {
                break None;
            }
            // Full and still so on a second look: not a tile the other worker is
            // finishing right then.
            if steady && work + 1 == published && stitch + 32 == published {
                break Some(ring);
            }
            unchanged = if steady { unchanged + 1 } else { 0 };
            last = Some(counts);
        };
        if outcome.is_none() {
            let before = frames_in(&status(&name).expect("status"), "work");
            signal(libc::SIGCONT);
            wait_status(&name, "the worker taking tiles again", |s| {
                frames_in(s, "work") > before + 12
            });
        }
        outcome
    });
    let ring = held.expect("the worker was never stopped holding a tile");
    let (published, work, stitch) = tile_counts(&ring);
    assert_eq!(
        work,
        published - 1,
        "the other worker finished every later tile"
    );
    assert_eq!(
        stitch,
        published - 32,
        "the stitcher stopped at the held tile"
    );
    // Killed, the worker leaves its tile to a live mate or its successor (spec §7.3):
    // the stitcher takes it once that one has finished it, and nothing is lost.
    signal(libc::SIGKILL);
    let (_, report) = finished_ok(child, "run split-stitch after work");
    assert_eq!(num(stage(&report, "work"), "restarts"), 1);
    let frames = 2400;
    assert_eq!(counter(&report, "stitch", "stitched"), frames);
    for key in ["incomplete", "late_tiles", "duplicate_tiles"] {
        assert_eq!(counter(&report, "stitch", key), 0, "stitch {key}");
    }
    assert_eq!(counter(&report, "check", "verified"), frames);
    assert_eq!(counter(&report, "check", "verify_errors"), 0);
    // The held tile may have been worked twice, never not at all.
    let worked = frames_in(&report, "work");
    assert!(
        (12 * frames..=12 * frames + 1).contains(&worked),
        "{worked} tiles worked"
    );
}

/// A stage that fails for good never finishes the tiles it held: the stitcher after it
/// stops there with an error instead of passing them on as worked.
#[test]
fn a_stage_after_a_failed_one_stops_instead_of_taking_unfinished_frames() {
    let dir = tempfile::tempdir().unwrap();
    let name = pipeline_name("afterfail");
    let mut edits = AFTER_WORK.to_vec();
    edits.extend([
        ("workers = 2", "workers = 1"),
        (
            "[[ring]]\nname = \"raw\"",
            "[restart]\nmax_crashes = 1\n\n[[ring]]\nname = \"raw\"",
        ),
    ]);
    let child = start_edited("split-stitch.toml", &name, dir.path(), &edits);
    let live = wait_status(&name, "tiles worked", |s| frames_in(s, "work") > 24);
    let victim = num(worker(&live, "work", 0), "pid");
    // SAFETY: signalling a pid the status reported for a live worker of our pipeline.
    assert_eq!(unsafe { libc::kill(victim as i32, libc::SIGKILL) }, 0);
    let out = finish(child, "run split-stitch after a failing work stage");
    assert_eq!(out.status.code(), Some(5), "stderr:\n{}", stderr(&out));
    assert!(
        stderr(&out).contains("stage 'work', which it comes after, failed before finishing it"),
        "{}",
        stderr(&out)
    );
    let report = counters(&out, "run split-stitch after a failing work stage");
    // What reached the check was stitched (the failed stitcher's own counters may not
    // have been shown).
    let stitched = frames_in(&report, "check");
    let worked = frames_in(&report, "work");
    assert!(
        stitched * 12 <= worked && stitched < 300,
        "{stitched} frames stitched from {worked} tiles worked"
    );
}

#[test]
fn a_tile_worker_killed_for_good_gives_counted_and_marked_incomplete_frames() {
    let dir = tempfile::tempdir().unwrap();
    let name = pipeline_name("tilekill");
    let child = start("split-kill.toml", &name, dir.path());
    let live = wait_status(&name, "frames stitched", |s| frames_in(s, "check") > 100);
    // Its tile rings hold 128 × 128 u16 tiles, so larger tiles are refused while it runs.
    let larger = streamd()
        .args(["configure", "split", "tile=[256,256]", "--pipeline", &name])
        .output()
        .expect("configure");
    assert_eq!(larger.status.code(), Some(2), "a larger tile was accepted");
    assert_eq!(
        stderr(&larger).trim(),
        "streamd: stage 'split' refused tile=[256,256]: its frames of up to 131072 bytes would not fit ring 'left', whose slots hold 32768 bytes (give that ring a larger slot_bytes and restart the pipeline); nothing changed"
    );
    let victim = num(worker(&live, "right", 0), "pid");
    // SAFETY: signalling a pid the status reported for a live worker of our pipeline.
    assert_eq!(unsafe { libc::kill(victim as i32, libc::SIGKILL) }, 0);
    let out = finish(child, "run split-kill");
    // A stage failed, so the run says so in its exit status.
    assert_eq!(out.status.code(), Some(5), "stderr:\n{}", stderr(&out));
    let report = counters(&out, "run split-kill");
    let frames = 600;
    let (stitched, incomplete) = (
        counter(&report, "stitch", "stitched"),
        counter(&report, "stitch", "incomplete"),
    );
    assert!(incomplete > 0, "the kill lost tiles");
    assert_eq!(
        stitched + incomplete,
        frames,
        "every frame left the stitcher once"
    );
    // Whole frames verify; every incomplete one is marked and fails the pixel check.
    assert_eq!(counter(&report, "check", "verified"), stitched);
    assert_eq!(counter(&report, "check", "verify_errors"), incomplete);
    let records = read_records(&dir.path().join("check.ids"));
    assert_eq!(
        records.iter().map(|r| r.0).collect::<Vec<_>>(),
        (0..frames).collect::<Vec<u64>>()
    );
    let marked = records
        .iter()
        .filter(|(_, a)| a["missing_tiles"] != "-")
        .count() as u64;
    assert_eq!(marked, incomplete, "frames marked with missing_tiles");
    assert!(
        records
            .iter()
            .all(|(_, a)| ["-", "1", "2"].contains(&a["missing_tiles"].as_str())),
        "a frame lost at most the right-hand tiles"
    );
}

#[test]
fn metadata_is_merged_by_timestamp_with_exact_counters() {
    let dir = tempfile::tempdir().unwrap();
    let report = run_edited("metadata.toml", "meta", dir.path(), &[]);
    let frames = 700u64;
    let gap = |f: u64| f % 7 == 6;
    let x_expected = (0..frames).filter(|&f| !gap(f)).count() as u64;
    let y_expected = (0..frames).filter(|&f| f % 2 == 0 && !gap(f)).count() as u64;
    assert_eq!((x_expected, y_expected), (600, 300));
    assert_eq!(
        counter(&report, "source", "metadata_values"),
        x_expected + y_expected
    );
    assert_eq!(counter(&report, "attach", "x.matched"), x_expected);
    assert_eq!(
        counter(&report, "attach", "x.unmatched"),
        frames - x_expected
    );
    assert_eq!(counter(&report, "attach", "y.matched"), y_expected);
    assert_eq!(
        counter(&report, "attach", "y.unmatched"),
        frames - y_expected
    );
    assert_eq!(counter(&report, "attach", "x.discarded"), 0);
    assert_eq!(counter(&report, "attach", "y.discarded"), 0);
    // Each frame carries exactly its own values (x = id + 1/8, y = id + 2/8).
    let records = read_records(&dir.path().join("check.ids"));
    assert_eq!(records.len() as u64, frames);
    for (f, attributes) in records {
        let want_x = (!gap(f)).then(|| (f as f64 + 0.125).to_string());
        let want_y = (f % 2 == 0 && !gap(f)).then(|| (f as f64 + 0.25).to_string());
        assert_eq!(attributes["x"], want_x.unwrap_or("-".into()), "frame {f} x");
        assert_eq!(attributes["y"], want_y.unwrap_or("-".into()), "frame {f} y");
    }
    assert_eq!(counter(&report, "check", "verify_errors"), 0);
}

#[test]
fn gating_sends_every_frame_to_exactly_one_route() {
    let dir = tempfile::tempdir().unwrap();
    // Frame f: background below the threshold; f % 10 of 6 or 7 adds 5 bright pixels
    // (uncertain), 8 or 9 adds 40 (a hit).
    let frames = 400u64;
    let bright = |f: u64| match f % 10 {
        6 | 7 => 5,
        8 | 9 => 40,
        _ => 0,
    };
    write_npy_u16(&dir.path().join("hits.npy"), (frames, 32, 32), |f, i| {
        if i * 7 % 1024 < bright(f) {
            2000
        } else {
            ((f + i) % 500) as u16
        }
    });
    let report = run_edited("gating.toml", "gating", dir.path(), &[]);
    let expect = |class: &[u64]| {
        (0..frames)
            .filter(|f| class.contains(&(f % 10)))
            .collect::<Vec<u64>>()
    };
    let routes = [
        ("misses", "misses.ids", expect(&[0, 1, 2, 3, 4, 5])),
        ("maybe", "maybe.ids", expect(&[6, 7])),
        ("hits", "hits.ids", expect(&[8, 9])),
    ];
    let mut seen = Vec::new();
    for (ring, file, want) in &routes {
        let records = read_records(&dir.path().join(file));
        let ids: Vec<u64> = records.iter().map(|r| r.0).collect();
        assert_eq!(&ids, want, "frames routed to {ring}");
        assert_eq!(
            counter(&report, "gate", ring),
            want.len() as u64,
            "{ring} counter"
        );
        for (f, attributes) in records.iter().filter(|r| r.1.contains_key("above")) {
            assert_eq!(
                attributes["above"],
                bright(*f).to_string(),
                "frame {f} above"
            );
        }
        seen.extend(ids);
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..frames).collect::<Vec<u64>>(),
        "each frame in exactly one route"
    );
    assert_eq!(counter(&report, "gate", "no_value"), 0);
    assert_eq!(counter(&report, "reduce", "reduced"), frames);
}
