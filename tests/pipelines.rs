//! `streamd run` with real processes: distribution and chains, a worker killed and
//! restarted, run-time configuration, draining on SIGTERM, a killed daemon's leftovers,
//! and the exact message of every broken config in `fixtures/bad/`.

mod common;

use common::*;

#[test]
fn two_groups_and_a_chain_of_three_see_every_frame_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let name = pipeline_name("groups");
    let child = start("two-groups.toml", &name, dir.path());
    // The control socket answers while frames flow.
    let live = wait_status(&name, "frames flowing through a3", |s| {
        frames_in(s, "a3") > 0
    });
    assert_eq!(live["pipeline"], name.as_str());
    assert_eq!(stage(&live, "g2")["workers"].as_array().unwrap().len(), 2);
    let (_, report) = finished_ok(child, "run two-groups");
    let frames = 3000;
    assert_eq!(num(stage(&report, "source"), "frames_out"), frames);

    // Group g2: every frame once over its two workers, three consecutive frames a turn.
    let g2 = id_counts(dir.path(), &["g2-0.ids", "g2-1.ids"]);
    assert_exactly_once(&g2, frames, "group g2");
    for w in 0..2 {
        let ids = read_ids(&dir.path().join(format!("g2-{w}.ids")));
        assert_eq!(
            num(worker(&report, "g2", w), "frames_in"),
            ids.len() as u64,
            "g2 worker {w} count"
        );
        assert_eq!(
            worker(&report, "g2", w)["counters"]["verified"],
            ids.len() as u64
        );
        for chunk in ids.chunks(3) {
            assert!(
                chunk[0] % 3 == 0
                    && chunk
                        .iter()
                        .enumerate()
                        .all(|(i, &id)| id == chunk[0] + i as u64),
                "g2 worker {w} got a turn that is not 3 consecutive frames: {chunk:?}"
            );
        }
    }
    // Broadcast stage b2: each worker sees every frame once.
    for w in 0..2 {
        let file = format!("b2-{w}.ids");
        assert_exactly_once(&id_counts(dir.path(), &[&file]), frames, &file);
    }
    // Group a1 and the chain a1 → a2 → a3: every frame once at the end of the chain.
    let a3 = id_counts(dir.path(), &["a3.ids"]);
    assert_exactly_once(&a3, frames, "end of the chain a3");
    assert_eq!(frames_in(&report, "b2"), 2 * frames);
    for s in ["a1", "a2", "a3", "g2"] {
        assert_eq!(frames_in(&report, s), frames, "stage {s} frames_in");
        assert_eq!(num(stage(&report, s), "missed"), 0, "stage {s} missed");
        assert_eq!(num(stage(&report, s), "errors"), 0, "stage {s} errors");
    }
    assert_eq!(num(stage(&report, "a1"), "frames_out"), frames);
    assert_eq!(num(stage(&report, "a2"), "frames_out"), frames);
    assert!(
        leftovers(&name).is_empty(),
        "left behind: {:?}",
        leftovers(&name)
    );
}

#[test]
fn a_killed_worker_is_restarted_counted_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let name = pipeline_name("kill");
    let child = start("two-groups.toml", &name, dir.path());
    let live = wait_status(&name, "a1 worker 0 busy", |s| {
        num(worker(s, "a1", 0), "frames_in") > 60
    });
    let victim = num(worker(&live, "a1", 0), "pid");
    // SAFETY: signalling a pid the status reported for a live worker of our pipeline.
    assert_eq!(unsafe { libc::kill(victim as i32, libc::SIGKILL) }, 0);
    let after = wait_status(&name, "the restart shown", |s| {
        num(worker(s, "a1", 0), "restarts") == 1
    });
    assert_ne!(num(worker(&after, "a1", 0), "pid"), victim);
    let (out, report) = finished_ok(child, "run two-groups with a kill");
    assert!(
        stderr(&out).contains("was killed by signal 9 (SIGKILL); restarting"),
        "{}",
        stderr(&out)
    );
    assert_eq!(num(stage(&report, "a1"), "restarts"), 1);
    let frames = 3000;
    // The other group loses nothing and sees nothing twice.
    assert_exactly_once(
        &id_counts(dir.path(), &["g2-0.ids", "g2-1.ids"]),
        frames,
        "group g2",
    );
    // The killed group's runs were taken over: every frame reached the end of its chain;
    // the frame the victim was forwarding when it died may arrive twice (at least once).
    let a3 = id_counts(dir.path(), &["a3.ids"]);
    let missing: Vec<u64> = (0..frames).filter(|i| !a3.contains_key(i)).collect();
    assert!(missing.is_empty(), "chain a3 lost frames {missing:?}");
    let repeats: u32 = a3.values().map(|n| n - 1).sum();
    assert!(
        repeats <= 3,
        "{repeats} repeated frames: more than one batch"
    );
    assert_eq!(num(stage(&report, "a3"), "errors"), 0);
}

