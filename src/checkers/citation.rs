//! FFN-GGUF-004: the fix's commit must cite the contract and the hypothesis that the
//! latest valid evidence of the bisecting test recorded.

use std::process::Command;

use serde_json::{Value, json};

use super::context::{CheckError, Context, Input, Outcome, pass_fail, typed_params};
use super::params::CitationParams;

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

/// Runs the citation check on the commit given with `--cite`.
pub fn fix_cites_hypothesis(p: &Value, ctx: &Context) -> Result<Outcome, CheckError> {
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
    let cites_contract = cites(&message, ctx.contract_id);
    let cites_hypothesis = cites(&message, &hypothesis);
    let passed = cites_contract && cites_hypothesis;
    Ok(Outcome {
        verdict: pass_fail(passed),
        passed,
        canonical: true,
        measurements: json!({
            "commit": commit,
            "hypothesis_test": p.hypothesis_test,
            "hypothesis": hypothesis,
            "cites_contract": cites_contract,
            "cites_hypothesis": cites_hypothesis,
        }),
        inputs: vec![Input {
            name: format!("git:{rev}"),
            digest: [("gitCommit".to_string(), commit.clone())].into(),
        }],
        report: format!(
            "commit {}: cites {}: {}; cites {} (latest {} verdict): {}",
            &commit[..commit.len().min(12)],
            ctx.contract_id,
            if cites_contract { "yes" } else { "no" },
            hypothesis,
            p.hypothesis_test,
            if cites_hypothesis { "yes" } else { "no" }
        ),
    })
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
