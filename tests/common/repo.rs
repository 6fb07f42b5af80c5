//! A scratch repository for evidence tests: one contract whose required test is the
//! APR/GGUF std ratio on a synthetic two-layer llama model, a signing key, a file standing
//! for the engine code the contract covers, and (on request) git history to gate against.

use std::path::{Path, PathBuf};
use std::process::Command;

use pv::evidence::discharge::{DischargeError, Discharged, Request, discharge};
use pv::evidence::keys;
use pv::evidence::layout::Layout;
use pv::gguf::GgmlType;

/// A fresh empty directory for test `tag`.
pub fn fresh_dir(tag: &str) -> Scratch {
    Scratch(
        tempfile::Builder::new()
            .prefix(&format!("pv-evidence-{tag}-"))
            .tempdir()
            .unwrap(),
    )
}

/// A scratch directory, removed with everything in it when dropped (so a test run leaves
/// nothing behind in the temporary directory).
pub struct Scratch(tempfile::TempDir);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

/// The contract a [`SynRepo`] holds, as the tests vary it.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The pinned sha256 of `syn.gguf`.
    pub sha: String,
    /// SYN-001's band.
    pub band: [f64; 2],
    /// The contract's status.
    pub status: &'static str,
    /// Whether SYN-001 is gate-required.
    pub required: bool,
    /// The contract's covers.
    pub covers: Vec<&'static str>,
}

/// A repository with one contract (`syn-v1`: SYN-001 the std ratio, required; SYN-002 a
/// citation, not required), a key pair `tester`, and no evidence.
pub struct SynRepo {
    /// The repository root (removed when the repository is dropped).
    pub root: PathBuf,
    /// The directory, held so it lives as long as the repository.
    pub scratch: Scratch,
    /// `root/models`.
    pub models: PathBuf,
    /// The tester's private key.
    pub key: PathBuf,
    /// sha256 of `models/syn.gguf`.
    pub sha: String,
}

impl SynRepo {
    /// A new repository in a fresh directory.
    pub fn new(tag: &str) -> Self {
        let scratch = fresh_dir(tag);
        let root = scratch.to_path_buf();
        let models = root.join("models");
        std::fs::create_dir_all(&models).unwrap();
        let gguf = super::synthetic_model("llama", GgmlType::Q8_0, None);
        std::fs::write(models.join("syn.gguf"), gguf.bytes()).unwrap();
        let sha = pv::evidence::sha256_file(&models.join("syn.gguf")).unwrap();
        std::fs::create_dir_all(root.join("schemas")).unwrap();
        std::fs::write(
            root.join("schemas/contract.schema.json"),
            pv::contract::schema::schema_text(),
        )
        .unwrap();
        std::fs::create_dir_all(root.join("engine")).unwrap();
        std::fs::write(root.join("engine/forward.rs"), "fn forward() {}\n").unwrap();
        std::fs::write(
            root.join(".gitignore"),
            "models/\nprivate/\ntarget/\nevidence/.lock\n",
        )
        .unwrap();
        let key = root.join("private/tester.key");
        keys::keygen("tester", &key, &root.join("keys")).unwrap();
        let repo = SynRepo {
            root,
            scratch,
            models,
            key,
            sha,
        };
        repo.write(&repo.spec());
        repo
    }

    /// The default contract: pinned to the real file, band [0.5, 2], ACTIVE, required,
    /// covering `engine/**`.
    pub fn spec(&self) -> Spec {
        Spec {
            sha: self.sha.clone(),
            band: [0.5, 2.0],
            status: "ACTIVE",
            required: true,
            covers: vec!["engine/**"],
        }
    }

    /// Writes the default contract with another pin and band.
    pub fn contract(&self, sha: &str, band: [f64; 2]) {
        self.write(&Spec {
            sha: sha.into(),
            band,
            ..self.spec()
        });
    }

    /// Writes `contracts/syn-v1.yaml` from `s`.
    pub fn write(&self, s: &Spec) {
        std::fs::create_dir_all(self.root.join("contracts")).unwrap();
        let covers = s
            .covers
            .iter()
            .map(|c| format!("    - {c}\n"))
            .collect::<String>();
        let text = format!(
            "# yaml-language-server: $schema=../schemas/contract.schema.json
metadata:
  id: syn-v1
  version: 1.0.0
  title: Synthetic
  description: The std ratio on a synthetic model.
  status: {}
  created: 2026-11-25
  authors: [tests]
  covers:
{covers}proof_obligations:
  - id: PO-SYN-001
    type: bound
    property: APR and GGUF agree up to quantization.
falsification_tests:
  - id: SYN-001
    rule: ratio in band
    prediction: H1
    obligations: [PO-SYN-001]
    checker: apr_gguf_std_ratio
    params:
      model: {{file: syn.gguf, sha256: {}}}
      prompt: What is 2+2?
      layer: 1
      slot: ffn_inner
      band: [{}, {}]
    if_fails: bisect
    required_for_gate: {}
  - id: SYN-002
    rule: the fix cites the hypothesis
    prediction: the cited commit names syn-v1 and SYN-001's verdict
    obligations: [PO-SYN-001]
    checker: fix_cites_hypothesis
    params:
      hypothesis_test: SYN-001
    if_fails: amend the message
    required_for_gate: false
",
            s.status, s.sha, s.band[0], s.band[1], s.required
        );
        std::fs::write(self.root.join("contracts/syn-v1.yaml"), text).unwrap();
    }

    /// Discharges SYN-001 with the tester's key.
    pub fn discharge(&self) -> Result<Discharged, DischargeError> {
        self.discharge_test("SYN-001", None)
    }

    /// Discharges a test with the tester's key.
    pub fn discharge_test(
        &self,
        test_id: &str,
        cite: Option<&str>,
    ) -> Result<Discharged, DischargeError> {
        self.discharge_with(test_id, cite, &self.key)
    }

    /// Discharges a test with the private key `key`.
    pub fn discharge_with(
        &self,
        test_id: &str,
        cite: Option<&str>,
        key: &Path,
    ) -> Result<Discharged, DischargeError> {
        discharge(
            &Layout::at(&self.root),
            &Request {
                test_id,
                models: &self.models,
                key: Some(key),
                threads: 1,
                cite,
                progress: &|_| {},
            },
        )
    }

    /// `pv ARGS --root ROOT`: exit code, stdout, stderr.
    pub fn pv(&self, args: &[&str]) -> (i32, String, String) {
        let mut all = args.to_vec();
        all.extend(["--root", self.root.to_str().unwrap()]);
        super::pv(&all)
    }

    /// `pv gate ARGS --root ROOT`: exit code and stdout + stderr.
    pub fn gate(&self, args: &[&str]) -> (i32, String) {
        let mut all = vec!["gate"];
        all.extend(args);
        let (code, out, err) = self.pv(&all);
        (code, out + &err)
    }

    /// Runs git in the repository (as a fixed author), asserting success; its stdout.
    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .current_dir(&self.root)
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.org",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Commits everything (a new repository on first use) with message `m`.
    pub fn commit(&self, m: &str) {
        if !self.root.join(".git").exists() {
            self.git(&["init", "-q", "-b", "main"]);
        }
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", m]);
    }

    /// The path of record `seq` of SYN-001.
    pub fn record(&self, seq: u64) -> PathBuf {
        self.root
            .join("evidence/syn-v1/SYN-001")
            .join(format!("{seq:04}.dsse.json"))
    }
}

/// Base64 decoding (standard alphabet).
pub fn b64d(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// Base64 encoding (standard alphabet).
pub fn b64e(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
