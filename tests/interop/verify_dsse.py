"""Verifies a pv evidence record with an independent DSSE + Ed25519 implementation.

Usage: verify_dsse.py RECORD KEYS_DIR

Uses only the Python standard library and `cryptography` (PyPI), not pv: it rebuilds the
DSSE v1 pre-authentication encoding, checks the Ed25519 signature against the public keys
in KEYS_DIR (files `ed25519 <base64> <name>`), and checks the payload is an in-toto
Statement v1 with sha256 subjects. Prints `ok <keyname>` and exits 0, or exits 1.
"""

import base64
import hashlib
import json
import pathlib
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def pae(payload_type: bytes, body: bytes) -> bytes:
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type, len(body), body)


def main() -> int:
    record, keys_dir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    env = json.loads(record.read_bytes())
    if env["payloadType"] != "application/vnd.in-toto+json":
        print("wrong payloadType", env["payloadType"])
        return 1
    body = base64.b64decode(env["payload"], validate=True)
    keys = {}
    for pub in sorted(keys_dir.glob("*.pub")):
        kind, b64, *_ = pub.read_text().split()
        assert kind == "ed25519"
        raw = base64.b64decode(b64, validate=True)
        keys[hashlib.sha256(raw).hexdigest()] = (pub.stem, Ed25519PublicKey.from_public_bytes(raw))
    (sig,) = env["signatures"]
    name, key = keys[sig["keyid"]]
    try:
        key.verify(base64.b64decode(sig["sig"], validate=True), pae(env["payloadType"].encode(), body))
    except InvalidSignature:
        print("bad signature")
        return 1
    st = json.loads(body)
    assert st["_type"] == "https://in-toto.io/Statement/v1", st["_type"]
    assert st["subject"], "no subjects"
    for s in st["subject"]:
        for alg, digest in s["digest"].items():
            assert alg in ("sha256", "gitCommit"), alg
            assert len(digest) in (40, 64) and int(digest, 16) >= 0, digest
    print("ok", name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
