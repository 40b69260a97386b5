//! Alert delivery to an HTTP webhook (a SIEM, a pager): JSON POSTs from a task of its own,
//! retried with back-off, so a slow or dead receiver never blocks the audit writer or a
//! request. Alerts are in the audit trail regardless; the webhook is a notification.

use std::path::PathBuf;
use std::time::Duration;

use http::{Request, Uri};
use tokio::sync::mpsc;

/// Starts the delivery task; returns the sender the audit writer uses.
pub fn start(url: Uri, ca_file: Option<PathBuf>) -> Result<mpsc::Sender<String>, String> {
    let client = crate::proxy::client::build(
        ca_file.as_deref(),
        Duration::from_secs(5),
        Duration::from_secs(30),
    )?;
    let (sender, mut alerts) = mpsc::channel::<String>(1024);
    tokio::spawn(async move {
        while let Some(alert) = alerts.recv().await {
            let mut delay = Duration::from_millis(500);
            for attempt in 1..=4 {
                let request = Request::post(url.clone())
                    .header("content-type", "application/json")
                    .header("user-agent", "wardgate-alerts")
                    .body(crate::body::full(alert.clone()));
                let sent = match request {
                    Ok(request) => {
                        tokio::time::timeout(Duration::from_secs(10), client.request(request)).await
                    }
                    Err(_) => break,
                };
                match sent {
                    Ok(Ok(response)) if response.status().is_success() => break,
                    outcome => {
                        let why = match outcome {
                            Ok(Ok(response)) => format!("status {}", response.status()),
                            Ok(Err(err)) => crate::telemetry::error_chain(&err),
                            Err(_) => "timeout".into(),
                        };
                        tracing::warn!(attempt, error = %why, "alert webhook delivery failed");
                        if attempt < 4 {
                            tokio::time::sleep(delay).await;
                            delay *= 2;
                        } else {
                            metrics::counter!("wardgate_alert_webhook_failures_total").increment(1);
                        }
                    }
                }
            }
        }
    });
    Ok(sender)
}
