//! Signed commands: the request a client signs, the exact bytes its
//! signature covers, and the checks an auditor (or the serving node)
//! repeats on a recorded [`CommandBody`] (`docs/wire-format.md`,
//! "Command").
//!
//! The broker cannot tell the node that serves a command who sent it (a
//! leaf hop hides the sender), so the client signs the request end to end
//! with its own nkey. The request travels, and is recorded, as the exact
//! bytes signed, so no canonical form is needed: any language that can
//! write JSON and sign with ed25519 can send one.

use nkeys::{KeyPair, KeyPairType};
use serde::{Deserialize, Serialize};

use crate::checkpoint::SigError;
use crate::wire::{user_key_bytes, CommandBody, CommandOp, Signature, Value};

/// The first bytes of every signed command message, so a command signature
/// can never pass as a checkpoint's or anything else's (and a checkpoint's
/// never as a command's).
pub const COMMAND_DOMAIN: &[u8] = b"canopy-command-v1\0";

/// What a client asks for, as JSON: the bytes it signs. Every field is
/// signed, so none can be changed or replayed elsewhere: `node` pins the
/// node that may carry it out, `ts` and `nonce` make it single-use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The node that owns the point.
    pub node: String,
    /// What to do.
    pub op: CommandOp,
    /// The point, one token.
    pub point: String,
    /// The value to write or force (a JSON number or boolean); absent for
    /// an unforce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// When the client signed it, in milliseconds since the Unix epoch.
    pub ts: u64,
    /// A random value the client never reuses (16 bytes as 32 hex digits).
    pub nonce: String,
}

/// The message a command signature covers: [`COMMAND_DOMAIN`] followed by
/// the request bytes exactly as sent.
pub fn command_message(request: &[u8]) -> Vec<u8> {
    domain_message(COMMAND_DOMAIN, request)
}

/// Signs `request` (the JSON bytes to send) with a client's key pair.
pub fn sign_command(kp: &KeyPair, request: &[u8]) -> Result<Signature, SigError> {
    sign_in(kp, COMMAND_DOMAIN, request)
}

/// Checks that `sig` is `key`'s signature over `request`. Says nothing of
/// whether the key may command anything: that is the manifest's.
pub fn verify_command(key: &str, request: &[u8], sig: &[u8]) -> Result<(), SigError> {
    verify_in(key, COMMAND_DOMAIN, request, sig)
}

/// The first bytes of every signed control message (a switchover or a
/// maintenance change of a pair): no command, checkpoint or other
/// signature passes for one.
pub const CONTROL_DOMAIN: &[u8] = b"canopy-control-v1\0";

/// An operator's role control of a pair, as JSON: the bytes an engineer
/// signs. `node` and `member` pin the member asked; a switchover also
/// names the epoch it hands over, so the same message replayed to the
/// member that took the role (a later epoch) is refused; `ts` and
/// `nonce` make it single-use at the member asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlRequest {
    /// The pair.
    pub node: String,
    /// The member asked (the active one for a switchover).
    pub member: String,
    /// `switchover` or `maintenance`.
    pub op: String,
    /// Maintenance in (true) or out (false); absent for a switchover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<bool>,
    /// A switchover: the epoch it hands over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// When the client signed it, in milliseconds since the Unix epoch.
    pub ts: u64,
    /// A random value the client never reuses (32 hex digits).
    pub nonce: String,
}

/// Signs a control `request` (the JSON bytes to send).
pub fn sign_control(kp: &KeyPair, request: &[u8]) -> Result<Signature, SigError> {
    sign_in(kp, CONTROL_DOMAIN, request)
}

/// Checks that `sig` is `key`'s signature over the control `request`.
pub fn verify_control(key: &str, request: &[u8], sig: &[u8]) -> Result<(), SigError> {
    verify_in(key, CONTROL_DOMAIN, request, sig)
}

fn domain_message(domain: &[u8], request: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(domain.len() + request.len());
    m.extend_from_slice(domain);
    m.extend_from_slice(request);
    m
}

fn sign_in(kp: &KeyPair, domain: &[u8], request: &[u8]) -> Result<Signature, SigError> {
    let key = kp.public_key();
    if kp.key_pair_type() != KeyPairType::User {
        return Err(SigError::BadKey { key });
    }
    kp.sign(&domain_message(domain, request))
        .ok()
        .and_then(|s| Signature::try_from(s.as_slice()).ok())
        .ok_or(SigError::CannotSign { key })
}

fn verify_in(key: &str, domain: &[u8], request: &[u8], sig: &[u8]) -> Result<(), SigError> {
    if user_key_bytes(key).is_none() {
        return Err(SigError::BadKey { key: key.into() });
    }
    let bad = || SigError::BadSignature { key: key.into() };
    let kp = KeyPair::from_public_key(key).map_err(|_| bad())?;
    kp.verify(&domain_message(domain, request), sig)
        .map_err(|_| bad())
}

