//! Role references (`roles[].role`: a name, a GUID or a role definition ID): never panics,
//! and an accepted reference prints back to itself.
#![no_main]

use lapse_api::role::RoleRef;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = RoleRef::parse(s) {
        assert_eq!(
            RoleRef::parse(&r.to_string()),
            Ok(r.clone()),
            "{s:?} printed as {r}"
        );
    }
});
