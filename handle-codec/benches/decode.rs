//! Decode and encode cost per handle form, against a named baseline measured in the same run:
//! `url::Url::parse` of the same text plus collecting its `query_pairs()` — what a general URL parser
//! spends on the string without any validation or typing.
//!
//! Run: `cargo bench -p handle-codec --bench decode`

use std::hint::black_box;
use std::time::{Duration, Instant};

use handle_codec::decode;

const SEED_CHECKSUM: &str = "bd79ab9e6d45abf4f3f0adf552a868074dd235c4698ce7258d521160e0ad79ffe555b94e7d4007add6e1a25f4526885eb25c53ce38f7d344dd4925b9f2cb5d3b";

/// Nanoseconds per call of `f`: the best of 25 rounds of about 40 ms. Short rounds and the minimum keep
/// the figure usable on a shared, busy machine (a round that lost the CPU is simply not the best).
fn ns_per_call(mut f: impl FnMut()) -> f64 {
    let mut iterations: u64 = 1;
    loop {
        let start = Instant::now();
        for _ in 0..iterations {
            f();
        }
        if start.elapsed() > Duration::from_millis(10) {
            break;
        }
        iterations *= 2;
    }
    iterations *= 4;
    (0..25)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                f();
            }
            start.elapsed().as_nanos() as f64 / iterations as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let download = format!(
        "bi://backing?backingImageDataSourceType=download&backingImage=test-bi&url=https%3A%2F%2Flonghorn-backing-image.s3-us-west-1.amazonaws.com%2Fparrot.qcow2&backingImageChecksum={SEED_CHECKSUM}"
    );
    let cases = [
        ("bs (seed)", "bs://test-vol/backup-625159fb469e492e".to_owned()),
        ("snap escaped", "snap://my%20vol/a%2Fb%3Fc%26d".to_owned()),
        ("bi export (seed)", "bi://backing?backingImageDataSourceType=export-from-volume&backingImage=test-bi&volume-name=vol-export-src&export-type=qcow2".to_owned()),
        ("bi download (seed)", download),
    ];
    println!(
        "{:<20} {:>12} {:>12} {:>14} {:>10}",
        "handle", "decode ns", "encode ns", "baseline ns", "decode/baseline"
    );
    for (label, text) in cases {
        let handle = match decode(&text) {
            Ok(handle) => handle,
            Err(error) => panic!("{label}: {error}"),
        };
        let decode_ns = ns_per_call(|| {
            let _ = black_box(decode(black_box(&text)));
        });
        let encode_ns = ns_per_call(|| {
            black_box(black_box(&handle).encode());
        });
        let baseline_ns = ns_per_call(|| {
            if let Ok(url) = url::Url::parse(black_box(&text)) {
                black_box(url.query_pairs().count());
            }
        });
        println!(
            "{label:<20} {decode_ns:>12.0} {encode_ns:>12.0} {baseline_ns:>14.0} {:>10.2}",
            decode_ns / baseline_ns
        );
    }
}
