//! Arbitrary text into every other parser that reads user input: StorageClass `recurringJobs`
//! and `recurringJobSelector`, Go durations, Kubernetes byte quantities. Beyond "no panic":
//! accepted values are consistent (jobs have retain >= 1, unique names; a duration prints and
//! parses back to itself) and error messages render.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recurring::duration::{format_go_duration, parse_go_duration};
use recurring::quantity::parse_byte_quantity;
use recurring::storage_class::{parse_recurring_job_selector, parse_recurring_jobs};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_recurring_jobs(text) {
        Ok(jobs) => {
            for (index, job) in jobs.iter().enumerate() {
                assert!(job.retain >= 1);
                assert!(jobs[..index].iter().all(|other| other.name != job.name));
            }
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
    if let Err(error) = parse_recurring_job_selector(text) {
        assert!(!error.to_string().is_empty());
    }
    match parse_go_duration(text) {
        Ok(duration) => assert_eq!(
            parse_go_duration(&format_go_duration(duration)),
            Ok(duration)
        ),
        Err(error) => assert!(!error.to_string().is_empty()),
    }
    if let Err(error) = parse_byte_quantity(text) {
        assert!(!error.to_string().is_empty());
    }
});