/// Frame ids below `end` of the runs of `batch` dealt to set `index` of `sets` (the
/// source's ids are its sequence numbers).
fn of_set(end: u64, batch: u64, index: u64, sets: u64) -> Vec<u64> {
    (0..end).filter(|s| s / batch % sets == index).collect()
}

/// Issue 19: distributor sets and strict round-robin in a pipeline. Each stage in a set
/// sees every frame of its set's runs exactly once and nothing else; a round-robin
/// worker k of 3 gets runs k, k+3, ... and only those.
#[test]
fn stages_in_sets_and_round_robin_workers_get_exactly_their_runs() {
    let dir = tempfile::tempdir().unwrap();
    let name = pipeline_name("sets");
    let (_, report) = finished_ok(start("sets.toml", &name, dir.path()), "run sets");
    let frames = 4800;
    assert_eq!(num(stage(&report, "source"), "frames_out"), frames);
    let exactly = |files: &[&str], expected: Vec<u64>, what: &str| {
        let counts = id_counts(dir.path(), files);
        let repeated: Vec<_> = counts.iter().filter(|(_, &n)| n != 1).take(5).collect();
        assert!(repeated.is_empty(), "{what}: repeated {repeated:?}");
        assert_eq!(counts.into_keys().collect::<Vec<_>>(), expected, "{what}");
    };
    exactly(&["s0a.ids"], of_set(frames, 4, 0, 2), "stage s0a (set 0)");
    exactly(
        &["s0b-0.ids", "s0b-1.ids"],
        of_set(frames, 4, 0, 2),
        "stage s0b (set 0)",
    );
    exactly(&["s1.ids"], of_set(frames, 4, 1, 2), "stage s1 (set 1)");
    for k in 0..3 {
        let file = format!("rr-{k}.ids");
        let expected = of_set(frames, 2, k, 3);
        assert_eq!(
            read_ids(&dir.path().join(&file)),
            expected,
            "{file}: runs k, k+3, ..."
        );
        assert_eq!(
            num(worker(&report, "rr", k as usize), "frames_in"),
            expected.len() as u64
        );
    }
    for (s, expected) in [("s0a", 2400), ("s0b", 2400), ("s1", 2400), ("rr", 4800)] {
        assert_eq!(frames_in(&report, s), expected, "stage {s} frames_in");
        assert_eq!(num(stage(&report, s), "missed"), 0, "stage {s} missed");
        assert_eq!(num(stage(&report, s), "errors"), 0, "stage {s} errors");
    }
    assert!(
        leftovers(&name).is_empty(),
        "left behind: {:?}",
        leftovers(&name)
    );
}

