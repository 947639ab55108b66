//! Alerts: the conditions that need attention ([`conditions`]), each sent to the configured
//! webhooks ([`webhook`]) once it has held for `alerts.debounce_ms`, and again as "resolved"
//! once it has been gone as long (docs/alerts.md). Every machine watches the conditions (the
//! API and the admin page show them); the leader sends the cluster's, each machine its own.

pub mod conditions;
pub mod node_health;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::consensus::status::RaftRole;
use crate::store::Store;
use conditions::{Condition, Severity, Thresholds};
use webhook::{AlertMessage, Status};
use wormfs_config::AlertsConfig;
use wormfs_parts::fsutil::now_ms;

/// Delivery attempts of one message, after the first: the waits between them.
const RETRIES: [Duration; 4] = [
    Duration::from_secs(2),
    Duration::from_secs(10),
    Duration::from_secs(60),
    Duration::from_secs(300),
];

/// Deliveries remembered for `wormfs alerts`.
const DELIVERIES_KEPT: usize = 20;

/// A condition as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveAlert {
    /// Stable while the condition lasts.
    pub key: String,
    /// What kind.
    pub kind: String,
    /// How much it matters.
    pub severity: Severity,
    /// One line.
    pub title: String,
    /// The details.
    pub message: String,
    /// Whether only the leader sends it (else the machine it is about does).
    pub cluster: bool,
    /// When this machine first saw it (ms since the epoch).
    pub since_ms: u64,
    /// Whether its message was sent (from this machine).
    pub notified: bool,
}

/// One delivery's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// The webhook's URL.
    pub url: String,
    /// The condition's key.
    pub key: String,
    /// `firing`, `resolved` or `test`.
    pub status: String,
    /// The receiver's HTTP status, when it answered with a success.
    pub answer: Option<u16>,
    /// Why it failed.
    pub error: Option<String>,
}

impl Delivery {
    fn new(url: &str, key: &str, status: Status, result: Result<u16, String>) -> Self {
        let (answer, error) = match result {
            Ok(code) => (Some(code), None),
            Err(e) => (None, Some(e)),
        };
        Self {
            at_ms: now_ms(),
            url: url.to_owned(),
            key: key.to_owned(),
            status: status.as_str().to_owned(),
            answer,
            error,
        }
    }
}

/// What `GET /api/v1/alerts` answers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertsResponse {
    /// The conditions that hold now, most severe first.
    pub alerts: Vec<ActiveAlert>,
    /// How many webhooks this machine sends to.
    pub webhooks: usize,
    /// This machine's last deliveries, newest first.
    pub deliveries: Vec<Delivery>,
}

struct Tracked {
    condition: Condition,
    since_ms: u64,
    notified: bool,
    /// When it stopped holding (it is resolved once gone for the debounce time).
    gone_since_ms: Option<u64>,
}

#[derive(Default)]
struct State {
    tracked: BTreeMap<String, Tracked>,
    deliveries: Vec<Delivery>,
}

/// The alerts' settings and what this machine sees and sent.
pub struct Alerts {
    cfg: AlertsConfig,
    state: Mutex<State>,
}

impl Alerts {
    /// With the node's `[alerts]` settings.
    pub fn new(cfg: AlertsConfig) -> Self {
        Self {
            cfg,
            state: Mutex::default(),
        }
    }

