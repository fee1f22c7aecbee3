//! Decodes arbitrary bytes as a snapshot handle. Checks, beyond "no panic":
//! - a decoded handle re-encodes to text that decodes to the same value (round trip);
//! - encoding is canonical: encoding that value again gives the same text;
//! - error messages can be rendered.
#![no_main]

use handle_codec::{decode, decode_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode_bytes(data) {
        Ok(handle) => {
            let encoded = handle.encode();
            let again = decode(&encoded).expect("encoded handle must decode");
            assert_eq!(again, handle, "round trip changed the value of {encoded:?}");
            assert_eq!(again.encode(), encoded, "encoding is not canonical");
        }
        Err(error) => {
            let message = error.to_string();
            assert!(!message.is_empty());
        }
    }
});
