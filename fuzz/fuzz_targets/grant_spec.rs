//! An AccessGrant spec as the API server would hand it over (any JSON), deserialised and
//! validated: never panics; a refusal names at least one field.
#![no_main]

use lapse_api::v1alpha1::AccessGrantSpec;
use lapse_api::validate::validate_grant;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<AccessGrantSpec>(data) else {
        return;
    };
    if let Err(errs) = validate_grant(&spec) {
        assert!(!errs.0.is_empty());
        assert!(errs.0.iter().all(|e| !e.field.is_empty()), "{errs}");
    }
});