/// Issue 19: a round-robin worker killed with SIGKILL keeps its turns: the supervisor
/// holds its set, so frames wait in the ring for the restarted worker, which gets every
/// frame of its runs (those its predecessor held uncommitted again) and nothing else;
/// the other workers' turns are untouched.
#[test]
fn a_killed_round_robin_worker_keeps_its_turns_for_its_restart() {
    let dir = tempfile::tempdir().unwrap();
    let name = pipeline_name("rrkill");
    let child = start("sets.toml", &name, dir.path());
    let live = wait_status(&name, "rr worker 1 busy", |s| {
        num(worker(s, "rr", 1), "frames_in") > 100
    });
    let victim = num(worker(&live, "rr", 1), "pid");
    // SAFETY: signalling a pid the status reported for a live worker of our pipeline.
    assert_eq!(unsafe { libc::kill(victim as i32, libc::SIGKILL) }, 0);
    let (out, report) = finished_ok(child, "run sets with a kill");
    assert!(
        stderr(&out).contains("was killed by signal 9 (SIGKILL); restarting"),
        "{}",
        stderr(&out)
    );
    assert_eq!(num(stage(&report, "rr"), "restarts"), 1);
    let frames = 4800;
    for k in [0, 2] {
        let file = format!("rr-{k}.ids");
        assert_eq!(
            read_ids(&dir.path().join(&file)),
            of_set(frames, 2, k, 3),
            "{file}"
        );
    }
    let counts = id_counts(dir.path(), &["rr-1.ids"]);
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        of_set(frames, 2, 1, 3),
        "rr-1"
    );
    // Delivered again: at most what the victim held uncommitted (a window of 16).
    let repeats: u32 = counts.values().map(|n| n - 1).sum();
    assert!(repeats <= 16, "{repeats} frames repeated");
    for s in ["s0a", "s1"] {
        assert_eq!(frames_in(&report, s), 2400, "stage {s} frames_in");
    }
}

#[test]
fn configure_applies_from_the_next_frame_and_a_bad_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let name = pipeline_name("conf");
    let child = start("configure.toml", &name, dir.path());
    wait_status(&name, "frames at the sink", |s| frames_in(s, "sink") > 50);
    let configure_stage = |stage: &str, setting: &str| {
        streamd()
            .args(["configure", stage, setting, "--pipeline", &name])
            .output()
            .expect("configure")
    };
    let configure = |setting: &str| configure_stage("tap", setting);
    for (stage_name, setting, reason) in [
        ("tap", "every=0", "stage 'tap' refused every=0: every must be a positive integer, got 0; nothing changed"),
        ("tap", "speed=2", "stage 'tap' refused speed=2: passthrough has no argument 'speed' (it takes: every); nothing changed"),
        // The ids file was created at start: the command refuses, not the worker later.
        ("sink", "ids_file=other.ids", "stage 'sink' refused ids_file=other.ids: ids_file cannot change while the stage runs; restart the pipeline with the new value; nothing changed"),
    ] {
        let out = configure_stage(stage_name, setting);
        assert_eq!(out.status.code(), Some(2), "{setting} accepted");
        assert_eq!(stderr(&out).trim(), format!("streamd: {reason}"));
    }
    let unchanged = status(&name).expect("status");
    assert_eq!(stage(&unchanged, "tap")["args"]["every"], 1);
    assert_eq!(stage(&unchanged, "sink")["args"]["ids_file"], "sink.ids");
    let out = configure("every=5");
    assert!(out.status.success(), "{}", stderr(&out));
    let message = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        message.contains("every=5 accepted; applied by worker 0 from frame"),
        "{message}"
    );
    let (_, report) = finished_ok(child, "run configure");
    let from = num(worker(&report, "tap", 0), "configured_from_frame");
    assert!(
        message.trim_end().ends_with(&format!("from frame {from}")),
        "{message} vs {from}"
    );
    assert_eq!(stage(&report, "tap")["args"]["every"], 5);
    let frames = 2500u64;
    let seen = id_counts(dir.path(), &["sink.ids"]);
    let expected: Vec<u64> = (0..frames).filter(|&id| id < from || id % 5 == 0).collect();
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        expected,
        "ids after configure at {from}"
    );
    let skipped = (from..frames).filter(|id| id % 5 != 0).count() as u64;
    assert_eq!(worker(&report, "tap", 0)["counters"]["skipped"], skipped);
}

