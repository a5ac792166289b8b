//! Signing and verifying checkpoints: the exact message an origin's active
//! member signs over its chain head, so any language with an ed25519
//! library can check it (`docs/wire-format.md`, "Checkpoint").

use nkeys::{KeyPair, KeyPairType};

use crate::wire::{user_key_bytes, CheckpointBody, Hash, Signature};

/// The first bytes of every signed checkpoint message: what the signature
/// is for and the layout's version, NUL-terminated, so a signature made for
/// anything else (another protocol, a later layout) never verifies as one.
pub const CHECKPOINT_DOMAIN: &[u8] = b"canopy-checkpoint-v1\0";

/// The bytes a checkpoint signs, no CBOR involved:
///
/// ```text
/// "canopy-checkpoint-v1" 0x00 || origin 0x00 || member 0x00
///     || epoch (8 bytes, big endian) || head_seq (8 bytes, big endian)
///     || head (32 bytes)
/// ```
///
/// `origin` and `member` are UTF-8 names that cannot contain NUL, so the
/// layout is unambiguous. `epoch` is the checkpoint event's own epoch (the
/// signer's activation), which may be newer than the head's: a new active
/// member signs the history it inherited.
pub fn checkpoint_message(
    origin: &str,
    member: &str,
    epoch: u64,
    head_seq: u64,
    head: &Hash,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHECKPOINT_DOMAIN.len() + origin.len() + member.len() + 50);
    m.extend_from_slice(CHECKPOINT_DOMAIN);
    m.extend_from_slice(origin.as_bytes());
    m.push(0);
    m.extend_from_slice(member.as_bytes());
    m.push(0);
    m.extend_from_slice(&epoch.to_be_bytes());
    m.extend_from_slice(&head_seq.to_be_bytes());
    m.extend_from_slice(head);
    m
}

/// Why a checkpoint could not be signed or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    /// The key is not a public user nkey (`U...`), or the key pair given to
    /// sign is not a user key pair.
    #[error("not a user nkey: {key}")]
    BadKey {
        /// The key (public form).
        key: String,
    },
    /// The key pair holds no seed (it was built from a public key).
    #[error("key pair {key} has no seed: it cannot sign")]
    CannotSign {
        /// The key pair's public key.
        key: String,
    },
    /// The signature is not `key`'s over this checkpoint's message (or the
    /// key is not a valid ed25519 point).
    #[error("signature does not verify with key {key}")]
    BadSignature {
        /// The key the checkpoint names.
        key: String,
    },
}

/// Sign the chain head `head_seq` (whose event bytes hash to `head`) of
/// `origin` as `member`, active in `epoch`, with `kp` (a user key pair with
/// its seed): the body of the checkpoint event to seal next, in `epoch`.
pub fn sign_checkpoint(
    kp: &KeyPair,
    origin: &str,
    member: &str,
    epoch: u64,
    head_seq: u64,
    head: Hash,
) -> Result<CheckpointBody, SigError> {
    let key = kp.public_key();
    if kp.key_pair_type() != KeyPairType::User {
        return Err(SigError::BadKey { key });
    }
    let msg = checkpoint_message(origin, member, epoch, head_seq, &head);
    let sig = kp
        .sign(&msg)
        .ok()
        .and_then(|s| Signature::try_from(s.as_slice()).ok())
        .ok_or_else(|| SigError::CannotSign { key: key.clone() })?;
    Ok(CheckpointBody {
        member: member.to_owned(),
        head_seq,
        head,
        key,
        sig,
    })
}

/// Check that `body.sig` is `body.key`'s signature of the checkpoint of
/// `origin` in `epoch` (the checkpoint event's own origin and epoch). Says
/// nothing of whether `body.key` is the right key: the audit compares it
/// with the manifest.
pub fn verify_checkpoint(origin: &str, epoch: u64, body: &CheckpointBody) -> Result<(), SigError> {
    if user_key_bytes(&body.key).is_none() {
        return Err(SigError::BadKey {
            key: body.key.clone(),
        });
    }
    let bad = || SigError::BadSignature {
        key: body.key.clone(),
    };
    let kp = KeyPair::from_public_key(&body.key).map_err(|_| bad())?;
    let msg = checkpoint_message(origin, &body.member, epoch, body.head_seq, &body.head);
    kp.verify(&msg, &body.sig).map_err(|_| bad())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A user key pair from a fixed seed: the same key on every run, so
    /// golden bytes (ed25519 signatures are deterministic) stay put.
    pub(crate) fn fixed_user(seed: u8) -> KeyPair {
        KeyPair::new_from_raw(KeyPairType::User, [seed; 32]).unwrap()
    }

    #[test]
    fn message_layout() {
        let m = checkpoint_message("root.south", "a", 3, 43, &[0xab; 32]);
        let mut want = b"canopy-checkpoint-v1\0root.south\0a\0".to_vec();
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 3]);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 43]);
        want.extend_from_slice(&[0xab; 32]);
        assert_eq!(m, want);
        assert_eq!(m.len(), 21 + 11 + 2 + 16 + 32);
    }

    #[test]
    fn sign_then_verify_and_every_field_is_signed() {
        let kp = fixed_user(1);
        let body = sign_checkpoint(&kp, "root.south", "a", 3, 43, [9; 32]).unwrap();
        assert_eq!(body.key, kp.public_key());
        assert!(body.key.starts_with('U') && body.key.len() == 56);
        verify_checkpoint("root.south", 3, &body).unwrap();
        let bad = |r: Result<(), SigError>| matches!(r, Err(SigError::BadSignature { .. }));
        assert!(bad(verify_checkpoint("root.north", 3, &body)));
        assert!(bad(verify_checkpoint("root.south", 4, &body)));
        for f in [
            (|b: &mut CheckpointBody| b.member = "b".into()) as fn(&mut CheckpointBody),
            |b| b.head_seq += 1,
            |b| b.head[31] ^= 1,
            |b| b.sig[0] ^= 1,
            |b| b.key = fixed_user(2).public_key(),
        ] {
            let mut b = body.clone();
            f(&mut b);
            assert!(bad(verify_checkpoint("root.south", 3, &b)), "{b:?}");
        }
        // Deterministic: the same inputs give the same signature.
        assert_eq!(
            sign_checkpoint(&kp, "root.south", "a", 3, 43, [9; 32]).unwrap(),
            body
        );
    }

    #[test]
    fn only_user_keys_with_seeds_sign_and_verify() {
        let account = KeyPair::new_from_raw(KeyPairType::Account, [1; 32]).unwrap();
        assert!(matches!(
            sign_checkpoint(&account, "r", "a", 1, 1, [0; 32]),
            Err(SigError::BadKey { .. })
        ));
        let public = KeyPair::from_public_key(&fixed_user(1).public_key()).unwrap();
        assert!(matches!(
            sign_checkpoint(&public, "r", "a", 1, 1, [0; 32]),
            Err(SigError::CannotSign { .. })
        ));
        let mut body = sign_checkpoint(&fixed_user(1), "r", "a", 1, 1, [0; 32]).unwrap();
        body.key = account.public_key();
        assert!(matches!(
            verify_checkpoint("r", 1, &body),
            Err(SigError::BadKey { .. })
        ));
        body.key = "UNOTAKEY".into();
        assert!(matches!(
            verify_checkpoint("r", 1, &body),
            Err(SigError::BadKey { .. })
        ));
    }
}
