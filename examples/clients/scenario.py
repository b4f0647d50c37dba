"""A short scenario with the generated Python client (grpcio stubs from
`buf generate`, see buf.gen.yaml): create a customer, read it back, record a
purchase, stream the tenant's purchase histories, and read an error's field
violations. Prints what it read as JSON.

    PYTHONPATH=<generated>/python:.tools/python \
        python3 examples/clients/scenario.py 127.0.0.1:50051 "$KEY" <tag>
"""
import json
import sys

import grpc
from google.protobuf import json_format, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from rapport.common.v1 import identity_pb2, money_pb2
from rapport.interaction.v1 import interaction_pb2
from rapport.interaction.v1 import interaction_service_pb2 as interactions
from rapport.interaction.v1 import interaction_service_pb2_grpc as interactions_grpc
from rapport.profile.v1 import customer_pb2
from rapport.profile.v1 import profile_service_pb2 as profile
from rapport.profile.v1 import profile_service_pb2_grpc as profile_grpc


def as_dict(message):
    return json_format.MessageToDict(message)


def main(address: str, key: str, tag: str) -> None:
    metadata = (("authorization", f"Bearer {key}"),)
    with grpc.insecure_channel(address) as channel:
        customers = profile_grpc.ProfileServiceStub(channel)
        records = interactions_grpc.InteractionServiceStub(channel)
        out = {}

        created = customers.CreateCustomer(
            profile.CreateCustomerRequest(
                customer=customer_pb2.Customer(
                    kind=customer_pb2.CUSTOMER_KIND_PERSON,
                    person=customer_pb2.PersonDetails(given_name="Ada", family_name="Byron"),
                    emails=[customer_pb2.EmailAddress(address=f"ada.{tag}@example.com")],
                )
            ),
            metadata=metadata,
        )
        out["created"] = as_dict(created)
        customer_id = created.customer.customer_id
        read = customers.GetCustomer(
            profile.GetCustomerRequest(customer_id=customer_id), metadata=metadata
        )
        out["read"] = as_dict(read)

        when = timestamp_pb2.Timestamp()
        when.FromJsonString("2025-03-02T10:00:00Z")
        recorded = records.RecordInteraction(
            interactions.RecordInteractionRequest(
                interaction=interaction_pb2.Interaction(
                    customer=identity_pb2.CustomerRef(customer_id=customer_id),
                    type=interaction_pb2.INTERACTION_TYPE_PURCHASE,
                    occur_time=when,
                    amount=money_pb2.Money(currency_code="EUR", units=40, nanos=500_000_000),
                    idempotency_key=f"python:{tag}:1",
                )
            ),
            metadata=metadata,
        )
        out["recorded"] = as_dict(recorded)

        # A server stream: the purchase histories of this customer.
        end = timestamp_pb2.Timestamp()
        end.GetCurrentTime()
        request = json_format.ParseDict(
            {
                "calibrationEndTime": end.ToJsonString(),
                "periodUnit": "PERIOD_UNIT_DAY",
                "currencyCode": "EUR",
                "customerIds": {"customerIds": [customer_id]},
            },
            interactions.ExportSummariesRequest(),
        )
        out["exported"] = [
            as_dict(page) for page in records.ExportSummaries(request, metadata=metadata)
        ]

        # An error, with its google.rpc details decoded.
        try:
            customers.GetCustomer(
                profile.GetCustomerRequest(customer_id="not-a-uuid"), metadata=metadata
            )
            out["error"] = None
        except grpc.RpcError as error:
            status = rpc_status.from_call(error)
            violations = []
            for detail in status.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    violations += [
                        {"field": v.field, "description": v.description}
                        for v in bad.field_violations
                    ]
            out["error"] = {
                "code": error.code().name,
                "message": error.details(),
                "fieldViolations": violations,
            }
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:4])
