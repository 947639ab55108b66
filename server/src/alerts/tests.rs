//! The debounce: a condition is sent once after holding for the debounce time, resolved once
//! after being gone as long, never when it flaps within it, and only by the machine that sends
//! it.
#![allow(clippy::unwrap_used)]

use super::conditions::{Condition, Severity};
use super::webhook::Status;
use super::Alerts;
use wormfs_config::AlertsConfig;

fn alerts(debounce_ms: u64) -> Alerts {
    Alerts::new(AlertsConfig {
        debounce_ms,
        member_lost_after_ms: 1000,
        backup_stale_after_ms: 0,
        repair_stuck_attempts: 5,
        webhooks: Vec::new(),
    })
}

fn disk_down(cluster: bool) -> Condition {
    Condition {
        key: "disk_down:1".into(),
        kind: "disk_down".into(),
        severity: Severity::Warning,
        title: "Disk /d1 down".into(),
        message: "m".into(),
        cluster,
    }
}

fn statuses(v: Vec<(Condition, Status, u64)>) -> Vec<(String, Status, u64)> {
    v.into_iter().map(|(c, s, t)| (c.key, s, t)).collect()
}

#[test]
fn a_condition_is_sent_after_the_debounce_and_resolved_after_it_once_each() {
    let a = alerts(1000);
    assert!(a.update(vec![disk_down(true)], 0, true).is_empty());
    assert!(a.update(vec![disk_down(true)], 999, true).is_empty());
    assert_eq!(a.view().alerts.len(), 1);
    assert!(!a.view().alerts[0].notified);
    assert_eq!(
        statuses(a.update(vec![disk_down(true)], 1000, true)),
        [("disk_down:1".to_owned(), Status::Firing, 0)]
    );
    assert!(a.update(vec![disk_down(true)], 5000, true).is_empty());
    assert!(a.view().alerts[0].notified);
    // Gone, back within the debounce: nothing; gone for the debounce: resolved, once.
    assert!(a.update(vec![], 6000, true).is_empty());
    assert!(a.view().alerts.is_empty(), "a gone condition is not listed");
    assert!(a.update(vec![disk_down(true)], 6500, true).is_empty());
    assert!(a.update(vec![], 7000, true).is_empty());
    assert_eq!(
        statuses(a.update(vec![], 8000, true)),
        [("disk_down:1".to_owned(), Status::Resolved, 0)]
    );
    assert!(a.update(vec![], 9000, true).is_empty());
}

#[test]
fn a_blip_shorter_than_the_debounce_sends_nothing_and_followers_send_no_cluster_condition() {
    let a = alerts(1000);
    assert!(a.update(vec![disk_down(true)], 0, true).is_empty());
    assert!(a.update(vec![], 500, true).is_empty());
    assert!(a.update(vec![], 5000, true).is_empty());
    assert!(a.view().alerts.is_empty());

    let f = alerts(0);
    assert!(f.update(vec![disk_down(true)], 0, false).is_empty());
    assert_eq!(f.view().alerts.len(), 1, "a follower still shows it");
    assert_eq!(
        statuses(f.update(vec![disk_down(false)], 1, false)),
        [("disk_down:1".to_owned(), Status::Firing, 0)],
        "a machine's own condition is sent by that machine"
    );
}
