"""spdx-tools (pyspdxtools) parses and fully validates our SPDX 2.3 JSON.

usage: check_spdx.py SPDX_JSON
"""

import sys

from spdx_tools.spdx.model import ChecksumAlgorithm
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document


def main() -> None:
    doc = parse_file(sys.argv[1])
    messages = validate_full_spdx_document(doc, "SPDX-2.3")
    if messages:
        for m in messages:
            print(m.validation_message, m.context, file=sys.stderr)
        sys.exit(f"{len(messages)} SPDX validation messages")
    for f in doc.files:
        algs = {c.algorithm for c in f.checksums}
        if not {ChecksumAlgorithm.SHA1, ChecksumAlgorithm.SHA256} <= algs:
            sys.exit(f"file {f.name} lacks SHA1/SHA256")
    print(f"spdx: ok ({len(doc.packages)} packages, {len(doc.files)} files)")


main()
