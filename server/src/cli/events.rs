//! `wormfs events`, `wormfs alerts` and `wormfs healthcheck`.

use std::time::Duration;

use super::client::{node_url, print_json, Client};
use super::{exit, CliError};
use crate::api::types::{
    AlertTestResponse, AlertsResponse, EventRecord, EventsResponse, HealthResponse, NodeHealth,
};
use wormfs_meta::command::rfc3339_ms;

fn print_event(e: &EventRecord) {
    let at = rfc3339_ms(e.at_ms - e.at_ms % 1000);
    println!(
        "{at}  {:<8} {:<20} {}",
        e.severity.as_str(),
        e.kind,
        e.message
    );
}

/// `wormfs events`: the newest `limit`, oldest first; with `follow`, then every new one as
/// it comes, until interrupted.
pub(super) async fn events(c: &Client, limit: u32, follow: bool) -> anyhow::Result<()> {
    let r: EventsResponse = c.get_json(&format!("/api/v1/events?limit={limit}")).await?;
    let mut last = r.events.first().map_or(0, |e| e.id);
    if c.json && !follow {
        print_json(&r);
        return Ok(());
    }
    let show = |e: &EventRecord| {
        if c.json {
            println!("{}", serde_json::to_string(e).unwrap_or_default());
        } else {
            print_event(e);
        }
    };
    if r.events.is_empty() && !follow && !c.json {
        println!("no events yet");
    }
    r.events.iter().rev().for_each(show);
    if !follow {
        return Ok(());
    }
    loop {
        std::io::Write::flush(&mut std::io::stdout())?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let r: EventsResponse = c
            .get_json(&format!("/api/v1/events?limit=1000&after={last}"))
            .await?;
        if let Some(e) = r.events.first() {
            last = e.id;
        }
        r.events.iter().rev().for_each(show);
    }
}

/// `wormfs alerts`: the conditions that hold now on that machine, and its last deliveries.
pub(super) async fn alerts(c: &Client) -> anyhow::Result<()> {
    let r: AlertsResponse = c.get_json("/api/v1/alerts").await?;
    if c.json {
        print_json(&r);
        return Ok(());
    }
    if r.alerts.is_empty() {
        println!("nothing needs attention");
    }
    for a in &r.alerts {
        let sent = if a.notified { "sent" } else { "not sent" };
        println!(
            "{:<8} {}  (since {}, {sent})",
            a.severity.as_str(),
            a.title,
            rfc3339_ms(a.since_ms - a.since_ms % 1000)
        );
        println!("         {}", a.message);
    }
    println!(
        "webhooks: {}{}",
        r.webhooks,
        if r.webhooks == 0 {
            " (none configured: [[alerts.webhooks]] in the config file, docs/alerts.md)"
        } else {
            ""
        }
    );
    for d in r.deliveries.iter().take(5) {
        let result = match (&d.answer, &d.error) {
            (Some(code), _) => format!("delivered ({code})"),
            (_, Some(e)) => format!("failed: {e}"),
            _ => String::new(),
        };
        println!(
            "  {} {} {} to {}: {result}",
            rfc3339_ms(d.at_ms - d.at_ms % 1000),
            d.status,
            d.key,
            d.url
        );
    }
    Ok(())
}

/// `wormfs alerts test`: a test message to every webhook of that machine, now.
pub(super) async fn alerts_test(c: &Client) -> anyhow::Result<()> {
    let r: AlertTestResponse = c
        .send_json(c.req(reqwest::Method::POST, "/api/v1/alerts/test"))
        .await?;
    if c.json {
        print_json(&r);
    }
    if r.deliveries.is_empty() {
        return Err(CliError::new(
            exit::FAILURE,
            "no webhook is configured on that machine ([[alerts.webhooks]], docs/alerts.md)",
        )
        .into());
    }
    let mut failed = 0;
    for d in &r.deliveries {
        match (&d.answer, &d.error) {
            (Some(code), _) if !c.json => println!("{}: delivered ({code})", d.url),
            (_, Some(e)) => {
                failed += 1;
                if !c.json {
                    println!("{}: FAILED: {e}", d.url);
                }
            }
            _ => {}
        }
    }
    if failed > 0 {
        return Err(CliError::new(
            exit::FAILURE,
            format!("{failed} of {} webhook(s) failed", r.deliveries.len()),
        )
        .into());
    }
    Ok(())
}

/// `wormfs healthcheck`: exit 0 healthy, 1 degraded, 2 down (or not answering); with
/// `container`, 0 healthy or degraded and 1 down (Docker reserves 2). Needs no token: for
/// container health checks and monitoring.
pub(super) async fn healthcheck(
    node: &str,
    json: bool,
    timeout_secs: u64,
    container: bool,
) -> anyhow::Result<()> {
    let base = node_url(&health_node(node))?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(timeout_secs.max(1)))
        .build()?;
    let answer = async {
        let r = http
            .get(format!("{base}/api/v1/health"))
            .send()
            .await
            .map_err(|e| format!("{base} does not answer: {e}"))?;
        let code = r.status();
        r.json::<HealthResponse>()
            .await
            .map_err(|e| format!("{base} answered {code} without a health report: {e}"))
    }
    .await;
    let h = match answer {
        Ok(h) => h,
        Err(why) => HealthResponse {
            status: NodeHealth::Down,
            node: 0,
            reasons: vec![why],
        },
    };
    if json {
        print_json(&h);
    } else {
        let word = match h.status {
            NodeHealth::Healthy => "healthy",
            NodeHealth::Degraded => "degraded",
            NodeHealth::Down => "down",
        };
        if h.reasons.is_empty() {
            println!("{word}");
        } else {
            println!("{word}: {}", h.reasons.join("; "));
        }
    }
    let code = match (container, h.status) {
        (true, NodeHealth::Down) => 1,
        (true, _) => 0,
        (false, status) => status.exit_code(),
    };
    if code != 0 {
        std::io::Write::flush(&mut std::io::stdout())?;
        std::process::exit(code);
    }
    Ok(())
}

/// The node a health check asks: `--node`/`WORMFS_NODE` when given; otherwise this machine's
/// node at the port `WORMFS_API__LISTEN` sets (a container that moved its API port), else the
/// default `127.0.0.1:7710`.
fn health_node(node: &str) -> String {
    if std::env::var_os("WORMFS_NODE").is_some() || node != super::DEFAULT_NODE {
        return node.to_owned();
    }
    match std::env::var("WORMFS_API__LISTEN")
        .ok()
        .and_then(|l| l.trim().parse::<std::net::SocketAddr>().ok())
    {
        Some(addr) if addr.ip().is_unspecified() => format!("127.0.0.1:{}", addr.port()),
        Some(addr) => addr.to_string(),
        None => node.to_owned(),
    }
}
