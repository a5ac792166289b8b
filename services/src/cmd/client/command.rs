//! `canopy write`, `canopy force`, `canopy unforce`: a command to the
//! node that owns the point, wherever it is in the tree.

use anyhow::bail;
use serde_json::{json, Value as Json};

use super::{connect, request};
use crate::cli::{CommandArgs, ServerArg, UnforceArgs};
use crate::wire::{Command, Op, Reply, SignedCommand};

/// Splits `root.south.fan1_speed` into (`root.south`, `fan1_speed`).
pub(super) fn split_point(point: &str) -> anyhow::Result<(&str, &str)> {
    match point.rsplit_once('.') {
        Some((node, p)) if !node.is_empty() && !p.is_empty() => Ok((node, p)),
        _ => bail!("{point:?} is not a full point name like root.south.fan1_speed"),
    }
}

/// Parses a CLI value: `true`/`false`, an integer, or a float.
fn parse_value(s: &str) -> anyhow::Result<Json> {
    match s {
        "true" => return Ok(Json::Bool(true)),
        "false" => return Ok(Json::Bool(false)),
        _ => {}
    }
    if let Ok(i) = s.parse::<i64>() {
        return Ok(json!(i));
    }
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok(json!(f)),
        _ => bail!("{s:?} is not a value: give a number, true or false"),
    }
}

async fn send_command(
    server: &ServerArg,
    point: &str,
    cmd: Command,
    as_json: bool,
) -> anyhow::Result<u8> {
    let (node, _) = split_point(point)?;
    let body = match &server.identity {
        Some(prefix) => {
            let id = crate::keys::ClientIdentity::load(prefix)?;
            let now_ms = crate::member::publisher::now_us() / 1000;
            let signed = SignedCommand::sign(&id.key, node, cmd.op, &cmd.point, cmd.value, now_ms)?;
            serde_json::to_vec(&signed)?
        }
        None => serde_json::to_vec(&cmd)?,
    };
    let client = connect(server).await?;
    let parsed: Reply = request(&client, events::subjects::cmd_subject(node), body).await?;
    if as_json {
        println!("{}", serde_json::to_string(&parsed)?);
    } else if parsed.ok {
        println!(
            "ok: {} epoch {} seq {} ({} µs)",
            parsed.origin.unwrap_or_default(),
            parsed.epoch.unwrap_or(0),
            parsed.seq.unwrap_or(0),
            parsed.handler_us.unwrap_or(0)
        );
    } else {
        eprintln!("refused: {}", parsed.error.unwrap_or_default());
    }
    Ok(if parsed.ok { 0 } else { 1 })
}

/// `canopy write` / `canopy force`.
pub async fn command(op: Op, a: CommandArgs) -> anyhow::Result<u8> {
    let (_, name) = split_point(&a.point)?;
    let cmd = Command {
        op,
        point: name.to_owned(),
        value: Some(parse_value(&a.value)?),
        by: Some(a.who.by.clone()),
    };
    send_command(&a.server, &a.point, cmd, a.json).await
}

/// `canopy unforce`.
pub async fn unforce(a: UnforceArgs) -> anyhow::Result<u8> {
    let (_, name) = split_point(&a.point)?;
    let cmd = Command {
        op: Op::Unforce,
        point: name.to_owned(),
        value: None,
        by: Some(a.who.by.clone()),
    };
    send_command(&a.server, &a.point, cmd, a.json).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_the_cli_promises() {
        assert_eq!(parse_value("true").ok(), Some(Json::Bool(true)));
        assert_eq!(parse_value("12").ok(), Some(json!(12)));
        assert_eq!(parse_value("1.5").ok(), Some(json!(1.5)));
        assert!(parse_value("abc").is_err());
        assert!(parse_value("NaN").is_err());
    }

    #[test]
    fn point_names_split_at_the_last_dot() {
        assert_eq!(
            split_point("root.south.fan1").ok(),
            Some(("root.south", "fan1"))
        );
        assert!(split_point("fan1").is_err());
    }
}
