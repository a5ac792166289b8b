//! The docker compose lab (`scripts/compose-lab`): the default compose
//! topology comes up in containers, its points reach the root, killing the
//! pair's active container fails it over, and the root's history audits
//! clean. Needs Docker with docker-compose (part of this machine kind).
//! The lab is taken down on Drop, also when the test fails.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};
use tests::{connect, member_info, state, wait_for, workspace_root};

const ROOT_URL: &str = "nats://172.29.0.10:14000";
const WAIT: Duration = Duration::from_secs(120);

fn script(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(workspace_root().join("scripts/compose-lab"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running scripts/compose-lab {args:?}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "scripts/compose-lab {args:?} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// Takes the compose lab down when dropped.
struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        let _ = script(&["down"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_compose_lab_runs_fails_over_and_audits_clean() -> anyhow::Result<()> {
    let _down = Down;
    script(&["up"])?;
    let root = wait_for("the root's NATS server", WAIT, || async {
        Ok(Some(connect(ROOT_URL).await?))
    })
    .await?;
    let s = wait_for("every node's points at the root", WAIT, || async {
        let s = state(&root, "root").await?;
        let p = &s["points"];
        let all = ["root.uptime", "root.south.co_ppm", "root.south.cell1.temp"]
            .iter()
            .all(|n| p[*n]["quality"] == "good");
        Ok(all.then_some(s))
    })
    .await?;
    let epoch = s["points"]["root.south.co_ppm"]["epoch"]
        .as_u64()
        .context("epoch")?;

    // Kill the pair's active container; the other member takes over and
    // its readings reach the root under a newer epoch.
    let active = wait_for("the pair's active member", WAIT, || async {
        for m in ["a", "b"] {
            if let Ok(info) = member_info(&root, "root.south", m).await {
                if info["role"] == "active" {
                    return Ok(Some(m));
                }
            }
        }
        Ok(None)
    })
    .await?;
    script(&["compose", "kill", &format!("root-south-{active}")])?;
    wait_for("a newer epoch at the root", WAIT, || async {
        let s = state(&root, "root").await?;
        let p = &s["points"]["root.south.co_ppm"];
        Ok((p["epoch"].as_u64().unwrap_or(0) > epoch && p["quality"] == "good").then_some(()))
    })
    .await?;

    let bin = static_bin();
    let manifest = workspace_root().join("target/compose/keys/manifest.json");
    let out = Command::new(&bin)
        .args(["audit", "--server", ROOT_URL, "--node", "root", "--json"])
        .arg("--manifest")
        .arg(&manifest)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("audit said {:?}", String::from_utf8_lossy(&out.stdout)))?;
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["violations"], serde_json::json!([]), "{report}");
    Ok(())
}

/// The static canopy the script built (the one inside the image).
fn static_bin() -> PathBuf {
    workspace_root().join("target/static/x86_64-unknown-linux-gnu/release/canopy")
}
