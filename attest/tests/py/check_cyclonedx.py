"""cyclonedx-python-lib validates our CycloneDX JSON against the strict 1.6
schema and loads it into its model.

usage: check_cyclonedx.py CYCLONEDX_JSON
"""

import json
import sys

from cyclonedx.model.bom import Bom
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator


def main() -> None:
    with open(sys.argv[1]) as f:
        text = f.read()
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        sys.exit(f"CycloneDX 1.6 strict schema: {error}")
    bom = Bom.from_json(json.loads(text))  # type: ignore[attr-defined]
    algs = {h.alg.value for c in bom.components for h in c.hashes}
    if not {"SHA-256", "BLAKE3"} <= algs:
        sys.exit(f"hash algorithms {sorted(algs)}")
    print(f"cyclonedx: ok ({len(bom.components)} top-level components)")


main()
