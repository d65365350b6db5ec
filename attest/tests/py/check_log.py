"""Independent RFC 6962 checks of our log: pymerkle (RFC 9162-compatible
hashing, the default "security" mode prefixes 0x00/0x01) rebuilds the tree
from the leaf data; our audit paths must equal its paths and verify with
both pymerkle and a direct RFC 9162 transcription; consistency proofs are
checked with the same transcription; the checkpoint is parsed as a C2SP
signed note and its Ed25519 signature checked with `cryptography`.

usage: check_log.py LOG_JSON
LOG_JSON: {"leaves": [hex], "checkpoint": str, "publicKey": hex,
           "origin": str, "proofs": [{"index", "size", "path": [hex]}],
           "consistency": [{"old", "new", "oldRoot", "path": [hex]}],
           "envelopes": [{"index", "envelope"}]}
"""

import base64
import hashlib
import json
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pymerkle import InmemoryTree, verify_inclusion


def node(a: bytes, b: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + a + b).digest()


def leaf(d: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + d).digest()


def rfc9162_inclusion(lh, index, size, path, root):
    if index >= size:
        return False
    fn, sn, r = index, size - 1, lh
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def rfc9162_consistency(m, n, path, r1, r2):
    if m == n:
        return not path and r1 == r2
    if m == 0:
        return not path
    if m & (m - 1) == 0:
        path = [r1] + path
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node(c, fr), node(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == r1 and sr == r2


def check_checkpoint(note: str, origin: str, public: bytes):
    body, sigs = note[: note.rindex("\n\n") + 1], note[note.rindex("\n\n") + 2 :]
    o, size, root = body.splitlines()
    assert o == origin, (o, origin)
    keyid = hashlib.sha256(origin.encode() + b"\n\x01" + public).digest()[:4]
    for line in sigs.splitlines():
        dash, name, b64 = line.split(" ")
        assert dash == "\u2014", dash
        blob = base64.b64decode(b64)
        if name == origin and blob[:4] == keyid:
            Ed25519PublicKey.from_public_bytes(public).verify(blob[4:], body.encode())
            return int(size), base64.b64decode(root)
    raise SystemExit("no checkpoint signature by the given key")


def main() -> None:
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    leaves = [bytes.fromhex(x) for x in doc["leaves"]]
    size, root = check_checkpoint(doc["checkpoint"], doc["origin"], bytes.fromhex(doc["publicKey"]))
    assert size == len(leaves), (size, len(leaves))
    tree = InmemoryTree(algorithm="sha256")
    for d in leaves:
        tree.append_entry(d)
    assert tree.get_size() == size
    assert tree.get_root(size) == root, "pymerkle root differs from the checkpoint"
    for e in doc["envelopes"]:
        canonical = json.dumps(
            {"envelope": e["envelope"], "type": "attestation"}, sort_keys=True, separators=(",", ":")
        ).encode()
        assert canonical == leaves[e["index"]], f"leaf {e['index']} is not the canonical envelope"
    for p in doc["proofs"]:
        i, n, path = p["index"], p["size"], [bytes.fromhex(x) for x in p["path"]]
        r = tree.get_root(n)
        assert rfc9162_inclusion(leaf(leaves[i]), i, n, path, r), f"inclusion {i}/{n}"
        theirs = tree.prove_inclusion(i + 1, n)
        assert [bytes.fromhex(x) if isinstance(x, str) else x for x in theirs.serialize()["path"][1:]] == path, (
            f"pymerkle path differs for {i}/{n}"
        )
        verify_inclusion(leaf(leaves[i]), r, theirs)
        assert not rfc9162_inclusion(leaf(leaves[i] + b"x"), i, n, path, r), "edited leaf accepted"
    for c in doc["consistency"]:
        m, n, path = c["old"], c["new"], [bytes.fromhex(x) for x in c["path"]]
        r1, r2 = tree.get_root(m), tree.get_root(n)
        assert r1 == bytes.fromhex(c["oldRoot"]), f"old root {m}"
        assert rfc9162_consistency(m, n, path, r1, r2), f"consistency {m}->{n}"
    print(f"log: ok ({size} leaves, {len(doc['proofs'])} inclusion, {len(doc['consistency'])} consistency proofs)")


main()
