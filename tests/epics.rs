//! The EPICS bridge with real processes (issue 18): PvaPy's own simulator
//! (`pvapy-ad-sim-server`) into a `pva` source, a `pva` sink into PvaPy's own consumer
//! (`pvapy-hpc-consumer`) and a p4p client, and metadata from the simulator's PVA PVs
//! matched by the `metadata` stage. p4p and PvaPy are installed into `.venv` by
//! `scripts/install-deps`, with the streamd package; `.venv/bin` is put first on PATH.
//!
//! Every test has its own pvAccess ports (free ones, on the loopback interface) and
//! channel names with the test process's id, so tests running side by side, or other
//! EPICS servers on the machine, do not see each other.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn venv(program: &str) -> PathBuf {
    root().join(".venv/bin").join(program)
}

/// pvAccess on the loopback interface, on ports no one else uses: searches go to
/// `broadcast`, servers listen on `server` (or a free port when it is taken).
struct Epics {
    vars: Vec<(&'static str, String)>,
}

impl Epics {
    fn new() -> Epics {
        static PATH: Once = Once::new();
        PATH.call_once(|| {
            let path = std::env::var("PATH").unwrap_or_default();
            std::env::set_var(
                "PATH",
                format!("{}:{path}", root().join(".venv/bin").display()),
            );
        });
        let broadcast = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free UDP port")
            .port();
        let server = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free TCP port")
            .port();
        let vars = vec![
            ("EPICS_PVA_ADDR_LIST", "127.0.0.1".to_string()),
            ("EPICS_PVA_AUTO_ADDR_LIST", "NO".to_string()),
            ("EPICS_PVA_BROADCAST_PORT", broadcast.to_string()),
            ("EPICS_PVAS_BROADCAST_PORT", broadcast.to_string()),
            ("EPICS_PVA_SERVER_PORT", server.to_string()),
            ("EPICS_PVAS_SERVER_PORT", server.to_string()),
            // PvaPy's server binds its search socket per interface, loopback only when
            // asked to.
            ("EPICS_PVAS_INTF_ADDR_LIST", "127.0.0.1".to_string()),
            ("EPICS_PVAS_BEACON_ADDR_LIST", "127.0.0.1".to_string()),
            ("EPICS_PVAS_AUTO_BEACON_ADDR_LIST", "NO".to_string()),
        ];
        Epics { vars }
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.envs(self.vars.iter().map(|(k, v)| (k, v)));
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// `streamd run FILE --json` in `dir`.
    fn run(&self, file: &Path, dir: &Path) -> Child {
        self.command(env!("CARGO_BIN_EXE_streamd"))
            .args(["run", file.to_str().unwrap(), "--json", "--output"])
            .arg(dir)
            .spawn()
            .expect("spawn streamd run")
    }

    /// PvaPy's simulator serving `channel`: every frame of `npy` once (its frame cache
    /// smaller than the file, so it stops after the last), `fps` a second, after a start
    /// delay that leaves streamd time to start and subscribe first. (The simulator has
    /// no trigger to wait for instead; and a client that searches before the server
    /// exists finds it only at its next, backed-off, search.)
    fn sim_server(&self, channel: &str, npy: &Path, fps: u32, extra: &[&str]) -> Child {
        self.command(venv("pvapy-ad-sim-server"))
            .args(["-cn", channel, "-if"])
            .arg(npy)
            .args(["-cs", "10", "-fps", &fps.to_string()])
            .args(["-std", "8", "-shd", "1", "-rp", "0", "-dc"])
            .args(extra)
            .spawn()
            .expect("run pvapy-ad-sim-server (scripts/install-deps installs PvaPy into .venv)")
    }

    fn python(&self, script: &str, args: &[&str]) -> Child {
        self.command(venv("python"))
            .arg(root().join("tests/python").join(script))
            .args(args)
            .spawn()
            .expect("run .venv/bin/python")
    }
}

/// A channel name of this test process.
fn channel(tag: &str) -> String {
    format!("sd{}:{tag}", std::process::id())
}

/// A `.npy` stack of `frames` u16 frames of 48 × 64 whose pixels differ frame to frame.
fn frames_npy(dir: &Path, frames: u64) -> PathBuf {
    let path = dir.join("frames.npy");
    write_npy_u16(&path, (frames, 48, 64), |f, i| {
        ((f * 7919 + i * 31) % 65_521) as u16
    });
    path
}

/// The pipeline of a `pva` source from `channel` into the bit-for-bit check.
fn source_pipeline(dir: &Path, name: &str, channel: &str, ring_slots: u32, extra: &str) -> PathBuf {
    let file = dir.join("pipeline.toml");
    let text = format!(
        r#"name = "{name}"

[[ring]]
name = "raw"
slots = {ring_slots}

[source]
kind = "pva"
ring = "raw"
channel = "{channel}"
until_disconnect = true
nx = 64
ny = 48
dtype = "u16"
{extra}

[[stage]]
name = "check"
processor = "python"
input = "raw"
args = {{ file = "{check}", class = "NpyCheck", npy = "{npy}", ids_file = "check.ids", delay_ms = {delay} }}
"#,
        check = root().join("tests/python/npy_check.py").display(),
        npy = dir.join("frames.npy").display(),
        delay = if extra.contains("queue_size") { 10 } else { 0 },
    );
    std::fs::write(&file, text).unwrap();
    file
}

/// Waits for a process and says what it printed when it failed.
fn succeeded(child: Child, what: &str) -> Output {
    let out = finish(child, what);
    assert!(
        out.status.success(),
        "{what} exited {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    out
}

/// How many frames the simulator published (its closing report).
fn published_by_sim(out: &Output) -> u64 {
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Published frames:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("the simulator printed no 'Published frames':\n{text}"))
}

/// PvaPy's simulator → `pva` source → a check of every pixel against the file.
fn sim_into_source(tag: &str, frames: u64, fps: u32, slow: bool) -> (Value, Vec<u64>, u64) {
    let dir = tempfile::tempdir().unwrap();
    let epics = Epics::new();
    let image = channel(tag);
    let npy = frames_npy(dir.path(), frames);
    // Slow on purpose: a 10 ms stage behind a 4-slot ring and 4-deep monitor queues.
    let (slots, extra) = if slow {
        (4, "queue_size = 4")
    } else {
        (64, "queue_size = 100")
    };
    let file = source_pipeline(dir.path(), &pipeline_name(tag), &image, slots, extra);
    // The server first, so the source finds it at once; it publishes after 8 s.
    let sim = epics.sim_server(&image, &npy, fps, &[]);
    let run = epics.run(&file, dir.path());
    let out = succeeded(run, "streamd run");
    let report = counters(&out, "streamd run");
    let sim = succeeded(sim, "pvapy-ad-sim-server");
    let ids = read_ids(&dir.path().join("check.ids"));
    (report, ids, published_by_sim(&sim))
}

#[test]
fn pvapys_simulator_feeds_a_pva_source_bit_for_bit_with_continuous_unique_ids() {
    let frames = 120;
    let (report, ids, published) = sim_into_source("pvain", frames, 100, false);
    assert_eq!(
        published, frames,
        "the simulator serves each frame of its file once"
    );
    assert_eq!(
        ids.first().copied(),
        Some(1),
        "the source saw the first frame: it subscribed within the simulator's 8 s start delay (a machine too loaded to start a pipeline in 8 s fails here)"
    );
    let expected: Vec<u64> = (1..=frames).collect();
    assert_eq!(ids, expected, "every uniqueId, in order, once");
    assert_eq!(counter(&report, "check", "exact"), frames, "{report}");
    assert_eq!(counter(&report, "check", "wrong"), 0, "{report}");
    let source = stage(&report, "source");
    assert_eq!(num(source, "frames_out"), frames);
    assert_eq!(num(source, "missed"), 0);
    assert_eq!(num(source, "dropped"), 0);
    // The channel's value before the first frame is not a frame.
    assert_eq!(counter(&report, "source", "empty_updates"), 1);
    assert_eq!(counter(&report, "source", "updates"), frames + 1);
}

#[test]
fn a_slow_stage_loses_frames_and_the_source_counts_exactly_the_unique_id_gaps() {
    let frames = 200;
    let (report, ids, published) = sim_into_source("pvaslow", frames, 400, true);
    assert_eq!(published, frames);
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "frame ids only grow: {ids:?}"
    );
    let first = ids[0];
    let last = *ids.last().unwrap();
    assert_eq!(last, frames, "the newest update survives an overrun");
    let gaps = (last - first + 1) - ids.len() as u64;
    let source = stage(&report, "source");
    assert!(
        gaps > 0,
        "a 10 ms stage behind 4-deep queues kept up with 400 fps: {report}"
    );
    assert_eq!(
        num(source, "missed"),
        gaps,
        "the source counts each frame missing between the ids it took"
    );
    assert_eq!(num(source, "frames_out"), ids.len() as u64);
    assert_eq!(
        num(source, "dropped"),
        0,
        "the ring blocks; loss is upstream"
    );
    assert_eq!(counter(&report, "check", "exact"), ids.len() as u64);
    assert_eq!(counter(&report, "check", "wrong"), 0);
}

#[test]
fn a_pva_sink_feeds_pvapys_consumer_without_loss_and_p4p_sees_the_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let epics = Epics::new();
    let image = channel("out");
    let frames: u64 = 300;
    let file = dir.path().join("sink.toml");
    // The simulator with metadata values attached as attributes (x every frame, y every
    // second one), served; the stage waits for both clients before the first frame.
    std::fs::write(
        &file,
        format!(
            r#"name = "{name}"

[[ring]]
name = "raw"
slots = 32

[[ring]]
name = "meta"
slots = 256

[[ring]]
name = "tagged"
slots = 32

[source]
ring = "raw"
nx = 64
ny = 64
dtype = "u16"
frames = {frames}
metadata = {{ ring = "meta", channels = "x,y/2" }}

[[stage]]
name = "attach"
processor = "metadata"
input = "raw"
metadata = "meta"
output = "tagged"
args = {{ channels = ["x", "y"], tolerance_us = 0, wait_ms = 1000 }}

[[stage]]
name = "serve"
processor = "pva"
input = "tagged"
args = {{ channel = "{image}", wait_clients = 2 }}
"#,
            name = pipeline_name("pvaout"),
        ),
    )
    .unwrap();
    let run = epics.run(&file, dir.path());
    let prefix = format!("sd{}c", std::process::id());
    let consumer_log = dir.path().join("consumer.log");
    let consumer = epics
        .command(venv("pvapy-hpc-consumer"))
        .args(["--input-channel", &image])
        .args(["--status-channel", &format!("{prefix}:*:status")])
        .args(["--control-channel", &format!("{prefix}:*:control")])
        .args([
            "--processor-class",
            "pvapy.hpc.userDataProcessor.UserDataProcessor",
        ])
        .args(["--server-queue-size", "1000", "--report-period", "0.5"])
        .arg("--disable-curses")
        // Its reports go to a file: a pipe nobody reads would fill and stall it.
        .stdout(std::fs::File::create(&consumer_log).unwrap())
        .spawn()
        .expect("run pvapy-hpc-consumer (scripts/install-deps installs PvaPy into .venv)");
    let recorder = epics.python("pva_tool.py", &["record", &image, &frames.to_string()]);
    let run = succeeded(run, "streamd run");
    let report = counters(&run, "streamd run");
    let served = counter(&report, "serve", "served");
    assert_eq!(served, frames, "{report}");

