//! `cargo xtask lab up|down|exec|list`: the measurement lab by hand — a scenario's middlebox and
//! `mptcp-probe serve` left running for exploring, commands run in its hosts, and removal.

use anyhow::{bail, Context as _};
use mptcp_probe_tests::{
    lab::{self, addr, Lab},
    matrix, scenario,
    workspace::LAB_BINS,
};

use crate::measure::{prepare, print_kept, selected};

pub enum LabCmd {
    Up { scenario: Option<String> },
    Down { run: Option<String>, all: bool },
    Exec { role: String, run: Option<String>, cmd: Vec<String> },
    List,
}

/// The one lab on the host, or the named one.
fn pick(run: Option<String>) -> anyhow::Result<String> {
    let runs = lab::runs();
    match run {
        Some(r) if runs.contains(&r) => Ok(r),
        Some(r) => {
            bail!("no lab {r} here (labs: {})", if runs.is_empty() { "none".into() } else { runs.join(", ") })
        }
        None => match runs.as_slice() {
            [one] => Ok(one.clone()),
            [] => bail!("no lab is up: `cargo xtask lab up`"),
            _ => bail!("several labs are up ({}): say which with --run", runs.join(", ")),
        },
    }
}

pub fn lab(cmd: LabCmd) -> anyhow::Result<()> {
    crate::require_root("cargo xtask lab")?;
    match cmd {
        LabCmd::Up { scenario } => {
            let sc = selected(&scenario.into_iter().collect::<Vec<_>>())?;
            let sc = if sc.len() == 1 { sc[0] } else { scenario::find("clean").expect("clean exists") };
            let bins = prepare("cargo xtask lab up")?;
            let l = Lab::up();
            l.server_announces(addr::SERVER_EXTRA, addr::SERVER_EXTRA_V6);
            let applied = scenario::apply(&l, sc, &bins.middlebox)?;
            let server = matrix::serve(&l.s, &bins.probe)?;
            let run = matrix::keep(l, applied, server);
            println!("{run}");
            print_kept(&run, sc);
            eprintln!(
                "  namespaces mpp-{run}-c (client {}, {}), mpp-{run}-m (router), mpp-{run}-s (server {})",
                addr::CLIENT1,
                addr::CLIENT2,
                addr::SERVER
            );
            Ok(())
        }
        LabCmd::Down { run, all } => {
            let runs = if all { lab::runs() } else { vec![pick(run)?] };
            for r in &runs {
                lab::remove(r);
                eprintln!("lab {r} removed");
            }
            if runs.is_empty() {
                eprintln!("no lab was up");
            }
            Ok(())
        }
        LabCmd::Exec { role, run, cmd } => {
            if !matches!(role.as_str(), "c" | "m" | "s") {
                bail!("the lab's hosts are c (client), m (router/middlebox) and s (server), not {role:?}");
            }
            let Some((program, args)) = cmd.split_first() else {
                bail!("nothing to run: lab exec c -- COMMAND")
            };
            let run = pick(run)?;
            // The project's binaries by name, without installing them.
            let program = match LAB_BINS.iter().find(|b| b.name == program.as_str()) {
                Some(b) => crate::bin_path(*b).display().to_string(),
                None => program.to_string(),
            };
            let status = std::process::Command::new("ip")
                .args(["netns", "exec", &format!("mpp-{run}-{role}"), &program])
                .args(args)
                .status()
                .context("running ip netns exec")?;
            if !status.success() {
                bail!("{program} exited with {status}");
            }
            Ok(())
        }
        LabCmd::List => {
            for r in lab::runs() {
                println!("{r}");
            }
            Ok(())
        }
    }
}
