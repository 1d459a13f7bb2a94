//! The transport's ceiling for Stream V2: a plain ZeroMQ PULL socket that receives
//! messages and does nothing with them (no decoding, no copy into a ring), against the
//! same sender the `zmq` source is measured with. Prints one JSON object: messages,
//! bytes, seconds from the first message to the last, MB/s and messages/s. Used by
//! `scripts/bench-zmq` in the same run as the source, so ratios compare like with like.
//!
//!     cargo bench --bench zmq_ceiling -- ENDPOINT COUNT [QUEUE]

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (Some(endpoint), Some(count)) = (args.first(), args.get(1).and_then(|c| c.parse().ok()))
    else {
        eprintln!("usage: zmq_ceiling ENDPOINT COUNT [QUEUE]");
        std::process::exit(2);
    };
    let count: u64 = count;
    let queue: i32 = args.get(2).and_then(|q| q.parse().ok()).unwrap_or(32);
    let context = zmq::Context::new();
    let socket = context.socket(zmq::PULL).expect("a PULL socket");
    socket.set_rcvhwm(queue).expect("receive queue");
    socket.connect(endpoint).expect("connect");
    let mut message = zmq::Message::new();
    let (mut bytes, mut first) = (0u64, None);
    for _ in 0..count {
        socket.recv(&mut message, 0).expect("receive");
        first.get_or_insert_with(Instant::now);
        bytes += message.len() as u64;
    }
    let seconds = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    // The first message starts the clock: it and its bytes are not counted in the rate.
    let timed = count.saturating_sub(1) as f64;
    let per = bytes as f64 / count.max(1) as f64;
    println!(
        "{{\"messages\": {count}, \"bytes\": {bytes}, \"seconds\": {seconds}, \"mb_per_s\": {}, \"fps\": {}}}",
        timed * per / seconds.max(1e-9) / 1e6,
        timed / seconds.max(1e-9)
    );
}