    let status = epics.python(
        "pva_tool.py",
        &[
            "consumer-status",
            &format!("{prefix}:1:status"),
            &served.to_string(),
        ],
    );
    let status = counters(&succeeded(status, "the consumer's status"), "status");
    assert_eq!(num(&status, "nProcessed"), served, "{status}");
    assert_eq!(num(&status, "nMissed"), 0, "{status}");
    assert_eq!(num(&status, "nOverruns"), 0, "{status}");
    assert_eq!(num(&status, "nErrors"), 0, "{status}");
    assert_eq!(
        (num(&status, "firstObjectId"), num(&status, "lastObjectId")),
        (0, frames - 1),
        "uniqueId is the frame id"
    );
    // Ctrl-C: PvaPy's consumer stops and prints its final counters.
    // SAFETY: a signal to a child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(consumer.id() as i32, libc::SIGINT) }, 0);
    succeeded(consumer, "pvapy-hpc-consumer");
    let report = std::fs::read_to_string(&consumer_log).unwrap();
    assert!(report.contains("'nMissed': 0"), "{report}");

    let recorded = counters(&succeeded(recorder, "the p4p recorder"), "recorder");
    let got = recorded["frames"].as_array().unwrap();
    assert_eq!(got.len() as u64, frames);
    for (f, frame) in got.iter().enumerate() {
        let f = f as u64;
        assert_eq!(num(frame, "id"), f, "{frame}");
        assert_eq!(frame["shape"], serde_json::json!([64, 64]));
        assert_eq!(frame["dtype"], "uint16");
        assert_eq!(frame["ramp"], true, "frame {f}'s pixels");
        let attrs: BTreeMap<String, Value> =
            serde_json::from_value(frame["attrs"].clone()).unwrap();
        assert_eq!(attrs["ColorMode"], 0, "{frame}");
        assert_eq!(attrs["x"].as_f64(), Some(f as f64 + 0.125), "{frame}");
        assert_eq!(
            attrs.get("y").and_then(Value::as_f64),
            (f % 2 == 0).then_some(f as f64 + 0.25),
            "{frame}"
        );
    }
}

