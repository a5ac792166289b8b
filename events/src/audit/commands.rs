//! The audit's command rules: a recorded command re-verifies against its
//! client's signature and rights, and on a secured tree every override
//! (forced / unforced event) was asked for by an accepted signed command.

use std::collections::BTreeMap;

use super::{kind, Manifest};
use crate::command::verify_recorded;
use crate::wire::{Body, CommandBody, CommandOp, Event, Value};

/// What the rules need from the manifest, and the overrides accepted and
/// not yet seen carried out, by point.
#[derive(Debug, Clone)]
pub(super) struct Commands {
    manifest: Manifest,
    pending: BTreeMap<String, (CommandOp, Value, String)>,
}

type Found = Option<(&'static str, String)>;

impl Commands {
    pub(super) fn new(manifest: &Manifest) -> Self {
        Commands {
            manifest: manifest.clone(),
            pending: BTreeMap::new(),
        }
    }

    /// The violation `event` is, if any.
    pub(super) fn check(&mut self, event: &Event) -> Found {
        match &event.body {
            Body::Command(b) => self.command(event, b),
            Body::Forced(b) => self.effect(CommandOp::Force, &b.point, &b.value, &b.by),
            Body::Unforced(b) => self.effect(CommandOp::Unforce, &b.point, &Value::Null, &b.by),
            _ => None,
        }
    }

    fn command(&mut self, event: &Event, b: &CommandBody) -> Found {
        if !b.is_signed() {
            return self.manifest.secured().then(|| {
                (
                    kind::UNSIGNED_COMMAND,
                    format!(
                        "{} of {} by {:?} carries no client signature",
                        b.op, b.point, b.by
                    ),
                )
            });
        }
        if let Err(e) = verify_recorded(&event.origin, b) {
            return Some((kind::BAD_COMMAND, format!("{} of {}: {e}", b.op, b.point)));
        }
        // The event's own ts: when the node accepted it.
        let at_ms = event.ts / 1000;
        let Some((name, client)) = self.manifest.client_at(&b.key, at_ms) else {
            return Some((
                kind::UNAUTHORIZED_COMMAND,
                format!(
                    "{} of {}: key {} is no client of the manifest",
                    b.op, b.point, b.key
                ),
            ));
        };
        if name != b.by {
            return Some((
                kind::BAD_COMMAND,
                format!(
                    "{} of {}: recorded by {:?}, but the key is client {name:?}'s",
                    b.op, b.point, b.by
                ),
            ));
        }
        if !client.may(b.op) || !client.covers(&event.origin) {
            return Some((
                kind::UNAUTHORIZED_COMMAND,
                format!(
                    "{} of {}: client {name} ({} of {}) may not",
                    b.op, b.point, client.role, client.scope
                ),
            ));
        }
        if b.outcome == "accepted" && b.op != CommandOp::Write {
            self.pending
                .insert(b.point.clone(), (b.op, b.value.clone(), b.by.clone()));
        }
        None
    }

    fn effect(&mut self, op: CommandOp, point: &str, value: &Value, by: &str) -> Found {
        let asked = self.pending.remove(point);
        if !self.manifest.secured() {
            return None;
        }
        match asked {
            Some((o, v, b)) if o == op && &v == value && b == by => None,
            _ => Some((
                kind::UNSIGNED_COMMAND,
                format!("{op} of {point} by {by:?} with no accepted signed command for it"),
            )),
        }
    }
}
