//! `canopy state`: a node's materialised state, as a table or JSON.

use anyhow::bail;

use super::{connect, request};
use crate::cli::StateArgs;
use crate::wire::{StateReply, StateRequest};

/// `canopy state`.
pub async fn state(a: StateArgs) -> anyhow::Result<u8> {
    let client = connect(&a.server).await?;
    let req = StateRequest {
        pattern: a.pattern.clone(),
        digest: a.digest,
    };
    let reply: StateReply = request(
        &client,
        events::subjects::state_subject(&a.node),
        serde_json::to_vec(&req)?,
    )
    .await?;
    if let Some(err) = &reply.error {
        bail!("{err}");
    }
    if a.json {
        println!("{}", serde_json::to_string(&reply)?);
    } else if a.digest {
        println!("{}", reply.digest.as_deref().unwrap_or("?"));
    } else {
        print_table(&reply);
    }
    Ok(0)
}

fn print_table(reply: &StateReply) {
    let now = crate::member::publisher::now_us();
    println!("state of {} (member {})", reply.node, reply.member);
    println!(
        "{:<40} {:>14} {:<9} {:<6} {:>8} {:>6} {:>9}",
        "point", "value", "quality", "forced", "seq", "epoch", "age"
    );
    let mut outside = false;
    for (name, p) in reply.points.iter().flatten() {
        outside |= p.outside;
        // A copy of a point outside the node's subtree (`view = "tree"`).
        let name = if p.outside {
            format!("{name} *")
        } else {
            name.clone()
        };
        let age = if p.ts == 0 {
            "-".to_owned()
        } else {
            format!("{:.1}s", now.saturating_sub(p.ts) as f64 / 1e6)
        };
        println!(
            "{:<40} {:>14} {:<9} {:<6} {:>8} {:>6} {:>9}",
            name,
            serde_json::to_string(&p.value).unwrap_or_default(),
            p.quality.as_str(),
            if p.forced { "yes" } else { "" },
            p.seq,
            p.epoch,
            age
        );
    }
    if outside {
        println!(
            "* outside {}'s subtree: its copy of the rest of the plant (view = \"tree\")",
            reply.node
        );
    }
}
