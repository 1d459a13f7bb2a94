//! `streamd rings` and `streamd clean`: what rings exist, and removing stale ones.

use super::Status;
use crate::control::status::ring_json;
use crate::ring::{list_names, segment_path, AttachError, RingInspector};
use anyhow::Context;
use serde_json::json;

pub fn list(json_out: bool) -> anyhow::Result<Status> {
    let mut rings = Vec::new();
    for name in list_names().context("could not list /dev/shm")? {
        match RingInspector::open(&name) {
            Ok(inspector) => rings.push(ring_json(&inspector.snapshot())),
            Err(e) => rings.push(json!({ "name": name, "error": e.to_string() })),
        }
    }
    if json_out {
        println!("{}", json!({ "rings": rings }));
        return Ok(Status::Ok);
    }
    if rings.is_empty() {
        println!("no rings in /dev/shm");
    }
    for ring in &rings {
        if let Some(err) = ring.get("error") {
            println!(
                "{}: {}",
                ring["name"].as_str().unwrap_or("?"),
                err.as_str().unwrap_or("?")
            );
            continue;
        }
        println!(
            "{}: producer {} ({}), {} slots x {} B, published {}, dropped {}, reaped {}",
            ring["name"].as_str().unwrap_or("?"),
            ring["producer_pid"],
            ring["producer"].as_str().unwrap_or("?"),
            ring["slots"],
            ring["slot_bytes"],
            ring["published"],
            ring["dropped"],
            ring["consumers_reaped"],
        );
        for group in ring["groups"].as_array().into_iter().flatten() {
            let name = group["name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or("(broadcast)");
            // `set 1/3 (all)`: which set of the group, and whether its members share it.
            let set = &group["set"];
            let set = if set.is_null() {
                String::new()
            } else {
                format!(
                    " set {}/{} ({})",
                    set["index"],
                    set["sets"],
                    set["mode"].as_str().unwrap_or("?")
                )
            };
            println!(
                "  group {name}{set}: {} batch {}, {} member(s): published {} = delivered {} + missed {} + in flight {}",
                group["delivery"].as_str().unwrap_or("?"),
                group["batch"],
                group["members"],
                group["published"],
                group["delivered"],
                group["missed"],
                group["in_flight"],
            );
        }
    }
    Ok(Status::Ok)
}

/// Removes segments whose producer finished or died, segments that are not rings, and
/// the stats segments and control sockets of pipelines whose supervisor died.
pub fn clean(json_out: bool) -> anyhow::Result<Status> {
    let (mut removed, mut kept, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    for name in list_names().context("could not list /dev/shm")? {
        match RingInspector::open(&name) {
            Ok(inspector) if inspector.is_stale() => {
                inspector.remove();
                removed.push(name);
            }
            Ok(_) => kept.push(name),
            // Not a ring we can read, but ours and in our namespace: a crashed creation.
            Err(
                e @ (AttachError::BadMagic { .. }
                | AttachError::Layout { .. }
                | AttachError::NeverInitialised { .. }),
            ) => {
                std::fs::remove_file(segment_path(&name))
                    .with_context(|| format!("could not remove ring '{name}'"))?;
                removed.push(name.clone());
                eprintln!("streamd clean: removed '{name}': {e}");
            }
            Err(e) => skipped.push(json!({ "name": name, "reason": e.to_string() })),
        }
    }
    // Pipelines whose supervisor is gone: their stats segment and control socket.
    for pipeline in crate::stats::list_pipelines().unwrap_or_default() {
        let alive =
            crate::stats::StatsSegment::open(&pipeline).is_ok_and(|s| s.supervisor().is_alive());
        if alive {
            kept.push(format!("pipeline {pipeline}"));
            continue;
        }
        let _ = std::fs::remove_file(crate::stats::stats_path(&pipeline));
        let _ = std::fs::remove_file(crate::control::socket_path(&pipeline));
        removed.push(format!("pipeline {pipeline}"));
    }
    let report = json!({ "removed": removed, "kept": kept, "skipped": skipped });
    if json_out {
        println!("{report}");
    } else if removed.is_empty() && skipped.is_empty() {
        println!(
            "nothing to clean: {}",
            if kept.is_empty() {
                "no streamd rings, stats segments or sockets in /dev/shm".to_string()
            } else {
                format!("{} in use kept ({})", kept.len(), kept.join(", "))
            }
        );
    } else {
        for (what, list) in [("removed", &removed), ("kept (in use)", &kept)] {
            if !list.is_empty() {
                println!("{what}: {}", list.join(", "));
            }
        }
        for s in &skipped {
            println!(
                "skipped {}: {}",
                s["name"].as_str().unwrap_or("?"),
                s["reason"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(Status::Ok)
}
