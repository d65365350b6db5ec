"""in-toto-attestation parses our Statement v1 and SLSA Provenance v1
strictly: protobuf JSON parsing that rejects unknown fields and malformed
timestamps, the Statement and ResourceDescriptor validators of the Python
package, and the Provenance v1 checks of the reference (Go) validator.

usage: check_statement.py STATEMENT_JSON
"""

import json
import sys

from google.protobuf import json_format

import in_toto_attestation.predicates.provenance.v1.provenance_pb2 as provenance_pb2
import in_toto_attestation.v1.statement_pb2 as statement_pb2
from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
from in_toto_attestation.v1.statement import Statement

PREDICATE_TYPE = "https://slsa.dev/provenance/v1"


def validate_rds(rds, what):
    for i, rd in enumerate(rds):
        try:
            ResourceDescriptor.copy_from_pb(rd).validate()
        except ValueError as e:
            raise ValueError(f"Invalid {what}[{i}]: {e}") from e


def validate_provenance(p):
    # Mirrors go/predicates/provenance/v1/provenance.go of in-toto/attestation.
    if not p.HasField("build_definition"):
        raise ValueError("BuildDefinition required")
    bd = p.build_definition
    if not bd.build_type:
        raise ValueError("BuildDefinition.BuildType required")
    if not bd.HasField("external_parameters"):
        raise ValueError("BuildDefinition.ExternalParameters required")
    validate_rds(bd.resolved_dependencies, "BuildDefinition.ResolvedDependencies")
    if not p.HasField("run_details"):
        raise ValueError("RunDetails required")
    rd = p.run_details
    if not rd.HasField("builder"):
        raise ValueError("RunDetails.Builder required")
    if not rd.builder.id:
        raise ValueError("Builder.Id required")
    validate_rds(rd.builder.builder_dependencies, "Builder.BuilderDependencies")
    validate_rds(rd.byproducts, "RunDetails.Byproducts")


def main() -> None:
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    pb = json_format.ParseDict(doc, statement_pb2.Statement(), ignore_unknown_fields=False)
    stmt = Statement.copy_from_pb(pb)
    stmt.validate()
    if stmt.pb.predicate_type != PREDICATE_TYPE:
        sys.exit(f"unexpected predicateType {stmt.pb.predicate_type}")
    for s in stmt.pb.subject:
        if set(s.digest) != {"sha256", "blake3"}:
            sys.exit(f"subject {s.name} digests {sorted(s.digest)}")
    prov = json_format.ParseDict(
        doc["predicate"], provenance_pb2.Provenance(), ignore_unknown_fields=False
    )
    validate_provenance(prov)
    md = prov.run_details.metadata
    if md.finished_on.ToNanoseconds() < md.started_on.ToNanoseconds():
        sys.exit("finishedOn before startedOn")
    if not md.invocation_id:
        sys.exit("no invocationId")
    print(f"statement: ok ({len(stmt.pb.subject)} subjects, buildType {prov.build_definition.build_type})")


main()
