//! FFN-GGUF-004: the fix's commit must cite the contract and the hypothesis that the
//! latest valid evidence of the bisecting test recorded.

use std::process::Command;

use serde_json::{Value, json};

use super::context::{CheckError, Context, Input, Measured, typed_params};
use super::judge::{Judged, Judgement, flag, text};
use super::params::CitationParams;
use crate::fsutil::short;

fn git(repo: &std::path::Path, args: &[&str]) -> Result<String, CheckError> {
    let out = Command::new("git")
        .current_dir(repo)
        .args(args)
        .output()
        .map_err(|e| CheckError::Input(format!("running git: {e}")))?;
    if !out.status.success() {
        return Err(CheckError::Input(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `text` contains `word` delimited by non-word characters.
fn cites(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        let boundary = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        boundary(before) && boundary(after)
    })
}

/// Reads the commit given with `--cite`: its message, and the hypothesis the latest valid
/// evidence of the bisecting test recorded.
pub fn fix_cites_hypothesis(p: &Value, ctx: &Context) -> Result<Measured, CheckError> {
    let p: CitationParams = typed_params(p)?;
    let rev = ctx.cite.ok_or_else(|| {
        CheckError::Input("this test needs --cite REV: the commit of the fix".into())
    })?;
    let commit = git(
        ctx.repo,
        &["rev-parse", "--verify", &format!("{rev}^{{commit}}")],
    )?
    .trim()
    .to_string();
    let message = git(ctx.repo, &["log", "-1", "--format=%B", &commit])?;
    let hypothesis = (ctx.latest_verdict)(&p.hypothesis_test).ok_or_else(|| {
        CheckError::Input(format!(
            "{} has no valid evidence yet; discharge it first (pv discharge {})",
            p.hypothesis_test, p.hypothesis_test
        ))
    })?;
    Ok(Measured {
        measurements: json!({
            "commit": commit,
            "message": message,
            "hypothesis_test": p.hypothesis_test,
            "hypothesis": hypothesis,
            "cites_contract": cites(&message, ctx.contract_id),
            "cites_hypothesis": cites(&message, &hypothesis),
        }),
        inputs: vec![Input {
            name: format!("git:{rev}"),
            digest: [("gitCommit".to_string(), commit.clone())].into(),
        }],
    })
}

/// The citation judge: the recorded message names the contract and the recorded
/// hypothesis, each as a whole word.
pub fn judge(j: &Judged) -> Result<Judgement, String> {
    let m = j.measurements;
    let (commit, message, hypothesis) = (
        text(m, "/commit")?,
        text(m, "/message")?,
        text(m, "/hypothesis")?,
    );
    let cites_contract = cites(message, j.contract_id);
    let cites_hypothesis = cites(message, hypothesis);
    for (k, v) in [
        ("cites_contract", cites_contract),
        ("cites_hypothesis", cites_hypothesis),
    ] {
        if flag(m, &format!("/{k}"))? != v {
            return Err(format!(
                "{k} is recorded as {} but the message gives {v}",
                !v
            ));
        }
    }
    let yes = |b: bool| if b { "yes" } else { "no" };
    Ok(Judgement::pass_fail(
        cites_contract && cites_hypothesis,
        format!(
            "commit {}: cites {}: {}; cites {hypothesis} (latest {} verdict): {}",
            short(commit, 12),
            j.contract_id,
            yes(cites_contract),
            text(m, "/hypothesis_test")?,
            yes(cites_hypothesis)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::cites;

    #[test]
    fn citations_are_whole_words() {
        assert!(cites("fix (H2, trace-ffn-sub-block-gguf-v1)", "H2"));
        assert!(!cites("see H20", "H2"));
        assert!(!cites(
            "trace-ffn-sub-block-gguf-v10",
            "trace-ffn-sub-block-gguf-v1"
        ));
    }
}