/// Why a recorded command does not hold up.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandProblem {
    /// The signature does not verify.
    #[error(transparent)]
    Signature(#[from] SigError),
    /// `signed` is not a request.
    #[error("the signed request does not parse: {0}")]
    Request(String),
    /// The recorded fields say something else than the signed request.
    #[error("the recorded {field} differs from the signed request")]
    Differs {
        /// Which field.
        field: &'static str,
    },
}

/// Re-verifies a signed command recorded by `origin`: the signature over
/// `signed`, and that `op`, `point`, `value` and the node match what the
/// client signed. Returns the request.
pub fn verify_recorded(origin: &str, body: &CommandBody) -> Result<Request, CommandProblem> {
    verify_command(&body.key, &body.signed, &body.sig)?;
    let req: Request =
        serde_json::from_slice(&body.signed).map_err(|e| CommandProblem::Request(e.to_string()))?;
    if req.node != origin {
        return Err(CommandProblem::Differs { field: "node" });
    }
    if req.op != body.op {
        return Err(CommandProblem::Differs { field: "op" });
    }
    if req.point != body.point {
        return Err(CommandProblem::Differs { field: "point" });
    }
    if json_value(req.value.as_ref()) != Some(body.value.clone()) {
        return Err(CommandProblem::Differs { field: "value" });
    }
    Ok(req)
}

/// A request's JSON value as an event value (absent is null); `None` if it
/// is neither a boolean nor a finite number.
pub fn json_value(v: Option<&serde_json::Value>) -> Option<Value> {
    match v {
        None | Some(serde_json::Value::Null) => Some(Value::Null),
        Some(serde_json::Value::Bool(b)) => Some(Value::Bool(*b)),
        Some(serde_json::Value::Number(n)) => match n.as_i64() {
            Some(i) => Some(Value::Int(i)),
            None => n.as_f64().filter(|f| f.is_finite()).map(Value::Float),
        },
        Some(_) => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is the failure report in tests
mod tests {
    use super::*;
    use crate::checkpoint::tests::fixed_user;

    #[test]
    fn a_command_signature_never_passes_for_a_control_nor_the_reverse() {
        let kp = KeyPair::new_user();
        let bytes = br#"{"node":"root.south","member":"a","op":"switchover","epoch":3,"ts":1,"nonce":"00"}"#;
        let as_command = sign_command(&kp, bytes).unwrap();
        let as_control = sign_control(&kp, bytes).unwrap();
        let key = kp.public_key();
        assert!(verify_control(&key, bytes, &as_control).is_ok());
        assert!(verify_control(&key, bytes, &as_command).is_err());
        assert!(verify_command(&key, bytes, &as_control).is_err());
    }

    fn request() -> Vec<u8> {
        br#"{"node":"root.south","op":"force","point":"temp1","value":21.5,"ts":1700000000123,"nonce":"000102030405060708090a0b0c0d0e0f"}"#.to_vec()
    }

    fn recorded(kp: &KeyPair) -> CommandBody {
        let signed = request();
        CommandBody {
            op: CommandOp::Force,
            point: "temp1".into(),
            value: Value::Float(21.5),
            by: "ops".into(),
            key: kp.public_key(),
            sig: sign_command(kp, &signed).unwrap().to_vec(),
            signed,
            outcome: "accepted".into(),
        }
    }

    #[test]
    fn a_recorded_command_verifies_and_every_part_is_bound() {
        let kp = fixed_user(3);
        let body = recorded(&kp);
        let req = verify_recorded("root.south", &body).unwrap();
        assert_eq!(req.nonce, "000102030405060708090a0b0c0d0e0f");
        // Another node, a changed request, a changed recorded field, another key.
        assert_eq!(
            verify_recorded("root.north", &body),
            Err(CommandProblem::Differs { field: "node" })
        );
        let mut b = body.clone();
        b.signed[10] ^= 1;
        assert!(matches!(
            verify_recorded("root.south", &b),
            Err(CommandProblem::Signature(SigError::BadSignature { .. }))
        ));
        let mut b = body.clone();
        b.value = Value::Float(99.0);
        assert_eq!(
            verify_recorded("root.south", &b),
            Err(CommandProblem::Differs { field: "value" })
        );
        let mut b = body.clone();
        b.op = CommandOp::Unforce;
        assert_eq!(
            verify_recorded("root.south", &b),
            Err(CommandProblem::Differs { field: "op" })
        );
        let mut b = body;
        b.key = fixed_user(4).public_key();
        assert!(verify_recorded("root.south", &b).is_err());
    }

    #[test]
    fn a_command_signature_is_not_a_checkpoint_signature() {
        let kp = fixed_user(1);
        let head = [7u8; 32];
        let msg = crate::checkpoint_message("root.south", "a", 3, 43, &head);
        // The checkpoint message signed as if it were a request never
        // verifies as that checkpoint, and the other way round.
        let sig = sign_command(&kp, &msg).unwrap();
        assert!(kp.verify(&msg, &sig).is_err());
        let cp = crate::sign_checkpoint(&kp, "root.south", "a", 3, 43, head).unwrap();
        assert!(verify_command(&kp.public_key(), &msg, &cp.sig).is_err());
    }
}
