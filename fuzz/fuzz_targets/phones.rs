//! Any bytes, as a phone app's body: an OwnTracks message, a Traccar Client
//! JSON report, or its form parameters. The parsers never panic, and every
//! report they take is a valid IAMAT that parses back to the same fields:
//! the server stores a report as that IAMAT, without parsing it again.
#![no_main]

use herd::pure::phones::{self, OwnTracks, Report};
use herd::pure::protocol::{parse_line, Command, Parsed};
use libfuzzer_sys::fuzz_target;

/// `report` stands for exactly the IAMAT its line says.
fn holds(report: &Report) {
    let line = report.iamat_line();
    let Some(iamat) = report.iamat(&line) else {
        panic!("a report taken is not a valid IAMAT: {report:?}");
    };
    assert_eq!(
        parse_line(line.as_bytes()),
        Parsed::Command(Command::IAmAt(iamat)),
        "{line}"
    );
}

fuzz_target!(|data: &[u8]| {
    if let Ok(OwnTracks::Location {
        lat,
        lon,
        secs,
        tid,
    }) = phones::owntracks(data)
    {
        // The id as a phone without X-Limit-D gets it: the user and the tid.
        if let Ok(client_id) = phones::owntracks_client_id(None, None, Some("user"), tid.as_deref())
        {
            holds(&Report {
                client_id,
                lat,
                lon,
                secs,
                nanos: 0,
            });
        }
    }
    if let Ok(report) = phones::osmand_json(data) {
        holds(&report);
    }
    let pairs = phones::form_pairs(&String::from_utf8_lossy(data));
    if let Ok((report, _token)) = phones::osmand_params(&pairs) {
        holds(&report);
    }
});