    /// `alerts.member_lost_after_ms`.
    pub fn member_lost_after_ms(&self) -> u64 {
        self.cfg.member_lost_after_ms
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The conditions that hold now (gone ones waiting to be resolved are not listed).
    pub fn view(&self) -> AlertsResponse {
        self.with(|s| {
            let mut alerts: Vec<ActiveAlert> = s
                .tracked
                .values()
                .filter(|t| t.gone_since_ms.is_none())
                .map(|t| ActiveAlert {
                    key: t.condition.key.clone(),
                    kind: t.condition.kind.clone(),
                    severity: t.condition.severity,
                    title: t.condition.title.clone(),
                    message: t.condition.message.clone(),
                    cluster: t.condition.cluster,
                    since_ms: t.since_ms,
                    notified: t.notified,
                })
                .collect();
            alerts.sort_by(|a, b| {
                b.severity
                    .cmp(&a.severity)
                    .then(a.since_ms.cmp(&b.since_ms))
                    .then(a.key.cmp(&b.key))
            });
            AlertsResponse {
                alerts,
                webhooks: self.cfg.webhooks.len(),
                deliveries: s.deliveries.iter().rev().cloned().collect(),
            }
        })
    }

    fn remember(&self, d: Delivery) {
        self.with(|s| {
            s.deliveries.push(d);
            let excess = s.deliveries.len().saturating_sub(DELIVERIES_KEPT);
            s.deliveries.drain(..excess);
        });
    }

    /// Takes the conditions that hold now; returns the messages due: a condition that has held
    /// for the debounce time is sent once (if this machine sends it), one that has been gone
    /// as long is sent as resolved (if it was sent).
    fn update(
        &self,
        now: Vec<Condition>,
        at_ms: u64,
        leader: bool,
    ) -> Vec<(Condition, Status, u64)> {
        let debounce = self.cfg.debounce_ms;
        self.with(|s| {
            let mut due = Vec::new();
            let holding: BTreeMap<String, Condition> =
                now.into_iter().map(|c| (c.key.clone(), c)).collect();
            for (key, c) in &holding {
                let t = s.tracked.entry(key.clone()).or_insert_with(|| Tracked {
                    condition: c.clone(),
                    since_ms: at_ms,
                    notified: false,
                    gone_since_ms: None,
                });
                t.condition = c.clone();
                t.gone_since_ms = None;
                let sends = leader || !c.cluster;
                if !t.notified && sends && at_ms.saturating_sub(t.since_ms) >= debounce {
                    t.notified = true;
                    due.push((c.clone(), Status::Firing, t.since_ms));
                }
            }
            s.tracked.retain(|key, t| {
                if holding.contains_key(key) {
                    return true;
                }
                let gone = *t.gone_since_ms.get_or_insert(at_ms);
                if !t.notified {
                    return false;
                }
                if at_ms.saturating_sub(gone) >= debounce {
                    due.push((t.condition.clone(), Status::Resolved, t.since_ms));
                    return false;
                }
                true
            });
            due
        })
    }
}

fn thresholds(store: &Store, cfg: &AlertsConfig) -> Thresholds {
    let interval = store.backups.status().interval_ms;
    Thresholds {
        member_lost_after_ms: cfg.member_lost_after_ms,
        backup_stale_after_ms: match (cfg.backup_stale_after_ms, interval) {
            (_, 0) => 0,
            (0, i) => i.saturating_mul(4),
            (s, _) => s,
        },
        repair_stuck_attempts: cfg.repair_stuck_attempts,
    }
}

/// The cluster's name, for the messages.
async fn cluster_name(store: &Store) -> String {
    store.consensus.view(Vec::new()).await.cluster_name
}

/// Sends `m` to every webhook that takes its severity, each in a task of its own that retries
/// (a receiver that is down for a minute still gets it).
fn deliver(store: &Arc<Store>, http: &reqwest::Client, m: AlertMessage, stop: &CancellationToken) {
    for hook in store.alerts.cfg.webhooks.iter().cloned() {
        if m.status != Status::Test && m.severity.config() < hook.min_severity {
            continue;
        }
        let (store, http, m, stop) = (store.clone(), http.clone(), m.clone(), stop.clone());
        let span = tracing::info_span!("alert", key = %m.key, url = %hook.url);
        tokio::spawn(
            async move {
                let mut waits = RETRIES.iter();
                loop {
                    let result = webhook::send(&http, &hook, &m).await;
                    let failed = result.as_ref().err().map(|e| e.to_string());
                    store.alerts.remember(Delivery::new(
                        &hook.url,
                        &m.key,
                        m.status,
                        result.map_err(|e| e.to_string()),
                    ));
                    let Some(e) = failed else {
                        tracing::info!(status = ?m.status, "alert delivered");
                        return;
                    };
                    let Some(wait) = waits.next() else {
                        tracing::warn!("alert not delivered, giving up: {e}");
                        return;
                    };
                    tracing::warn!("alert not delivered, retrying in {} s: {e}", wait.as_secs());
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(*wait) => {}
                    }
                }
            }
            .instrument(span),
        );
    }
}

