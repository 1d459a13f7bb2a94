//! The ring's promises, checked with real processes: `streamd sim` and `streamd consume`
//! spawned as separate programs, killed with SIGKILL where the promise is about crashes.

mod common;

use common::*;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

#[test]
fn broadcast_consumers_see_everything_and_a_group_shares_it_in_runs() {
    const FRAMES: u64 = 20_000;
    const BATCH: u64 = 4;
    let ring = ring_name("bcast");
    let dir = tempfile::tempdir().unwrap();
    let broadcast: Vec<_> = (0..2)
        .map(|_| spawn(&["consume", "--ring", &ring, "--verify", "--json"]))
        .collect();
    let members: Vec<_> = (0..3)
        .map(|i| {
            let ids = tmp_path(&dir, &format!("m{i}.ids"));
            let child = spawn(&[
                "consume",
                "--ring",
                &ring,
                "--group",
                "g",
                "--batch",
                "4",
                "--verify",
                "--json",
                "--record-ids",
                ids.to_str().unwrap(),
            ]);
            (child, ids)
        })
        .collect();
    let frames = FRAMES.to_string();
    let sim = spawn(&[
        "sim",
        "--ring",
        &ring,
        "--frames",
        &frames,
        "--nx",
        "512",
        "--ny",
        "512",
        "--dtype",
        "u16",
        "--wait-consumers",
        "5",
        "--json",
    ]);
    let sim = counters(&finish(sim, "sim"), "sim");
    assert_eq!(num(&sim, "published"), FRAMES);
    assert_eq!(num(&sim, "dropped"), 0);

    for (i, child) in broadcast.into_iter().enumerate() {
        let out = finish(child, "broadcast consumer");
        assert!(out.status.success(), "broadcast {i}: {}", stderr(&out));
        let c = counters(&out, "broadcast consumer");
        assert_eq!(num(&c, "received"), FRAMES, "broadcast {i}: {c}");
        assert_eq!(num(&c, "missed"), 0);
        assert_eq!(num(&c, "verify_errors"), 0);
        assert_eq!(num(&c, "first_id"), 0);
        assert_eq!(num(&c, "last_id"), FRAMES - 1);
        assert_eq!(c["end"], "end-of-stream");
    }

    let mut owner = BTreeMap::new();
    let mut total = 0;
    for (i, (child, ids_path)) in members.into_iter().enumerate() {
        let out = finish(child, "group member");
        assert!(out.status.success(), "member {i}: {}", stderr(&out));
        let c = counters(&out, "group member");
        assert_eq!(num(&c, "verify_errors"), 0);
        assert_eq!(num(&c, "missed"), 0);
        let ids = read_ids(&ids_path);
        assert_eq!(ids.len() as u64, num(&c, "received"));
        assert!(
            !ids.is_empty(),
            "member {i} received nothing: the group did not share"
        );
        total += ids.len() as u64;
        for id in ids {
            assert!(
                owner.insert(id, i).is_none(),
                "frame {id} delivered twice in the group"
            );
        }
    }
    assert_eq!(total, FRAMES);
    assert_eq!(
        owner.keys().copied().collect::<Vec<_>>(),
        (0..FRAMES).collect::<Vec<_>>()
    );
    for run in 0..FRAMES / BATCH {
        let first = owner[&(run * BATCH)];
        for id in run * BATCH..(run + 1) * BATCH {
            assert_eq!(owner[&id], first, "frame {id} left its run of {BATCH}");
        }
    }
}

