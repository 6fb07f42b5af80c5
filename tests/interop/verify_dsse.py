"""Verifies pv evidence files with securesystemslib, the in-toto reference implementation's
signing library (PyPI), not with pv and not with hand-written cryptography.

Usage: verify_dsse.py KEYS_DIR FILE...

KEYS_DIR holds pv's public keys (`*.pub`, PEM SubjectPublicKeyInfo). Each FILE is a record
(`NNNN.dsse.json`, an in-toto Statement v1) or a signed head (`head.json`), both DSSE
envelopes. securesystemslib's `Envelope.from_dict` reads the envelope and `Envelope.verify`
checks the signature over the DSSE PAE with `SSlibKey` objects made from the PEM files. The
key ids are pv's (hex sha256 of the raw 32-byte key); DSSE treats a key id as a hint, so
they are passed to securesystemslib as given. Prints `ok <file> <keyname>` per file and
exits 0, or names the first failure and exits 1.
"""

import hashlib
import json
import pathlib
import sys

from cryptography.hazmat.primitives import serialization
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey

STATEMENT = "application/vnd.in-toto+json"
HEAD = "application/vnd.pv.ledger-head+json"


def load_keys(keys_dir: pathlib.Path) -> dict:
    keys = {}
    for pub in sorted(keys_dir.glob("*.pub")):
        crypto_key = serialization.load_pem_public_key(pub.read_bytes())
        raw = crypto_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        keyid = hashlib.sha256(raw).hexdigest()
        keys[keyid] = (pub.stem, SSlibKey.from_crypto(crypto_key, keyid=keyid, scheme="ed25519"))
    return keys


def check(path: pathlib.Path, keys: dict) -> str:
    envelope = Envelope.from_dict(json.loads(path.read_bytes()))
    accepted = envelope.verify([k for _, k in keys.values()], 1)
    (keyid,) = accepted.keys()
    body = json.loads(envelope.payload)
    if envelope.payload_type == STATEMENT:
        assert body["_type"] == "https://in-toto.io/Statement/v1", body["_type"]
        assert body["predicateType"] == "https://pv.dev/evidence/v1", body["predicateType"]
        assert body["subject"], "no subjects"
        for s in body["subject"]:
            for alg, digest in s["digest"].items():
                assert alg in ("sha256", "gitCommit"), alg
                assert len(digest) in (40, 64) and int(digest, 16) >= 0, digest
    elif envelope.payload_type == HEAD:
        assert body["_type"] == "https://pv.dev/ledger-head/v1", body["_type"]
        assert len(body["record_sha256"]) == 64
    else:
        raise AssertionError(f"unexpected payloadType {envelope.payload_type}")
    return keys[keyid][0]


def main() -> int:
    keys = load_keys(pathlib.Path(sys.argv[1]))
    for f in map(pathlib.Path, sys.argv[2:]):
        try:
            name = check(f, keys)
        except Exception as e:  # report which file failed, and how
            print(f"FAILED {f}: {type(e).__name__}: {e}")
            return 1
        print("ok", f, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