/// Sends a test message to every webhook now, once each; the results in the configured order.
pub async fn send_test(store: &Store) -> Vec<Delivery> {
    let http = client();
    let c = Condition {
        key: "test".into(),
        kind: "test".into(),
        severity: Severity::Info,
        title: "Test message".into(),
        message: format!(
            "Machine {} can send alerts to this webhook (wormfs alerts test).",
            store.node_id
        ),
        cluster: false,
    };
    let m = AlertMessage::new(
        &c,
        Status::Test,
        &cluster_name(store).await,
        store.node_id,
        now_ms(),
    );
    let mut out = Vec::new();
    for hook in &store.alerts.cfg.webhooks {
        let result = webhook::send(&http, hook, &m)
            .await
            .map_err(|e| e.to_string());
        let d = Delivery::new(&hook.url, &c.key, Status::Test, result);
        store.alerts.remember(d.clone());
        out.push(d);
    }
    out
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("wormfs/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// The background task: the conditions read every tick (those from the metadata only when it
/// changed), the messages due sent.
pub async fn run(store: Arc<Store>, stop: CancellationToken) {
    let cfg = store.alerts.cfg.clone();
    let t = thresholds(&store, &cfg);
    let tick = Duration::from_millis((cfg.debounce_ms / 4).clamp(200, 2000));
    let http = client();
    let cluster = cluster_name(&store).await;
    // The metadata's conditions scan every segment: read again only when the metadata
    // changed, and during a long ingest (a change every moment) at most this often.
    let rescan = Duration::from_millis(cfg.debounce_ms.clamp(tick.as_millis() as u64, 10_000));
    let mut scanned_at: Option<tokio::time::Instant> = None;
    let mut seen_generation = u64::MAX;
    let mut from_meta: Vec<Condition> = Vec::new();
    let mut no_leader_since: Option<u64> = Some(now_ms());
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(tick) => {}
        }
        let now = now_ms();
        let status = store.consensus.status();
        if status.leader.is_some() {
            no_leader_since = None;
        } else if no_leader_since.is_none() {
            no_leader_since = Some(now);
        }
        let generation = store.meta.generation();
        let due = scanned_at.is_none_or(|at| at.elapsed() >= rescan);
        if generation != seen_generation && due {
            scanned_at = Some(tokio::time::Instant::now());
            match conditions::from_metadata(&store, &t).await {
                Ok(c) => {
                    from_meta = c;
                    seen_generation = generation;
                }
                Err(e) => tracing::warn!("alerts: read the metadata: {e}"),
            }
        }
        let mut all = from_meta.clone();
        match conditions::from_this_machine(&store, &t, no_leader_since).await {
            Ok(c) => all.extend(c),
            Err(e) => tracing::warn!("alerts: read this machine's state: {e}"),
        }
        let leader = status.role == RaftRole::Leader;
        for (c, st, since) in store.alerts.update(all, now, leader) {
            tracing::info!(key = %c.key, status = ?st, "{}", c.title);
            if !cfg.webhooks.is_empty() {
                let m = AlertMessage::new(&c, st, &cluster, store.node_id, since);
                deliver(&store, &http, m, &stop);
            }
        }
    }
}

#[cfg(test)]
mod tests;
