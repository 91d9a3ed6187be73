//! ARM ID and scope normalisation (`roles[].scope`, policy scopes, IDs Azure returns): never
//! panics; an accepted ID reads back as itself and is at or below itself and its subscription.
#![no_main]

use lapse_api::arm::ArmId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = ArmId::parse(s) {
        assert_eq!(ArmId::parse(id.as_str()).as_ref(), Ok(&id), "{s:?}");
        assert!(id.is_at_or_below(&id));
        if let Some(sub) = id.subscription() {
            let sub = ArmId::parse(&format!("/subscriptions/{sub}"));
            assert!(sub.is_ok_and(|sub| id.is_at_or_below(&sub)), "{s:?}");
        }
    }
});
