//! Example 3 for real: `consumer-groups` as a process against the development broker
//! (librdkafka's mock cluster, as `clustera dev` serves it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use clustera::testing::MockBroker;

#[test]
fn members_share_partitions_and_hand_them_over_without_loss_or_duplicates() {
    let broker = MockBroker::start(1).unwrap();
    broker.create_topic("group-events", 6).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_consumer-groups"))
        .args([
            "--brokers",
            broker.bootstrap(),
            "--members",
            "3",
            "--per-phase",
            "50",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Three joins and one leave: four phases of 50.
    assert!(
        stdout.contains("produced 200, read 200, lost 0, duplicates 0"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("topic group-events has 6 partitions"),
        "{stdout}"
    );
    for member in ["member-1", "member-2", "member-3"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(member) && l.contains(" assigned ")),
            "{member} was never assigned anything:\n{stdout}"
        );
    }
    // member-1 owned all six, then gave some up when member-2 joined.
    let joins = stdout.find("--- member-2 joins").unwrap();
    assert!(
        stdout[..joins].contains("owns [p0 p1 p2 p3 p4 p5]"),
        "{stdout}"
    );
    assert!(
        stdout[joins..]
            .lines()
            .any(|l| l.contains("member-1") && l.contains(" revoked ")),
        "{stdout}"
    );
    // member-2's partitions were revoked (and committed) when it left.
    let leaves = stdout.find("--- member-2 leaves").unwrap();
    assert!(
        stdout[leaves..]
            .lines()
            .any(|l| l.contains("member-2") && l.contains(" revoked ") && l.contains("committed)")),
        "{stdout}"
    );
    assert!(!stdout.contains("COMMIT FAILED"), "{stdout}");
}
