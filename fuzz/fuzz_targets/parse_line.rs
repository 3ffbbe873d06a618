//! Any bytes, as one line: the parser never panics, and every AT line it
//! accepts (the one command herd writes back out, as a stored record)
//! formats back to a line that parses to the same record.
#![no_main]

use herd::pure::protocol::{parse_line, write_at_line, Command, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Parsed::Command(Command::At(at)) = parse_line(data) {
        let mut line = String::new();
        write_at_line(&mut line, &at);
        assert_eq!(
            parse_line(line.as_bytes()),
            Parsed::Command(Command::At(at))
        );
    }
});
