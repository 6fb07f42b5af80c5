//! `pv engines`: the engines pv knows by name, whether their adapters are built, and which
//! falsification tests need them; `--needed` prints just the names a gate run needs built.

use std::fmt::Write;
use std::path::PathBuf;

use serde::Serialize;

use super::{CliError, Format, emit, print_json};
use crate::trace::engine::{Engine, KNOWN};

/// Arguments of `pv engines`.
#[derive(clap::Args)]
#[command(after_help = "\
An external engine runs under pv's engine protocol (pv-engine/1, see `pv engine-trace \
--help`) through an adapter that `scripts/engines.sh NAME` builds into target/engines/bin/ \
(or that PV_ENGINE_<NAME> points at). A test whose params name an engine (`engine: \
realizar`, a side `realizar` or `{engine: realizar, model: ...}`) cannot run without it.\n\n\
Examples:\n  \
pv engines\n  \
scripts/engines.sh $(pv engines --needed)    # build what the gate-required tests need")]
pub struct Args {
    /// Print only the names of the engines that gate-required tests of ACTIVE contracts
    /// name, one a line (for scripts: the CI builds these before `pv gate`).
    #[arg(long)]
    needed: bool,
    /// The repository root (its contracts/ is read).
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// One engine's row.
#[derive(Serialize)]
struct Row {
    /// The name contracts and `--engine` use.
    name: &'static str,
    /// The adapter found, or `null` when it is not built.
    adapter: Option<String>,
    /// Why it was not found (how to build it).
    missing: Option<String>,
    /// Tests that name it (`contract/test`), and whether each is gate-required.
    tests: Vec<(String, bool)>,
}

/// Runs `pv engines`.
pub fn run(a: Args) -> Result<(), CliError> {
    let contracts = crate::contract::load_all(&a.root.join("contracts"), &a.root)
        .map_err(|e| CliError::input(e.to_string()))?;
    let rows: Vec<Row> = KNOWN
        .iter()
        .map(|k| {
            let (adapter, missing) = match Engine::resolve(k.name) {
                Ok(Engine::External { program, .. }) => (Some(program.display().to_string()), None),
                Ok(Engine::Pv) => (None, None),
                Err(e) => (None, Some(e.to_string())),
            };
            let tests = contracts
                .iter()
                .flat_map(|c| {
                    c.contract
                        .falsification_tests
                        .iter()
                        .filter(|t| crate::checkers::external_engines(&t.params).contains(&k.name))
                        .map(move |t| {
                            (
                                format!("{}/{}", c.contract.metadata.id, t.id),
                                t.required_for_gate && c.contract.enforced(),
                            )
                        })
                })
                .collect();
            Row {
                name: k.name,
                adapter,
                missing,
                tests,
            }
        })
        .collect();
    if a.needed {
        let mut o = String::new();
        for r in rows.iter().filter(|r| r.tests.iter().any(|t| t.1)) {
            let _ = writeln!(o, "{}", r.name);
        }
        return emit(&o);
    }
    match a.format {
        Format::Json => {
            print_json(&serde_json::to_value(&rows).map_err(|e| CliError::other(e.to_string()))?)
        }
        Format::Text => {
            let mut o = String::new();
            for r in &rows {
                let _ = writeln!(
                    o,
                    "{}: {}",
                    r.name,
                    r.adapter.as_deref().unwrap_or("not built")
                );
                if let Some(m) = &r.missing {
                    let _ = writeln!(o, "  {m}");
                }
                for (t, required) in &r.tests {
                    let _ = writeln!(
                        o,
                        "  needed by {t}{}",
                        if *required { " (gate-required)" } else { "" }
                    );
                }
            }
            emit(&o)
        }
    }
}
