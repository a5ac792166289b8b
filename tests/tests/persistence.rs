//! Persistence: a root whose data is wiped rebuilds the same state from
//! its children's streams.

use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::Signal;
use tests::{connect, free_ports, request, wait_for, Lab, PyModbus, TopologyBuilder};

const WAIT: Duration = Duration::from_secs(60);

fn quiet_tree(plc: u16) -> String {
    // Constant PLC values and no simulated points: the state only changes
    // through the commands the test sends, so two digests can be equal.
    let modbus = format!(
        "modbus = {{ address = \"127.0.0.1:{plc}\", unit = 1, poll_ms = 100, timeout_ms = 300 }}"
    );
    let mid = "[[node.point]]\nname = \"flow\"\nsource = \"modbus\"\nregister = \"holding:100\"\nscale = 0.1\nwritable = true\n";
    let leaf = "[[node.point]]\nname = \"co\"\nsource = \"modbus\"\nregister = \"input:7\"\n";
    TopologyBuilder::new("rebuild")
        .node("root", "", "")
        .node("root.mid", &modbus, mid)
        .node("root.mid.leaf", &modbus, leaf)
        .build()
}

async fn digest(client: &async_nats::Client) -> anyhow::Result<String> {
    let r = request(client, "canopy.state.root", "{\"digest\": true}").await?;
    Ok(r["digest"].as_str().context("digest")?.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wiped_root_rebuilds_an_identical_state_from_its_children() -> anyhow::Result<()> {
    let plc = free_ports(1);
    let _plc = PyModbus::start(plc, &["--holding", "100=1234", "--input", "7=77"])?;
    let lab = Lab::start(&quiet_tree(plc), &["--no-plc-sim"])?;
    let url = lab.url("root", "a")?;
    let root = connect(&url).await?;
    for (op, value) in [("force", "5"), ("unforce", ""), ("force", "7")] {
        let body = if value.is_empty() {
            format!("{{\"op\":\"{op}\",\"point\":\"flow\"}}")
        } else {
            format!("{{\"op\":\"{op}\",\"point\":\"flow\",\"value\":{value}}}")
        };
        let r = request(&root, "canopy.cmd.root.mid", &body).await?;
        assert_eq!(r["ok"], true, "{r}");
    }
    let before = wait_for("a settled state at the root", WAIT, || async {
        let s = request(&root, "canopy.state.root", "").await?;
        let forced = s["points"]["root.mid.flow"]["forced"] == true;
        let has_leaf = s["points"]["root.mid.leaf.co"]["value"] == 77;
        if !(forced && has_leaf) {
            return Ok(None);
        }
        Ok(Some(digest(&root).await?))
    })
    .await?;
    // Nothing changes by itself in this tree: the digest is stable.
    assert_eq!(digest(&root).await?, before);

    let member = lab.member("root", "a")?;
    let pid = member["pid"].as_u64().context("pid")? as u32;
    let data = std::path::PathBuf::from(member["data"].as_str().context("data")?);
    assert!(tests::kill(pid, Signal::SIGKILL));
    wait_for("the root member to be gone", WAIT, || async {
        Ok((!tests::kill(pid, Signal::SIGCONT)).then_some(()))
    })
    .await?;
    std::fs::remove_dir_all(&data)?;
    std::fs::create_dir_all(&data)?;
    let _restarted = tests::Respawned::start(&member["argv"])?;
    let root = wait_for("the restarted root's server", WAIT, || async {
        Ok(Some(connect(&url).await?))
    })
    .await?;
    let after = wait_for("the rebuilt state to match", WAIT, || async {
        let d = digest(&root).await?;
        Ok((d == before).then_some(d))
    })
    .await?;
    assert_eq!(after, before);
    Ok(())
}
