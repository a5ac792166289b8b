//! `canopy query`: a stateless worker answering a node's history and
//! state-at queries ([`crate::query`]) in the queue group `canopy-query`.
//!
//! One query at a time: a queue group hands each request to one member,
//! so a busy worker's requests wait in its own queue; that wait is
//! measured (`queued_us`) beside the handler time (`handler_us`) in every
//! reply, so whoever scales the workers sees the response time a client
//! sees, not only the work.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::cli::QueryArgs;
use crate::wire::{Query, QueryReply, QUERY_TIMEOUT_MS};

/// Requests a worker takes in before it stops reading its subscription
/// (the rest wait in the client library's buffer, then the server's).
const QUEUE: usize = 1024;

/// `canopy query`.
pub async fn run(a: QueryArgs) -> anyhow::Result<u8> {
    let cancel = super::shutdown_token()?;
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("q{}", std::process::id()));
    let client =
        super::client::connect_as(&a.server, &format!("canopy query {} {name}", a.node)).await?;
    let js = async_nats::jetstream::with_domain(client.clone(), events::subjects::domain(&a.node));
    let manifest = match &a.server.identity {
        Some(prefix) if a.server.server.starts_with("tls://") => {
            let tls = crate::certs::TlsFiles::of(prefix)?;
            let path = crate::keys::manifest_path(&tls);
            Some(std::sync::Arc::new(crate::keys::ManifestFile::load(&path)?))
        }
        _ => None,
    };
    let reader = crate::query::Reader::new(js, &a.node, &name, manifest);
    let subject = events::subjects::query_subject(&a.node);
    let mut requests = client
        .queue_subscribe(subject.clone(), events::subjects::QUERY_GROUP.to_owned())
        .await
        .with_context(|| format!("subscribing to {subject}"))?;
    client
        .flush()
        .await
        .with_context(|| format!("subscribing to {subject}"))?;
    eprintln!(
        "query: worker {name} serving {subject} at {}",
        a.server.server
    );
    // Stamp each request when it arrives, so its wait is measured.
    let (tx, mut rx) = mpsc::channel::<(async_nats::Message, Instant)>(QUEUE);
    // On SIGTERM it unsubscribes and hands on what the client already
    // holds, so a worker that is stopped (by `canopy autoscale`, say)
    // answers every query it took before it goes: none is lost.
    let stopping = cancel.clone();
    let intake = tokio::spawn(async move {
        let mut draining = false;
        loop {
            let m = tokio::select! {
                m = requests.next() => m,
                _ = stopping.cancelled(), if !draining => {
                    draining = true;
                    if let Err(e) = requests.unsubscribe().await {
                        tracing::warn!("unsubscribing: {e}");
                        return;
                    }
                    continue;
                }
            };
            let Some(m) = m else { return };
            if tx.send((m, Instant::now())).await.is_err() {
                return;
            }
        }
    });
    let (mut served, mut refused) = (0u64, 0u64);
    let mut last_note = Instant::now();
    loop {
        let Some((msg, arrived)) = rx.recv().await else {
            break;
        };
        let started = Instant::now();
        let reply = match Query::parse(&msg.payload) {
            Ok(q) => {
                reader
                    .answer(&q, started + Duration::from_millis(QUERY_TIMEOUT_MS))
                    .await
            }
            Err(e) => QueryReply::error(&a.node, &name, e),
        };
        let reply = QueryReply {
            queued_us: started.duration_since(arrived).as_micros() as u64,
            handler_us: started.elapsed().as_micros() as u64,
            ..reply
        };
        if let Some(e) = &reply.error {
            refused += 1;
            tracing::debug!("query refused: {e}");
        } else {
            served += 1;
        }
        if a.report {
            println!(
                "{}",
                serde_json::json!({
                    "worker": name,
                    "handler_us": reply.handler_us,
                    "queued_us": reply.queued_us,
                    "error": reply.error,
                })
            );
        }
        if let Some(to) = msg.reply {
            let body = serde_json::to_vec(&reply)?;
            if let Err(e) = client.publish(to, body.into()).await {
                tracing::warn!("replying to a query: {e}");
            }
        }
        if last_note.elapsed() > Duration::from_secs(30) {
            eprintln!("query: {name}: {served} answered, {refused} refused");
            last_note = Instant::now();
        }
    }
    let _ = intake.await;
    let _ = client.flush().await;
    eprintln!("query: {name} stopped: {served} answered, {refused} refused");
    Ok(0)
}