#[test]
fn a_slow_lossy_consumer_counts_every_frame_it_misses() {
    let ring = ring_name("lossy");
    let slow = spawn(&[
        "consume",
        "--ring",
        &ring,
        "--delivery",
        "lossy",
        "--work-us",
        "300",
        "--verify",
        "--json",
    ]);
    let fast = spawn(&["consume", "--ring", &ring, "--verify", "--json"]);
    // No frame count: it publishes until the slow consumer has been lapped, however
    // fast this machine runs either of them.
    let sim = spawn(&[
        "sim",
        "--ring",
        &ring,
        "--nx",
        "128",
        "--ny",
        "128",
        "--slots",
        "8",
        "--wait-consumers",
        "2",
        "--json",
    ]);
    wait_ring(&ring, "the lossy consumer lapped", |r| {
        r["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|g| g["delivery"] == "lossy" && g["missed"].as_u64().is_some_and(|m| m > 0))
    });
    terminate(&sim);
    let sim = counters(&finish(sim, "sim"), "sim");
    let published = num(&sim, "published");

    let slow = finish(slow, "lossy consumer");
    assert!(slow.status.success(), "{}", stderr(&slow));
    let slow = counters(&slow, "lossy consumer");
    assert_eq!(
        num(&slow, "received") + num(&slow, "missed"),
        published,
        "{slow}"
    );
    assert!(
        num(&slow, "missed") > 0,
        "the slow consumer was never lapped: {slow}"
    );
    assert_eq!(num(&slow, "verify_errors"), 0, "a lossy read was torn");

    let fast = counters(&finish(fast, "lossless consumer"), "lossless consumer");
    assert_eq!(num(&fast, "received"), published);
    assert_eq!(num(&fast, "verify_errors"), 0);
}

#[test]
fn drop_newest_counts_what_it_does_not_publish() {
    let ring = ring_name("drop");
    let dir = tempfile::tempdir().unwrap();
    let ids = tmp_path(&dir, "c.ids");
    let slow = spawn(&[
        "consume",
        "--ring",
        &ring,
        "--work-us",
        "200",
        "--verify",
        "--json",
        "--record-ids",
        ids.to_str().unwrap(),
    ]);
    // No frame count: it publishes until the ring has been found full, however fast
    // this machine runs the producer and the consumer.
    let sim = spawn(&[
        "sim",
        "--ring",
        &ring,
        "--nx",
        "64",
        "--ny",
        "64",
        "--slots",
        "4",
        "--policy",
        "drop-newest",
        "--wait-consumers",
        "1",
        "--json",
    ]);
    wait_ring(&ring, "a frame dropped", |r| {
        r["dropped"].as_u64().is_some_and(|d| d > 0)
    });
    terminate(&sim);
    let sim = counters(&finish(sim, "sim"), "sim");
    let (published, dropped) = (num(&sim, "published"), num(&sim, "dropped"));
    assert!(dropped > 0, "nothing was dropped: {sim}");
    let c = counters(&finish(slow, "consumer"), "consumer");
    assert_eq!(num(&c, "received"), published);
    assert_eq!(num(&c, "missed"), 0);
    assert_eq!(num(&c, "verify_errors"), 0);
    // Every frame id up to the last published one was published or dropped: the
    // consumer saw the published ones in order, and each gap is a counted drop.
    let got = read_ids(&ids);
    assert_eq!(got.len() as u64, published);
    assert!(got.windows(2).all(|w| w[0] < w[1]), "ids out of order");
    let last = num(&sim, "last_id");
    assert_eq!(got.last().copied(), Some(last));
    assert!(
        last + 1 - published <= dropped,
        "{} ids below {last} unpublished, {dropped} dropped",
        last + 1 - published
    );
}

/// How the victim of a SIGKILL is attached.
#[derive(Debug, Clone, Copy)]
enum Victim {
    Broadcast,
    GroupMember,
    Lossy,
}

#[test]
fn killing_a_consumer_at_random_points_stalls_no_one_and_loses_nothing() {
    const FRAMES: u64 = 1_500;
    let seed = std::env::var("STREAMD_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("SIGKILL test seed {seed} (set STREAMD_TEST_SEED to repeat)");
    let mut rng = fastrand::Rng::with_seed(seed);
    for iteration in 0..15 {
        let victim_kind = [Victim::Broadcast, Victim::GroupMember, Victim::Lossy][iteration % 3];
        let ring = ring_name("kill");
        let dir = tempfile::tempdir().unwrap();
        let survivor = spawn(&["consume", "--ring", &ring, "--verify", "--json"]);
        let member_ids = tmp_path(&dir, "member.ids");
        let victim_ids = tmp_path(&dir, "victim.ids");
        let member = spawn(&[
            "consume",
            "--ring",
            &ring,
            "--group",
            "g",
            "--batch",
            "3",
            "--verify",
            "--json",
            "--record-ids",
            member_ids.to_str().unwrap(),
        ]);
        // The victim is slow (1 ms a frame) so it is always mid-stream when killed, and
        // for lossless kinds it throttles the producer until it is reaped.
        let mut victim_args = vec!["consume", "--ring", &ring, "--work-us", "1000", "--json"];
        victim_args.extend(["--record-ids", victim_ids.to_str().unwrap()]);
        match victim_kind {
            Victim::Broadcast => {}
            Victim::GroupMember => victim_args.extend(["--group", "g", "--batch", "3"]),
            Victim::Lossy => victim_args.extend(["--delivery", "lossy"]),
        }
        let victim = spawn(&victim_args);
        let frames = FRAMES.to_string();
        let sim = spawn(&[
            "sim",
            "--ring",
            &ring,
            "--frames",
            &frames,
            "--nx",
            "64",
            "--ny",
            "64",
            "--slots",
            "8",
            "--fps",
            "2000",
            "--wait-consumers",
            "3",
            "--json",
        ]);
        // Killed at a random point of the first third of the stream: the rest takes the
        // sim at least 500 ms more, and nobody (a lossy victim included) ends before it.
        wait_published(&ring, rng.u64(1..FRAMES / 3));
        kill9(&victim);
        let victim_out = finish(victim, "victim");
        assert!(
            !victim_out.status.success(),
            "iteration {iteration}: the victim finished before the kill: {}",
            String::from_utf8_lossy(&victim_out.stdout)
        );

        let sim = counters(&finish(sim, "sim"), "sim");
        let context = format!("iteration {iteration} ({victim_kind:?}), seed {seed}");
        assert_eq!(num(&sim, "published"), FRAMES, "{context}");
        if !matches!(victim_kind, Victim::Lossy) {
            assert_eq!(
                num(&sim, "consumers_reaped"),
                1,
                "{context}: the dead consumer was not reaped"
            );
        }
        let s = counters(&finish(survivor, "survivor"), "survivor");
        assert_eq!(num(&s, "received"), FRAMES, "{context}: {s}");
        assert_eq!(num(&s, "verify_errors"), 0, "{context}");

        let m_out = finish(member, "group member");
        let m = counters(&m_out, "group member");
        assert_eq!(num(&m, "verify_errors"), 0, "{context}");
        let mut seen: HashSet<u64> = HashSet::new();
        let mut duplicates = 0;
        let member_got = read_ids(&member_ids);
        let victim_got = if matches!(victim_kind, Victim::GroupMember) {
            read_ids(&victim_ids)
        } else {
            vec![]
        };
        for id in member_got.iter().chain(victim_got.iter()) {
            if !seen.insert(*id) {
                duplicates += 1;
            }
        }
        // Lossless group: nothing lost; only the one frame the victim held when it died
        // may be delivered again (spec §7.3).
        assert_eq!(
            seen.len() as u64,
            FRAMES,
            "{context}: the group lost frames"
        );
        assert!(
            duplicates <= 1,
            "{context}: {duplicates} frames delivered twice"
        );
    }
}

#[test]
fn consumers_drain_and_report_when_the_producer_is_killed() {
    let ring = ring_name("pkill");
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<_> = (0..2)
        .map(|i| tmp_path(&dir, &format!("c{i}.ids")))
        .collect();
    let consumers: Vec<_> = ids
        .iter()
        .map(|p| {
            spawn(&[
                "consume",
                "--ring",
                &ring,
                "--verify",
                "--json",
                "--record-ids",
                p.to_str().unwrap(),
            ])
        })
        .collect();
    let sim = spawn(&[
        "sim",
        "--ring",
        &ring,
        "--fps",
        "2000",
        "--frames",
        "1000000",
        "--nx",
        "64",
        "--ny",
        "64",
        "--wait-consumers",
        "2",
        "--json",
    ]);
    // Mid-stream: well into the run, far from its end.
    wait_published(&ring, 600);
    kill9(&sim);
    let _ = finish(sim, "sim");

    let mut drained = Vec::new();
    for (child, path) in consumers.into_iter().zip(&ids) {
        let out = finish(child, "consumer");
        assert_eq!(
            out.status.code(),
            Some(3),
            "exit status for a dead producer; stderr: {}",
            stderr(&out)
        );
        let err = stderr(&out);
        assert!(
            err.contains("producer (pid") && err.contains("died after publishing"),
            "{err}"
        );
        let c = counters(&out, "consumer");
        assert_eq!(c["end"], "producer-died");
        assert_eq!(num(&c, "verify_errors"), 0);
        let got = read_ids(path);
        assert_eq!(
            got,
            (0..got.len() as u64).collect::<Vec<_>>(),
            "gaps in a lossless consumer"
        );
        assert!(!got.is_empty());
        drained.push(got.len());
    }
    assert_eq!(
        drained[0], drained[1],
        "both consumers drain every published frame"
    );

    // The dead producer's segment is stale: listed as such, and replaced by a new producer.
    let rings = streamd().args(["rings", "--json"]).output().unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&rings.stdout).unwrap();
    let entry = listed["rings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == ring.as_str())
        .cloned();
    assert_eq!(entry.expect("stale ring listed")["producer"], "dead");
    let again = streamd()
        .args(["sim", "--ring", &ring, "--frames", "10", "--json"])
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("removed stale segment"),
        "{}",
        stderr(&again)
    );
    assert!(
        !streamd_segment(&ring).exists(),
        "a finished sim removes its segment"
    );
}

#[test]
fn clean_removes_segments_of_dead_producers_only() {
    let dead = ring_name("dead");
    let live = ring_name("live");
    let sim_dead = spawn(&["sim", "--ring", &dead, "--wait-consumers", "1"]);
    let sim_live = spawn(&["sim", "--ring", &live, "--wait-consumers", "1"]);
    wait_exists(&dead);
    wait_exists(&live);
    kill9(&sim_dead);
    let _ = finish(sim_dead, "sim");
    let out = streamd().args(["clean", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["removed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == dead.as_str()),
        "{report}"
    );
    assert!(
        report["kept"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == live.as_str()),
        "{report}"
    );
    assert!(!streamd_segment(&dead).exists());
    assert!(streamd_segment(&live).exists());
    // SIGTERM lets the live producer finish and remove its own segment.
    // SAFETY: signalling a child we spawned and have not reaped.
    unsafe { libc::kill(sim_live.id() as i32, libc::SIGTERM) };
    let out = finish(sim_live, "sim");
    assert!(out.status.success());
    assert!(!streamd_segment(&live).exists());
}

fn streamd_segment(ring: &str) -> std::path::PathBuf {
    std::path::Path::new("/dev/shm").join(format!("streamd-ring.{ring}"))
}

fn wait_exists(ring: &str) {
    let started = std::time::Instant::now();
    while !streamd_segment(ring).exists() {
        assert!(started.elapsed() < HANG_GUARD, "ring {ring} never appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A `.npy` stack of 4 frames of 16×32 u16 whose frame k equals the ramp of frame id k.
fn ramp_stack_npy(path: &std::path::Path) {
    write_npy_u16(path, (4, 16, 32), |f, i| ((f + i) % 65536) as u16);
}

#[test]
fn sim_replays_a_npy_stack_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let npy = tmp_path(&dir, "stack.npy");
    ramp_stack_npy(&npy);
    let ring = ring_name("npy");
    let consumer = spawn(&["consume", "--ring", &ring, "--verify", "--json"]);
    let pattern = format!("file:{}", npy.display());
    let sim = spawn(&[
        "sim",
        "--ring",
        &ring,
        "--pattern",
        &pattern,
        "--frames",
        "4",
        "--wait-consumers",
        "1",
        "--json",
    ]);
    let sim = counters(&finish(sim, "sim"), "sim");
    assert_eq!(num(&sim, "published"), 4);
    let c = counters(&finish(consumer, "consumer"), "consumer");
    assert_eq!(num(&c, "received"), 4);
    assert_eq!(
        num(&c, "verify_errors"),
        0,
        "replayed frames differ from the file"
    );

    let bad = tmp_path(&dir, "bad.npy");
    std::fs::write(&bad, b"not a numpy file").unwrap();
    let out = streamd()
        .args([
            "sim",
            "--ring",
            &ring_name("npybad"),
            "--pattern",
            &format!("file:{}", bad.display()),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("bad.npy is not a usable .npy frame stack: missing the NUMPY magic"),
        "{err}"
    );
}

/// Sequences below `end` of the runs of `batch` dealt to set `index` of `sets`.
fn of_set(end: u64, batch: u64, index: u64, sets: u64) -> Vec<u64> {
    (0..end).filter(|s| s / batch % sets == index).collect()
}

/// `consume` of set `set` of 2 in group `group`, runs of 4, recording ids into `ids`.
fn set_member(ring: &str, group: &str, set: &str, mode: &str, ids: &Path, slow: bool) -> Child {
    let mut args = vec![
        "consume",
        "--ring",
        ring,
        "--group",
        group,
        "--batch",
        "4",
        "--sets",
        "2",
        "--set",
        set,
        "--set-mode",
        mode,
        "--verify",
        "--json",
        "--record-ids",
        ids.to_str().unwrap(),
    ];
    if slow {
        // 1 ms a frame: mid-stream whenever it is killed, and it throttles the producer.
        args.extend(["--work-us", "1000"]);
    }
    spawn(&args)
}

fn sim_frames(ring: &str, frames: u64, consumers: u32) -> Child {
    spawn(&[
        "sim",
        "--ring",
        ring,
        "--frames",
        &frames.to_string(),
        "--nx",
        "64",
        "--ny",
        "64",
        "--slots",
        "16",
        "--wait-consumers",
        &consumers.to_string(),
        "--json",
    ])
}

/// Issue 19: PvaPy's distributor sets. The runs of 4 frames go to set 0 and set 1 in
/// turn, and every member of a set (mode all) sees every frame of it, exactly once; a
/// member killed with SIGKILL takes nothing from the others, whose counts stay exact.
#[test]
fn the_sets_of_a_group_partition_the_stream_and_each_member_sees_all_of_its_set() {
    const FRAMES: u64 = 8_000;
    let ring = ring_name("sets");
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<PathBuf> = (0..3)
        .map(|i| tmp_path(&dir, &format!("m{i}.ids")))
        .collect();
    let members = [
        set_member(&ring, "s", "0", "all", &ids[0], false),
        set_member(&ring, "s", "0", "all", &ids[1], false),
        set_member(&ring, "s", "1", "all", &ids[2], false),
    ];
    let victim_ids = tmp_path(&dir, "victim.ids");
    let victim = set_member(&ring, "s", "0", "all", &victim_ids, true);
    let sim = sim_frames(&ring, FRAMES, 4);
    let listed = wait_ring(&ring, "200 frames published", |r| {
        r["published"].as_u64().is_some_and(|p| p >= 200)
    });
    let sets: Vec<&serde_json::Value> = listed["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["name"] == "s")
        .collect();
    assert_eq!(
        sets.len(),
        4,
        "one group entry per member in mode all: {listed}"
    );
    assert!(sets
        .iter()
        .all(|g| g["set"]["sets"] == 2 && g["set"]["mode"] == "all"));
    kill9(&victim);
    assert!(
        !finish(victim, "victim").status.success(),
        "the victim finished before the kill"
    );

    let sim = counters(&finish(sim, "sim"), "sim");
    assert_eq!(num(&sim, "published"), FRAMES);
    assert_eq!(num(&sim, "consumers_reaped"), 1);
    for (i, (child, path)) in members.into_iter().zip(&ids).enumerate() {
        let out = finish(child, "set member");
        assert!(out.status.success(), "member {i}: {}", stderr(&out));
        let c = counters(&out, "set member");
        let set = if i < 2 { 0 } else { 1 };
        let expected = of_set(FRAMES, 4, set, 2);
        assert_eq!(read_ids(path), expected, "member {i} of set {set}");
        assert_eq!(
            num(&c, "received"),
            expected.len() as u64,
            "member {i}: {c}"
        );
        assert_eq!(num(&c, "missed"), 0);
        assert_eq!(num(&c, "verify_errors"), 0);
        assert_eq!(c["end"], "end-of-stream");
    }
    // What the victim got before it died was its set's frames, in order.
    let got = read_ids(&victim_ids);
    assert!(!got.is_empty());
    assert_eq!(got, of_set(FRAMES, 4, 0, 2)[..got.len()]);
}

/// Issue 19: in mode one the members of a set share its runs; one killed with SIGKILL
/// leaves its run to its set mate, so the set still gets every frame of its runs (the
/// frame it was reading possibly twice), none of another set's, and the other set is
/// untouched.
#[test]
fn a_set_member_killed_leaves_its_run_to_its_set_and_the_counts_stay_exact() {
    const FRAMES: u64 = 20_000;
    let ring = ring_name("setkill");
    let dir = tempfile::tempdir().unwrap();
    let (mate_ids, victim_ids, other_ids) = (
        tmp_path(&dir, "mate.ids"),
        tmp_path(&dir, "victim.ids"),
        tmp_path(&dir, "other.ids"),
    );
    let mate = set_member(&ring, "t", "0", "one", &mate_ids, false);
    let victim = set_member(&ring, "t", "0", "one", &victim_ids, true);
    let other = set_member(&ring, "t", "1", "one", &other_ids, false);
    let sim = sim_frames(&ring, FRAMES, 3);
    wait_ring(&ring, "the victim reading", |r| {
        r["groups"].as_array().into_iter().flatten().any(|g| {
            g["set"]["index"] == 0 && g["consumers"].as_array().is_some_and(|c| c.len() == 2)
        }) && r["published"].as_u64().is_some_and(|p| p >= 200)
    });
    kill9(&victim);
    assert!(
        !finish(victim, "victim").status.success(),
        "the victim finished before the kill"
    );
    // Once reaped, set 0 has one member and its accounting is whole.
    let reaped = wait_ring(&ring, "the victim reaped", |r| r["consumers_reaped"] == 1);
    for g in reaped["groups"].as_array().unwrap() {
        assert_eq!(
            num(g, "published"),
            num(g, "delivered") + num(g, "missed") + num(g, "in_flight"),
            "{g}"
        );
        assert_eq!(num(g, "missed"), 0);
    }

    let sim = counters(&finish(sim, "sim"), "sim");
    assert_eq!(num(&sim, "published"), FRAMES);
    let other_out = counters(&finish(other, "set 1"), "set 1");
    let set1 = of_set(FRAMES, 4, 1, 2);
    assert_eq!(read_ids(&other_ids), set1);
    assert_eq!(num(&other_out, "received"), set1.len() as u64);

    let mate_out = counters(&finish(mate, "set mate"), "set mate");
    assert_eq!(num(&mate_out, "verify_errors"), 0);
    let mate_got = read_ids(&mate_ids);
    assert_eq!(num(&mate_out, "received"), mate_got.len() as u64);
    let victim_got = read_ids(&victim_ids);
    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    for id in mate_got.iter().chain(&victim_got) {
        *counts.entry(*id).or_default() += 1;
    }
    let set0 = of_set(FRAMES, 4, 0, 2);
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        set0,
        "set 0's frames, no others"
    );
    let repeats: u32 = counts.values().map(|n| n - 1).sum();
    assert!(
        repeats <= 1,
        "{repeats} frames delivered twice; at most the one being read"
    );
    // Exact: the mate received every frame of set 0 the victim had not released.
    assert_eq!(
        mate_got.len() + victim_got.len() - repeats as usize,
        set0.len()
    );
}
