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
        stdout[leaves..].lines().any(|l| l.contains("member-2")
            && l.contains(" revoked ")
            && l.contains("(committed)")),
        "{stdout}"
    );
    assert!(!stdout.contains("COMMIT FAILED"), "{stdout}");
}

#[test]
fn a_member_beyond_the_partition_count_sits_idle_until_another_leaves() {
    let broker = MockBroker::start(1).unwrap();
    broker.create_topic("two-partitions", 2).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_consumer-groups"))
        .args(["--brokers", broker.bootstrap(), "--topic", "two-partitions"])
        .args(["--members", "3", "--per-phase", "10"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("produced 40, read 40, lost 0, duplicates 0"),
        "{stdout}\n{stderr}"
    );
    // With three members on two partitions, one has nothing until member-2 leaves.
    let joined = stdout.find("--- member-3 joins").unwrap();
    let leaves = stdout.find("--- member-2 leaves").unwrap();
    let settled: Vec<&str> = stdout[joined..leaves]
        .lines()
        .filter(|l| l.contains("settled:"))
        .collect();
    assert_eq!(settled.len(), 1, "{stdout}");
    assert_eq!(
        settled[0]
            .matches("idle (more members than partitions)")
            .count(),
        1,
        "{stdout}"
    );
    let last = stdout[leaves..]
        .lines()
        .find(|l| l.contains("settled:"))
        .unwrap();
    assert!(!last.contains("idle"), "{stdout}");
}
