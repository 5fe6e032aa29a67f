//! Tests for the `authorized_keys` lexer and option semantics.

use super::*;
use crate::server::address::Host;
use crate::server::key_options::PermitHost;
use std::time::{Duration, UNIX_EPOCH};

const ALICE: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMMmTZtHcNJo0O3IQp7dssbenGVAd8CgJ4HR7NqAx43A alice@laptop";
const BOB: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILGjqa/JCxwmzdWv3dPJXs4NaH1Fpl+YOR4wUIkGxgK/ bob";

fn one(line: &str) -> Result<KeyEntry, KeyLineError> {
    parse_key_line(line, "keys", 7).expect("not a blank line")
}

fn opts(line: &str) -> KeyOptions {
    one(line).expect("line should parse").options
}

fn reason(line: &str) -> String {
    one(line).expect_err("line should be refused").reason
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test literal")
}

#[test]
fn bare_keys_and_comments() {
    let text = format!("# comment\n\n   \n{ALICE}\n\t{BOB}\r\n");
    let entries = parse_authorized_keys(&text, "/home/a/.ssh/authorized_keys");
    assert_eq!(entries.len(), 2);
    let alice = entries[0].as_ref().expect("valid");
    assert_eq!(alice.line, 4);
    assert_eq!(alice.key.comment().as_str_lossy(), "alice@laptop");
    assert!(alice.options.port_forwarding);
    assert_eq!(alice.options.origin, "/home/a/.ssh/authorized_keys:4");
    assert_eq!(entries[1].as_ref().map(|e| e.line).ok(), Some(5));
    // Tabs and runs of spaces between fields, comment with spaces.
    let key = one("ssh-ed25519\tAAAAC3NzaC1lZDI1NTE5AAAAIMMmTZtHcNJo0O3IQp7dssbenGVAd8CgJ4HR7NqAx43A   my  laptop")
        .expect("valid");
    assert_eq!(key.key.comment().as_str_lossy(), "my laptop");
}

#[test]
fn restrict_then_reenable_is_ordered() {
    assert!(!opts(&format!("restrict {ALICE}")).port_forwarding);
    assert!(opts(&format!("restrict,port-forwarding {ALICE}")).port_forwarding);
    assert!(!opts(&format!("port-forwarding,restrict {ALICE}")).port_forwarding);
    assert!(!opts(&format!("no-port-forwarding {ALICE}")).port_forwarding);
    assert!(opts(&format!("RESTRICT,Port-Forwarding {ALICE}")).port_forwarding);
}

#[test]
fn harmless_options_are_accepted() {
    let o = opts(&format!(
        "no-pty,no-X11-forwarding,no-agent-forwarding,no-user-rc,pty,environment=\"A=b c\",tunnel=\"0\",touch-required,no-touch-required {ALICE}"
    ));
    assert!(o.port_forwarding && o.no_touch_required);
}

#[test]
fn permits_with_quotes_commas_and_spaces() {
    let o = opts(&format!(
        "restrict,port-forwarding,permitopen=\"db.internal:5432\",permitopen=\"[::1]:*\",permitlisten=\"8080\",from=\"10.0.0.0/8, 192.168.1.*\" {ALICE}"
    ));
    assert_eq!(o.permit_open.len(), 2);
    assert_eq!(o.permit_open[1].host, PermitHost::Ip(ip("::1")));
    assert!(o.permit_open[0].matches(&Host::Name("db.internal".into()), 5432));
    assert_eq!(o.permit_listen[0].host, "*");
    assert!(o.from.is_some());
}

#[test]
fn escaped_quotes_follow_sshd() {
    // `\"` inside a quoted value does not end it, so the space after it is
    // still inside the options field.
    let o = opts(&format!("environment=\"X=a\\\" b\",no-pty {ALICE}"));
    assert!(o.port_forwarding);
    assert!(reason(&format!("environment=\"X=a {ALICE}")).contains("quote"));
}

#[test]
fn refused_options_name_the_option() {
    let cases = [
        ("command=\"/bin/true\"", "command="),
        ("cert-authority", "cert-authority"),
        ("principals=\"alice\"", "principals"),
        ("verify-required", "verify-required"),
        ("no-such-option", "unknown option 'no-such-option'"),
        ("frob=\"x\"", "unknown option 'frob=...'"),
        ("no-restrict", "unknown option 'no-restrict'"),
        ("restrict=\"x\"", "unknown option 'restrict=...'"),
        ("permitopen=\"db\"", "missing port"),
        ("permitopen=db:22", "missing start quote"),
        (
            "permitopen=\"*.internal:22\"",
            "wildcards are not supported",
        ),
        ("permitlisten=\"0\"", "invalid permission port"),
        ("from=\"10.0.0.1/8\"", "inconsistent mask"),
        ("from=\"a\",from=\"b\"", "multiple from="),
        ("expiry-time=\"2030\"", "invalid expiry-time"),
        ("restrict,", "unexpected end"),
        ("restrict,,no-pty", "unknown option ''"),
        ("from=\"x\"y", "bad option syntax"),
    ];
    for (options, want) in cases {
        let r = reason(&format!("{options} {ALICE}"));
        assert!(r.contains(want), "{options}: got {r:?}, want {want:?}");
    }
}

#[test]
fn broken_keys_are_reported_as_keys() {
    assert!(reason("ssh-ed25519 AAAAnotbase64 x").contains("invalid ssh-ed25519 key"));
    assert!(reason("restrict ssh-ed25519").contains("no key found"));
    assert!(reason("restrict").contains("no key found"));
    let e = one("garbage").expect_err("refused");
    assert_eq!(e.to_string(), "keys:7: no key found after options");
}

#[test]
fn expiry_keeps_the_earliest() {
    let o = opts(&format!(
        "expiry-time=\"20300101Z\",expiry-time=\"20290101Z\" {ALICE}"
    ));
    assert_eq!(
        o.expiry,
        Some(UNIX_EPOCH + Duration::from_secs(1_861_920_000))
    );
}

#[test]
fn find_key_scans_past_lines_whose_options_fail() {
    let text = format!(
        "from=\"10.0.0.0/8\" {ALICE}\nexpiry-time=\"20200101Z\" {ALICE}\nrestrict {ALICE}\n{BOB}\n"
    );
    let entries: Vec<KeyEntry> = parse_authorized_keys(&text, "k")
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("all valid");
    let alice = entries[0].key.clone();
    let now = UNIX_EPOCH + Duration::from_secs(1_735_689_600);
    // From inside 10/8 the first line wins.
    let hit = find_key(&entries, &alice, ip("10.1.1.1"), now).expect("allowed");
    assert_eq!(hit.line, 1);
    // From elsewhere: line 1 fails from=, line 2 expired, line 3 matches.
    let hit = find_key(&entries, &alice, ip("192.0.2.1"), now).expect("allowed");
    assert_eq!(hit.line, 3);
    assert!(!hit.options.port_forwarding);
    // Only the failing lines: both reasons come back.
    let reasons = find_key(&entries[..2], &alice, ip("192.0.2.1"), now).expect_err("denied");
    assert_eq!(reasons.len(), 2);
    assert!(
        reasons[0].contains("not allowed from 192.0.2.1"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("expired"), "{reasons:?}");
    // An unknown key gets no reasons.
    let other = PublicKey::from_openssh(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJVRlyaGWF9xv8MfrOmdK+ylsrcwHU0TTNEo5FbhZIju",
    )
    .expect("valid");
    assert_eq!(
        find_key(&entries, &other, ip("10.1.1.1"), now).err(),
        Some(vec![])
    );
}
