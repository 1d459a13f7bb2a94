//! DECTRIS Stream V2 over ZeroMQ (issue 17) with real processes: a Python sender written
//! from DECTRIS's documentation into a `zmq` source; broken messages and a sender that
//! vanishes; a `zmq` sink into a Python receiver that decompresses with DECTRIS's own
//! package; and three "hosts" in network namespaces sharing one stream. The Python side
//! (pyzmq, cbor2, bitshuffle, dectris-compression, h5py) is installed into `.venv` by
//! `scripts/install-deps`.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn script(name: &str) -> String {
    root().join("tests/python").join(name).display().to_string()
}

fn python(args: &[&str]) -> Child {
    Command::new(root().join(".venv/bin/python"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run .venv/bin/python (scripts/install-deps installs it)")
}

/// A TCP port for this test process and `slot` (tests run in parallel).
fn port(slot: u16) -> u16 {
    20_000 + (std::process::id() % 4000) as u16 * 10 + slot
}

/// The source worker's entry of a status report.
fn source(report: &Value) -> &Value {
    worker(report, "source", 0)
}

fn sender_args(endpoint: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        script("stream2_sender.py"),
        "--endpoint".into(),
        endpoint.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn spawn_sender(endpoint: &str, extra: &[&str]) -> Child {
    let args = sender_args(endpoint, extra);
    python(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn a_stream_v2_series_from_dectris_documentation_arrives_bit_exact_with_gaps_counted() {
    let dir = tempfile::tempdir().unwrap();
    let p = port(1);
    let name = pipeline_name("zin");
    let run = start_edited(
        "zmq-in.toml",
        &name,
        dir.path(),
        &[("tcp://127.0.0.1:31001", &format!("tcp://127.0.0.1:{p}"))],
    );
    let frames = 2000u64;
    let skip = 97u64;
    let sender = spawn_sender(
        &format!("tcp://127.0.0.1:{p}"),
        &[
            "--frames",
            "2000",
            "--skip",
            "97",
            "--bslz4-every",
            "3",
            "--lz4-every",
            "7",
            "--big-endian-every",
            "5",
        ],
    );
    let sent = python_json(sender, "the Stream V2 sender");
    // The end message ends the run.
    let (_, report) = finished_ok(run, "the zmq-in pipeline");
    let gaps: Vec<u64> = (0..frames).filter(|i| i % skip == skip - 1).collect();
    assert_eq!(num(&sent, "skipped"), gaps.len() as u64);
    assert!(num(&sent, "bslz4") > 0 && num(&sent, "lz4") > 0 && num(&sent, "big_endian") > 0);
    let received = frames - gaps.len() as u64;
    let src = source(&report);
    assert_eq!(num(src, "frames_out"), received, "{src}");
    assert_eq!(
        num(src, "missed"),
        gaps.len() as u64,
        "gaps counted exactly: {src}"
    );
    assert_eq!(num(src, "errors"), 0, "{src}");
    assert_eq!(num(&src["counters"], "series_ended"), 1);
    // Bit-exact in the ring: the verifier checked every pixel against the ramp.
    assert_eq!(counter(&report, "check", "verified"), received);
    assert_eq!(counter(&report, "check", "verify_errors"), 0);
    let counts = id_counts(dir.path(), &["ids-0.txt"]);
    assert!(counts.values().all(|&n| n == 1), "each id once");
    let expected: Vec<u64> = (0..frames).filter(|i| !gaps.contains(i)).collect();
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), expected);
    assert_eq!(counter(&report, "h5", "frames_written"), received);
    // Bit-exact on disk too, and the start message's geometry in the NXmx master.
    let check = python(&[
        &script("check_series_master.py"),
        dir.path().join("series_master.h5").to_str().unwrap(),
    ]);
    let master = python_json(check, "the master check");
    assert_eq!(num(&master, "frames"), received, "{master}");
    assert_eq!(master["wrong"], serde_json::json!([]), "{master}");
    assert_eq!(
        master["geometry_mismatches"],
        serde_json::json!([]),
        "{master}"
    );
}

#[test]
fn broken_messages_and_a_vanished_sender_are_counted_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = port(2);
    let name = pipeline_name("zbad");
    let run = start_edited(
        "zmq-in.toml",
        &name,
        dir.path(),
        &[("tcp://127.0.0.1:31001", &format!("tcp://127.0.0.1:{p}"))],
    );
    // Ten images, five broken messages after the third, then gone without an end.
    let sender = spawn_sender(
        &format!("tcp://127.0.0.1:{p}"),
        &[
            "--frames",
            "100",
            "--bslz4-every",
            "2",
            "--bad",
            "malformed,dtype,oversized,truncated,type",
            "--vanish-after",
            "10",
        ],
    );
    let sent = python_json(sender, "the vanishing sender");
    assert_eq!(num(&sent, "images"), 10);
    assert_eq!(num(&sent, "bad"), 5);
    let status = wait_status(&name, "the sender's departure counted", |s| {
        num(&source(s)["counters"], "senders_lost") == 1 && num(source(s), "frames_out") == 10
    });
    let c = &source(&status)["counters"];
    assert_eq!(num(c, "refused_malformed"), 1, "{c}");
    assert_eq!(
        num(c, "refused_unsupported"),
        2,
        "a wrong dtype and an unknown type: {c}"
    );
    assert_eq!(num(c, "refused_oversized"), 1, "{c}");
    assert_eq!(num(c, "refused_truncated"), 1, "{c}");
    assert_eq!(num(c, "refused_invalid"), 0, "{c}");
    // Each refusal and the departure is an error with its reason; nothing crashed.
    assert_eq!(num(source(&status), "errors"), 6, "{status}");
    assert_eq!(num(source(&status), "restarts"), 0);
    let last = source(&status)["last_error"].as_str().unwrap_or_default();
    assert!(
        last.contains("went away in the middle of series 42"),
        "{last}"
    );
    let stop = streamd()
        .args(["stop", "--pipeline", &name])
        .output()
        .unwrap();
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    let out = finish(run, "the zmq-in pipeline after stop");
    let err = stderr(&out);
    for reason in [
        "refused (malformed)",
        "pixels of type int16 (tag 77) are not supported",
        "more than the ring's slots hold",
    ] {
        assert!(err.contains(reason), "stderr names {reason:?}:\n{err}");
    }
    let report = counters(&out, "the zmq-in pipeline");
    assert_eq!(counter(&report, "check", "verified"), 10);
    assert_eq!(counter(&report, "check", "verify_errors"), 0);
    assert_eq!(counter(&report, "h5", "frames_written"), 10);
}

#[test]
fn a_zmq_sink_is_read_bit_exact_by_dectris_compression() {
    for (compression, dtype, tag) in [("bslz4", "u16", "zout"), ("none", "f32", "zoutf")] {
        let dir = tempfile::tempdir().unwrap();
        let p = port(3);
        let name = pipeline_name(tag);
        let run = start_edited(
            "zmq-sim.toml",
            &name,
            dir.path(),
            &[
                ("tcp://*:31001", &format!("tcp://*:{p}")),
                (
                    "compression = \"bslz4\"",
                    &format!("compression = \"{compression}\""),
                ),
                ("dtype = \"u16\"", &format!("dtype = \"{dtype}\"")),
                ("nx = 1024", "nx = 300"),
                ("ny = 1024", "ny = 200"),
                ("fps = 100", "fps = 0"),
                ("frames = 1000", "frames = 500"),
            ],
        );
        let receiver = python(&[
            &script("stream2_receiver.py"),
            "--endpoint",
            &format!("tcp://127.0.0.1:{p}"),
            "--ramp",
        ]);
        let got = python_json(receiver, "the DECTRIS-style receiver");
        let (_, report) = finished_ok(run, "the zmq-sim pipeline");
        let ids: Vec<u64> = got["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(ids, (0..500).collect::<Vec<_>>(), "{compression}");
        assert_eq!(
            got["wrong"],
            serde_json::json!([]),
            "bit-exact: {compression}"
        );
        let compressed = if compression == "bslz4" { 500 } else { 0 };
        assert_eq!(num(&got, "compressed"), compressed);
        assert_eq!((num(&got, "starts"), num(&got, "ends")), (1, 1));
        let start = &got["start"];
        assert_eq!(
            start["detector_translation"],
            serde_json::json!([0.0, 0.0, 0.2])
        );
        assert_eq!(start["beam_center_x"], 500.0);
        assert_eq!(start["beam_center_y"], 512.0);
        assert_eq!(start["incident_wavelength"], 0.9763);
        assert_eq!(start["image_size_x"], 300);
        let push = &worker(&report, "push", 0)["counters"];
        assert_eq!(num(push, "frames_sent"), 500, "{push}");
        assert_eq!(num(push, "frames_dropped"), 0);
        assert_eq!(num(push, "frames_queued"), 0);
        assert_eq!((num(push, "starts_sent"), num(push, "ends_sent")), (1, 1));
    }
}

// ---- Three hosts ---------------------------------------------------------------------

/// Network namespaces `A`, `B` and `C` (named after this process) with veth links
/// A–B (10.77.1.0/24) and A–C (10.77.2.0/24); removed on drop, a panic included.
struct Hosts {
    names: [String; 3],
}

impl Hosts {
    fn create() -> Hosts {
        let is_root = uid() == 0;
        let ip = Command::new("ip").arg("-V").output();
        assert!(
            is_root && ip.is_ok_and(|o| o.status.success()),
            "the across-hosts test makes network namespaces: it needs root and iproute2 (`ip`); run the tests as root with iproute2 installed"
        );
        let id = std::process::id();
        let names = ["A", "B", "C"].map(|h| format!("sd{h}{id}"));
        let hosts = Hosts { names };
        for n in &hosts.names {
            sh(&["ip", "netns", "add", n]);
            sh(&["ip", "-n", n, "link", "set", "lo", "up"]);
        }
        let [a, b, c] = &hosts.names;
        for (peer, net, tag) in [(b, "10.77.1", "b"), (c, "10.77.2", "c")] {
            let (va, vp) = (
                format!("va{tag}{}", id % 100_000),
                format!("vp{tag}{}", id % 100_000),
            );
            sh(&[
                "ip", "link", "add", &va, "netns", a, "type", "veth", "peer", "name", &vp, "netns",
                peer,
            ]);
            sh(&[
                "ip",
                "-n",
                a,
                "addr",
                "add",
                &format!("{net}.1/24"),
                "dev",
                &va,
            ]);
            sh(&[
                "ip",
                "-n",
                peer,
                "addr",
                "add",
                &format!("{net}.2/24"),
                "dev",
                &vp,
            ]);
            sh(&["ip", "-n", a, "link", "set", &va, "up"]);
            sh(&["ip", "-n", peer, "link", "set", &vp, "up"]);
        }
        hosts
    }

    /// `streamd ARGS` on host `h` (0 = A).
    fn streamd(&self, h: usize, args: &[&str]) -> Child {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.names[h],
                env!("CARGO_BIN_EXE_streamd"),
            ])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ip netns exec streamd")
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for n in &self.names {
            // Any streamd left in a namespace dies with its supervisor's pipeline; the
            // namespace goes with its veth ends.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", n]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "delete", n]).status();
        }
    }
}

fn uid() -> u32 {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(u32::MAX)
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The published frames of pipeline `name`'s source; `None` while it is not up.
fn published(name: &str) -> Option<u64> {
    status(name).map(|s| num(source(&s), "frames_out"))
}

/// Starts a receiving host's pipeline: zmq source (shared) → verify + raw writer.
fn start_receiver(hosts: &Hosts, h: usize, name: &str, dir: &Path, endpoint: &str) -> Child {
    let file = dir.join(format!("{name}.toml"));
    let text = std::fs::read_to_string(fixture("zmq-in.toml"))
        .unwrap()
        .replace("tcp://127.0.0.1:31001", endpoint)
        .replace("# shared = false ", "shared = true ")
        .replace("nx = 256", "nx = 128")
        .replace("ny = 256", "ny = 128");
    std::fs::write(&file, text).unwrap();
    let out = dir.join(name);
    std::fs::create_dir_all(&out).unwrap();
    hosts.streamd(
        h,
        &[
            "run",
            file.to_str().unwrap(),
            "--name",
            name,
            "--output",
            out.to_str().unwrap(),
            "--json",
        ],
    )
}

fn start_sender(hosts: &Hosts, name: &str, dir: &Path, p: u16, frames: u64, fps: u64) -> Child {
    let file = edited_fixture(
        "zmq-sim.toml",
        dir,
        &[
            ("tcp://*:31001", &format!("tcp://*:{p}")),
            ("nx = 1024", "nx = 128"),
            ("ny = 1024", "ny = 128"),
            ("fps = 100", &format!("fps = {fps}")),
            ("frames = 1000", &format!("frames = {frames}")),
            ("wait_receivers = 1", "wait_receivers = 2"),
        ],
    );
    hosts.streamd(
        0,
        &["run", file.to_str().unwrap(), "--name", name, "--json"],
    )
}

fn ids_of(dir: &Path, name: &str) -> Vec<u64> {
    read_ids(&dir.join(name).join("ids-0.txt"))
}

/// Waits until `done` holds, checking every 20 ms, under the hang guard.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < HANG_GUARD, "never happened: {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The last JSON line a pipeline printed (its final status).
fn final_report(child: Child, what: &str) -> Value {
    let out = finish(child, what);
    counters(&out, what)
}

/// A receiving host's pipeline, running or ended.
struct Receiver {
    name: String,
    child: Option<Child>,
    report: Option<Value>,
}

impl Receiver {
    /// Frames its source published so far (or in all, once it ended).
    fn published(&mut self) -> u64 {
        if let Some(child) = self.child.as_mut() {
            if child.try_wait().unwrap().is_some() {
                let child = self.child.take().unwrap();
                self.report = Some(final_report(child, &self.name));
            }
        }
        match &self.report {
            Some(r) => num(source(r), "frames_out"),
            None => published(&self.name).unwrap_or(0),
        }
    }

    /// Its final report once it ends by itself, with the series' end message.
    fn ended(mut self) -> Value {
        match self.child.take() {
            Some(child) => final_report(child, &self.name),
            None => self.report.take().unwrap(),
        }
    }

    /// Its final report, stopping it first when it still runs.
    fn end(mut self) -> Value {
        if let Some(mut child) = self.child.take() {
            if child.try_wait().unwrap().is_none() {
                // It may end by itself (an end message) just before; then `stop` finds
                // no pipeline, which is fine.
                let _ = streamd().args(["stop", "--pipeline", &self.name]).output();
            }
            return final_report(child, &self.name);
        }
        self.report.take().unwrap()
    }
}

#[test]
fn two_hosts_share_a_third_hosts_stream_and_a_stopped_receivers_queue_is_counted_lost() {
    let hosts = Hosts::create();
    let dir = tempfile::tempdir().unwrap();
    let p = port(4);
    let id = std::process::id() % 10_000;
    let (na, nb, nc) = (format!("hA{id}"), format!("hB{id}"), format!("hC{id}"));

    // Run 1: both receivers to the end. Every frame is stored exactly once over B and C.
    let frames = 3000u64;
    let receiver = |h: usize, name: &String, net: &str, dir: &Path| Receiver {
        name: name.clone(),
        child: Some(start_receiver(
            &hosts,
            h,
            name,
            dir,
            &format!("tcp://{net}.1:{p}"),
        )),
        report: None,
    };
    let mut b = receiver(1, &nb, "10.77.1", dir.path());
    let mut c = receiver(2, &nc, "10.77.2", dir.path());
    let a = start_sender(&hosts, &na, dir.path(), p, frames, 0);
    let report_a = final_report(a, "host A");
    let push = &worker(&report_a, "push", 0)["counters"];
    assert_eq!(num(push, "frames_sent"), frames, "{push}");
    assert_eq!(num(push, "frames_dropped"), 0, "{push}");
    assert_eq!(
        num(push, "starts_sent"),
        2,
        "one start to each receiver: {push}"
    );
    // Each receiver ends with its end message; one that got none (ZeroMQ dealt both ends
    // to the other) is stopped once every frame sent is in one of the two.
    wait_for("B and C published every frame A sent", || {
        b.published() + c.published() == frames
    });
    let (rb, rc) = (b.end(), c.end());
    let (ib, ic) = (ids_of(dir.path(), &nb), ids_of(dir.path(), &nc));
    assert!(
        !ib.is_empty() && !ic.is_empty(),
        "both share: B {} C {}",
        ib.len(),
        ic.len()
    );
    let mut counts = std::collections::BTreeMap::new();
    for i in ib.iter().chain(&ic) {
        *counts.entry(*i).or_insert(0u32) += 1;
    }
    assert_exactly_once(&counts, frames, "B ∪ C");
    for (r, ids, h) in [(&rb, &ib, "B"), (&rc, &ic, "C")] {
        assert_eq!(num(source(r), "frames_out"), ids.len() as u64, "host {h}");
        assert_eq!(
            num(source(r), "missed"),
            0,
            "shared: gaps are the other's, host {h}"
        );
        assert_eq!(counter(r, "check", "verify_errors"), 0, "host {h}");
        assert_eq!(
            counter(r, "h5", "frames_written"),
            ids.len() as u64,
            "host {h}"
        );
    }

    // Run 2: C is stopped mid-run. What C had queued (ZeroMQ's queue for C at A, the
    // TCP buffers, C's receive queue) is lost, not re-sent to B: ZeroMQ drops a departed
    // receiver's queue and a PULL receiver acknowledges nothing. The loss is A's
    // frames_sent minus what B and C published, and exactly those ids are in neither.
    let dir2 = tempfile::tempdir().unwrap();
    let frames = 4000u64;
    let b = receiver(1, &nb, "10.77.1", dir2.path());
    let mut c = receiver(2, &nc, "10.77.2", dir2.path());
    let a = start_sender(&hosts, &na, dir2.path(), p, frames, 1000);
    wait_for("C published 300 frames", || c.published() >= 300);
    let rc = c.end();
    let report_a = final_report(a, "host A");
    // B ends by itself: it reads the end message after every image queued before it (a
    // `stop` now could cut it short of the end while it still works through its queue).
    let rb = b.ended();
    let push = &worker(&report_a, "push", 0)["counters"];
    let (sent, dropped) = (num(push, "frames_sent"), num(push, "frames_dropped"));
    // A frame handed to ZeroMQ just as C left (its receiver gone between the sink's
    // poll and its send) is counted dropped by the sink.
    assert_eq!(
        sent + dropped,
        frames,
        "every frame sent or counted: {push}"
    );
    let (ib, ic) = (ids_of(dir2.path(), &nb), ids_of(dir2.path(), &nc));
    let (pb, pc) = (
        num(source(&rb), "frames_out"),
        num(source(&rc), "frames_out"),
    );
    assert_eq!((pb, pc), (ib.len() as u64, ic.len() as u64));
    assert_eq!(
        num(&source(&rb)["counters"], "series_ended"),
        1,
        "B got the end"
    );
    let mut seen = std::collections::BTreeSet::new();
    for i in ib.iter().chain(&ic) {
        assert!(seen.insert(*i), "frame {i} stored twice");
    }
    let lost: Vec<u64> = (0..frames).filter(|i| !seen.contains(i)).collect();
    assert_eq!(
        lost.len() as u64,
        (sent - pb - pc) + dropped,
        "the counters agree with the files: lost with C's queue = sent - B - C, plus dropped"
    );
    eprintln!(
        "across hosts: B {pb}, C {pc} (stopped), lost with C's queue {}, dropped by the sink {dropped}",
        sent - pb - pc
    );
    drop(hosts);
}