#[test]
fn sigterm_drains_without_loss_and_removes_every_segment() {
    let dir = tempfile::tempdir().unwrap();
    let name = pipeline_name("term");
    let port = 20_000 + std::process::id() % 20_000;
    let child = spawn(&[
        "run",
        &fixture("endless.toml"),
        "--name",
        &name,
        "--output",
        dir.path().to_str().unwrap(),
        "--metrics",
        &format!("127.0.0.1:{port}"),
        "--json",
    ]);
    wait_status(&name, "frames at the sink", |s| frames_in(s, "sink") > 100);
    // Metrics: the same counters in Prometheus text.
    let mut http = std::net::TcpStream::connect(("127.0.0.1", port as u16)).expect("metrics port");
    std::io::Write::write_all(&mut http, b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut page = String::new();
    std::io::Read::read_to_string(&mut http, &mut page).unwrap();
    assert!(
        page.contains(&format!(
            "streamd_frames_in_total{{pipeline=\"{name}\",stage=\"sink\",worker=\"0\"}}"
        )),
        "{page}"
    );
    // reset-stats zeroes the counters; they count again from there.
    let before = frames_in(&status(&name).unwrap(), "sink");
    let out = streamd()
        .args(["reset-stats", "--pipeline", &name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    wait_status(&name, "counters reset", |s| frames_in(s, "sink") < before);
    // SAFETY: signalling the daemon we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let (_, report) = finished_ok(child, "run endless, SIGTERM");
    let ids = id_counts(dir.path(), &["sink.ids"]);
    let published = *ids.keys().last().expect("frames arrived") + 1;
    assert_exactly_once(&ids, published, "sink after SIGTERM");
    assert_eq!(
        num(worker(&report, "source", 0), "last_frame_id") + 1,
        published
    );
    assert_eq!(num(stage(&report, "sink"), "errors"), 0);
    assert!(
        leftovers(&name).is_empty(),
        "left behind: {:?}",
        leftovers(&name)
    );
}

#[test]
fn a_killed_daemon_leaves_segments_that_run_and_clean_remove() {
    let dir = tempfile::tempdir().unwrap();
    let name = pipeline_name("dead");
    for round in 0..2 {
        let child = start("endless.toml", &name, dir.path());
        wait_status(&name, "frames at the sink", |s| frames_in(s, "sink") > 20);
        // A second daemon with the same name is refused while the first runs.
        let twin = streamd()
            .args(["run", &fixture("endless.toml"), "--name", &name])
            .output()
            .unwrap();
        assert_eq!(twin.status.code(), Some(2));
        assert!(
            stderr(&twin).contains(&format!("pipeline '{name}' is already running")),
            "{}",
            stderr(&twin)
        );
        kill9(&child);
        finish(child, "killed daemon");
        let left = leftovers(&name);
        assert!(
            left.len() >= 4,
            "expected stats, socket and rings, found {left:?}"
        );
        if round == 0 {
            // The next run finds and removes them, then runs until `streamd stop`.
            let child = start("endless.toml", &name, dir.path());
            wait_status(&name, "frames after the restart", |s| {
                frames_in(s, "sink") > 20
            });
            let stop = streamd()
                .args(["stop", "--pipeline", &name])
                .output()
                .unwrap();
            assert!(stop.status.success(), "{}", stderr(&stop));
            let (out, _) = finished_ok(child, "run endless after a killed daemon");
            assert!(
                stderr(&out).contains("removed the stale stats segment and 3 ring(s)"),
                "{}",
                stderr(&out)
            );
            assert!(
                stderr(&out).contains("stop requested over the control socket"),
                "{}",
                stderr(&out)
            );
        } else {
            let out = streamd().args(["clean"]).output().unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
        }
        assert!(
            leftovers(&name).is_empty(),
            "round {round} left {:?}",
            leftovers(&name)
        );
    }
}

#[test]
fn a_stage_that_keeps_crashing_is_marked_failed_and_the_rest_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let name = pipeline_name("fail");
    std::fs::create_dir(dir.path().join("doomed")).unwrap();
    let child = start("failing.toml", &name, dir.path());
    let live = wait_status(&name, "frames at the broken stage", |s| {
        frames_in(s, "broken") > 20
    });
    // Its folder gone, the killed worker's successors cannot open their ids file.
    std::fs::remove_dir_all(dir.path().join("doomed")).unwrap();
    let pid = num(worker(&live, "broken", 0), "pid");
    // SAFETY: a worker of the pipeline this test started, alive per its status.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    wait_status(&name, "the broken stage failed", |s| {
        stage(s, "broken")["state"] == "failed"
    });
    let stop = streamd()
        .args(["stop", "--pipeline", &name])
        .output()
        .unwrap();
    assert!(stop.status.success(), "{}", stderr(&stop));
    let out = finish(child, "run failing");
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("it crashed 3 times within 60 s, so it is marked failed and not restarted"),
        "{}",
        stderr(&out)
    );
    let cannot = "stage 'broken' could not start: could not open ids file doomed/broken.ids: No such file or directory (os error 2)";
    assert!(stderr(&out).contains(cannot), "{}", stderr(&out));
    let report = counters(&out, "run failing");
    assert_eq!(stage(&report, "broken")["state"], "failed");
    assert_eq!(num(stage(&report, "broken"), "restarts"), 2);
    // Why, in the final report: how its last process ended and the error it ended on.
    assert_eq!(
        worker(&report, "broken", 0)["reason"],
        format!("exited with status 2; {cannot}")
    );
    let published = num(worker(&report, "source", 0), "last_frame_id") + 1;
    assert_exactly_once(
        &id_counts(dir.path(), &["healthy.ids"]),
        published,
        "healthy stage",
    );
    assert!(
        leftovers(&name).is_empty(),
        "left behind: {:?}",
        leftovers(&name)
    );
}

