//! The Go duration parser (`spec.duration`, `maxDuration`, extensions): never panics, and what
//! it accepts prints back to the same duration.
#![no_main]

use lapse_api::duration::LeaseDuration;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = LeaseDuration::parse(s) {
        let again = LeaseDuration::parse(&d.to_string());
        assert_eq!(again, Ok(d), "{s:?} printed as {d}");
        assert!(d.to_chrono() >= chrono::TimeDelta::zero());
    }
});