#[test]
fn metadata_from_pvapys_simulator_pvs_is_matched_to_every_frame() {
    let dir = tempfile::tempdir().unwrap();
    let epics = Epics::new();
    let image = channel("mimg");
    let frames = 100;
    let npy = frames_npy(dir.path(), frames);
    let pvs: Vec<String> = ["x", "y", "z"]
        .iter()
        .map(|c| channel(&format!("m{c}")))
        .collect();
    let file = dir.path().join("meta.toml");
    std::fs::write(
        &file,
        format!(
            r#"name = "{name}"

[[ring]]
name = "raw"
slots = 64

[[ring]]
name = "meta"
slots = 1024

[[ring]]
name = "tagged"
slots = 64

[source]
kind = "pva"
ring = "raw"
channel = "{image}"
until_disconnect = true
queue_size = 100
nx = 64
ny = 48
dtype = "u16"
metadata = {{ ring = "meta", channels = "x=pva://{x},y=pva://{y},z=pva://{z}", queue_size = 100 }}

[[stage]]
name = "attach"
processor = "metadata"
input = "raw"
metadata = "meta"
output = "tagged"
args = {{ channels = ["x", "y", "z"], tolerance_us = 0, wait_ms = 2000, max_held = 1000 }}

[[stage]]
name = "check"
processor = "verify"
input = "tagged"
args = {{ pattern = "none", ids_file = "meta.ids", attributes = ["x", "y", "z"] }}
"#,
            name = pipeline_name("pvameta"),
            x = pvs[0],
            y = pvs[1],
            z = pvs[2],
        ),
    )
    .unwrap();
    let mpv = pvs
        .iter()
        .map(|p| format!("pva://{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let sim = epics.sim_server(&image, &npy, 100, &["-mpv", &mpv]);
    let run = epics.run(&file, dir.path());
    let report = counters(&succeeded(run, "streamd run"), "streamd run");
    assert_eq!(
        published_by_sim(&succeeded(sim, "pvapy-ad-sim-server")),
        frames
    );
    assert_eq!(
        num(stage(&report, "source"), "frames_out"),
        frames,
        "{report}"
    );
    for c in ["x", "y", "z"] {
        // The simulator stamps each value with its frame's time: an exact match.
        assert_eq!(
            counter(&report, "attach", &format!("{c}.matched")),
            frames,
            "{report}"
        );
        assert_eq!(
            counter(&report, "attach", &format!("{c}.unmatched")),
            0,
            "{report}"
        );
        assert_eq!(
            counter(&report, "attach", &format!("{c}.discarded")),
            0,
            "{report}"
        );
    }
    // Each PV's value before the simulator's first update has no time: not published.
    assert_eq!(counter(&report, "source", "metadata_unstamped"), 3);
    assert_eq!(counter(&report, "source", "metadata_values"), 3 * frames);
    assert_eq!(counter(&report, "source", "metadata_dropped"), 0);
    let records = read_records(&dir.path().join("meta.ids"));
    assert_eq!(records.len() as u64, frames);
    for (i, (id, attrs)) in records.iter().enumerate() {
        assert_eq!(*id, i as u64 + 1);
        for c in ["x", "y", "z"] {
            let v: f64 = attrs[c].parse().unwrap_or(f64::NAN);
            assert!((0.0..1.0).contains(&v), "frame {id}: {c}={}", attrs[c]);
        }
    }
}

#[test]
fn ntndarray_updates_become_frames_of_every_areadetector_type_shape_and_codec() {
    let epics = Epics::new();
    let out = succeeded(
        epics.python("pva_mapping.py", &[]),
        "tests/python/pva_mapping.py",
    );
    let found = counters(&out, "pva_mapping.py");
    let found = found.as_object().unwrap();
    for (what, ok) in found.iter().filter(|(k, _)| !k.ends_with("message")) {
        assert_eq!(ok, &Value::Bool(true), "{what}: {found:?}");
    }
    for dtype in [
        "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32",
        "float64",
    ] {
        assert!(found.contains_key(&format!("dtype {dtype}")), "{dtype}");
    }
}

#[test]
fn pipeline_files_name_what_is_wrong_with_a_pva_source_or_sink() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[source]\nkind = \"pva\"\nring = \"raw\"\nnx = 8\nny = 8\n",
            "a pva source needs channel = \"PV name\"",
        ),
        (
            "[source]\nring = \"raw\"\nchannel = \"x\"\n",
            "channel belongs to an EPICS source; add kind = \"pva\"",
        ),
        (
            "[source]\nkind = \"pva\"\nring = \"raw\"\nchannel = \"x\"\nnx = 8\nny = 8\nqueue_size = -1\n",
            "queue_size must be 0 to 1000000, got -1",
        ),
        (
            "[source]\nring = \"raw\"\nmetadata = { ring = \"meta\", channels = \"pva://x\" }\n",
            "channels read from PVs need a source that runs in Python",
        ),
        (
            "[source]\nkind = \"pva\"\nring = \"raw\"\nchannel = \"x\"\nnx = 8\nny = 8\nmetadata = { ring = \"meta\", channels = \"pva://x,y\" }\n",
            "write every channel as pva://PV or ca://PV",
        ),
        (
            "[source]\nring = \"raw\"\n[[stage]]\nname = \"s\"\nprocessor = \"pva\"\ninput = \"raw\"\n",
            "pva needs channel = \"...\"",
        ),
    ];
    for (i, (body, message)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(
            &file,
            format!("name = \"bad\"\n[[ring]]\nname = \"raw\"\n[[ring]]\nname = \"meta\"\n{body}"),
        )
        .unwrap();
        let out = streamd()
            .args(["check", file.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "case {i}: {}", stderr(&out));
        let text = stderr(&out);
        assert!(
            text.contains(message) && text.lines().count() == 1,
            "case {i}: expected {message:?} in one line, got:\n{text}"
        );
    }
}