#[test]
fn a_tiff_series_is_replayed_through_a_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let frames = 12u64;
    for id in 0..frames {
        let mut ramp = vec![0u8; 32 * 16 * 2];
        streamd::pattern::fill_ramp(&mut ramp, streamd::ring::Dtype::U16, id);
        let pixels: Vec<u16> = ramp
            .chunks(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        let file = std::fs::File::create(dir.path().join(format!("scan_{id:03}.tif"))).unwrap();
        tiff::encoder::TiffEncoder::new(file)
            .unwrap()
            .write_image::<tiff::encoder::colortype::Gray16>(32, 16, &pixels)
            .unwrap();
    }
    let config = dir.path().join("replay.toml");
    std::fs::write(
        &config,
        "name = \"replay\"\n[[ring]]\nname = \"raw\"\n[source]\nring = \"raw\"\nreplay = \"scan_*.tif\"\nfps = 100\n\
         [[stage]]\nname = \"check\"\nprocessor = \"verify\"\ninput = \"raw\"\nargs = { ids_file = \"ids\" }\n",
    )
    .unwrap();
    let name = pipeline_name("tiff");
    let child = spawn(&[
        "run",
        config.to_str().unwrap(),
        "--name",
        &name,
        "--output",
        dir.path().to_str().unwrap(),
        "--json",
    ]);
    let (_, report) = finished_ok(child, "run replay");
    assert_exactly_once(&id_counts(dir.path(), &["ids"]), frames, "replayed series");
    assert_eq!(worker(&report, "check", 0)["counters"]["verified"], frames);
    // The source's stage shows its kind.
    assert_eq!(stage(&report, "source")["processor"], "replay");
}

#[test]
fn every_broken_config_gives_its_exact_message() {
    let root = env!("CARGO_MANIFEST_DIR");
    let cpus = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Cpus_allowed_list:")
                .map(|v| v.trim().to_string())
        })
        .unwrap();
    let mut checked = 0;
    let mut files: Vec<_> = std::fs::read_dir(format!("{root}/fixtures/bad"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
    {
        let rel = path.strip_prefix(root).unwrap();
        let expected = std::fs::read_to_string(path.with_extension("expected"))
            .unwrap_or_else(|_| panic!("{} has no .expected file", rel.display()))
            .trim()
            .replace("{cpus_allowed}", &cpus);
        // `check` makes every check `run` makes, with the same message.
        for command in ["run", "check"] {
            let out = streamd()
                .current_dir(root)
                .arg(command)
                .arg(rel)
                .output()
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(2),
                "{command} accepted {}",
                rel.display()
            );
            assert_eq!(
                stderr(&out).trim(),
                format!("streamd: {expected}"),
                "{command} {}",
                rel.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} broken configs");
}
