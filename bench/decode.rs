//! Decoding throughput of a recorded RetrievePropertiesEx response, against
//! serde_json parsing the same rows as JSON, in the same run.
//!
//!     cargo run --release --example decode -- RESPONSE.xml [ROUNDS]
//!
//! (bench/decode.sh records a 10,000-VM response from a simulator and runs this.)

use std::ops::ControlFlow;
use std::time::Instant;
use vpoller::vsphere::collector::parse_recorded_page;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: decode RESPONSE.xml [ROUNDS]");
        std::process::exit(2);
    };
    let rounds: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(10);
    let body = std::fs::read(path).unwrap_or_else(|e| {
        eprintln!("cannot read {path}: {e}");
        std::process::exit(1)
    });
    let mut rows = Vec::new();
    let mut best_xml = f64::MAX;
    for _ in 0..rounds {
        rows.clear();
        let t = Instant::now();
        parse_recorded_page(&body, &mut |o| {
            rows.push(o.into_row());
            ControlFlow::Continue(())
        })
        .expect("the response decodes");
        best_xml = best_xml.min(t.elapsed().as_secs_f64());
    }
    let json = serde_json::to_vec(&rows).expect("rows encode");
    let mut best_json = f64::MAX;
    for _ in 0..rounds {
        let t = Instant::now();
        std::hint::black_box(
            serde_json::from_slice::<serde_json::Value>(&json).expect("JSON parses"),
        );
        best_json = best_json.min(t.elapsed().as_secs_f64());
    }
    let mb = body.len() as f64 / 1e6;
    println!(
        "{} objects, {mb:.2} MB of XML, {:.2} MB as JSON",
        rows.len(),
        json.len() as f64 / 1e6
    );
    println!(
        "XML -> rows: best {:.1} ms ({:.0} MB/s)",
        best_xml * 1e3,
        mb / best_xml
    );
    println!(
        "serde_json of the same rows: best {:.1} ms",
        best_json * 1e3
    );
    println!("ratio XML decode / JSON parse: {:.2}", best_xml / best_json);
}
