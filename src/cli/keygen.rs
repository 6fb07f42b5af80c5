//! `pv keygen [--name N]`: an Ed25519 key pair for signing evidence.

use super::CliError;
use crate::evidence::keys;

/// Arguments of `pv keygen`.
#[derive(clap::Args)]
#[command(after_help = "\
The private key is written outside the repository, mode 0600: $PV_KEY_DIR, else \
$XDG_CONFIG_HOME/pv/keys, else ~/.config/pv/keys. The public key goes to keys/NAME.pub; \
the keys in keys/ are the signers `pv verify` and `pv gate` trust, so committing it is \
how a signer is admitted.

Example:
  pv keygen --name alice")]
pub struct Args {
    /// Key name (default: $PV_KEY_NAME, else $USER).
    #[arg(long)]
    name: Option<String>,
    /// Directory of trusted public keys.
    #[arg(long, default_value = "keys")]
    keys: std::path::PathBuf,
}

/// Runs `pv keygen`.
pub fn run(a: Args) -> Result<(), CliError> {
    let name = a.name.unwrap_or_else(keys::default_key_name);
    let private = keys::private_key_path(&name);
    if private.exists() {
        return Err(CliError::input(format!(
            "{} exists; pv never overwrites a private key",
            private.display()
        )));
    }
    let public =
        keys::keygen(&name, &private, &a.keys).map_err(|e| CliError::input(e.to_string()))?;
    eprintln!(
        "private key: {} (mode 0600; keep it out of the repository)",
        private.display()
    );
    eprintln!(
        "public key:  {} (commit it to trust this signer)",
        public.display()
    );
    Ok(())
}
