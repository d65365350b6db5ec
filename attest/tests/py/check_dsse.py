"""securesystemslib verifies our DSSE envelope and computes the same keyid.

usage: check_dsse.py ENVELOPE_JSON PUBLIC_KEY_HEX KEYID
"""

import copy
import json
import sys

from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey
from securesystemslib.signer._utils import compute_default_keyid


def main() -> None:
    env_path, public, keyid = sys.argv[1:4]
    keyval = {"public": public}
    computed = compute_default_keyid("ed25519", "ed25519", keyval)
    if computed != keyid:
        sys.exit(f"keyid mismatch: securesystemslib computes {computed}, we wrote {keyid}")
    key = SSlibKey(keyid, "ed25519", "ed25519", keyval)
    with open(env_path) as f:
        data = json.load(f)
    env = Envelope.from_dict(copy.deepcopy(data))
    if env.payload_type != "application/vnd.in-toto+json":
        sys.exit(f"unexpected payloadType {env.payload_type}")
    accepted = env.verify([key], 1)
    if list(accepted) != [keyid]:
        sys.exit(f"unexpected accepted keys {list(accepted)}")
    # The same library must reject an edited payload.
    tampered = Envelope.from_dict(copy.deepcopy(data))
    tampered.payload = tampered.payload.replace(b'"sha256":"', b'"sha256":"0', 1)
    try:
        tampered.verify([key], 1)
    except Exception:  # VerificationError
        pass
    else:
        sys.exit("securesystemslib accepted an edited payload")
    print("dsse: ok")


main()
