// A short scenario with the generated TypeScript client (protoc-gen-es output
// from `buf generate`, see buf.gen.yaml, as JavaScript with .d.ts types) and
// ConnectRPC's Node transport over the Connect protocol in JSON: create a
// customer, read it back, record a purchase, send a client stream, stream the
// tenant's purchase histories, and read an error's field violations. Prints
// what it read as JSON.
//
//   NODE_PATH=.tools/npm/node_modules \
//     node examples/clients/scenario.cjs http://127.0.0.1:50051 "$KEY" <generated>/typescript <tag>
"use strict";

const path = require("node:path");
const { create, toJson } = require("@bufbuild/protobuf");
const { timestampFromDate } = require("@bufbuild/protobuf/wkt");
const { createClient, ConnectError, Code } = require("@connectrpc/connect");
const { createConnectTransport } = require("@connectrpc/connect-node");

async function main(baseUrl, apiKey, generated, tag) {
  const gen = (file) => require(path.resolve(generated, file));
  const { ProfileService, CreateCustomerResponseSchema, GetCustomerResponseSchema } = gen(
    "rapport/profile/v1/profile_service_pb.js",
  );
  const { CustomerKind } = gen("rapport/profile/v1/customer_pb.js");
  const { InteractionType } = gen("rapport/interaction/v1/interaction_pb.js");
  const { PeriodUnit } = gen("rapport/common/v1/relationship_pb.js");
  const {
    InteractionService,
    RecordInteractionResponseSchema,
    RecordInteractionsResponseSchema,
    ExportSummariesResponseSchema,
  } = gen("rapport/interaction/v1/interaction_service_pb.js");

  const transport = createConnectTransport({
    baseUrl,
    httpVersion: "1.1",
    interceptors: [
      (next) => async (req) => {
        req.header.set("authorization", `Bearer ${apiKey}`);
        return next(req);
      },
    ],
  });
  const customers = createClient(ProfileService, transport);
  const records = createClient(InteractionService, transport);
  const out = {};

  const created = await customers.createCustomer({
    customer: {
      kind: CustomerKind.PERSON,
      details: { case: "person", value: { givenName: "Ada", familyName: "Byron" } },
      emails: [{ address: `ada.${tag}@example.com` }],
    },
  });
  out.created = toJson(CreateCustomerResponseSchema, created);
  const customerId = created.customer.customerId;
  out.read = toJson(GetCustomerResponseSchema, await customers.getCustomer({ customerId }));

  const purchase = (key, units, nanos, when) => ({
    customer: { ref: { case: "customerId", value: customerId } },
    type: InteractionType.PURCHASE,
    occurTime: timestampFromDate(new Date(when)),
    amount: { currencyCode: "EUR", units, nanos },
    idempotencyKey: `typescript:${tag}:${key}`,
  });
  const recorded = await records.recordInteraction({
    interaction: purchase(1, 40n, 500000000, "2025-03-02T10:00:00Z"),
  });
  out.recorded = toJson(RecordInteractionResponseSchema, recorded);

  // A client stream: two messages, the second repeating the first.
  async function* batches() {
    const second = purchase(2, 12n, 250000000, "2025-03-09T10:00:00Z");
    yield { interactions: [second] };
    yield { interactions: [second] };
  }
  out.streamed = toJson(RecordInteractionsResponseSchema, await records.recordInteractions(batches()));

  // A server stream: the purchase histories of this customer.
  out.exported = [];
  for await (const page of records.exportSummaries({
    calibrationEndTime: timestampFromDate(new Date()),
    periodUnit: PeriodUnit.DAY,
    currencyCode: "EUR",
    restriction: { case: "customerIds", value: { customerIds: [customerId] } },
  })) {
    out.exported.push(toJson(ExportSummariesResponseSchema, page));
  }

  // An error, with its google.rpc.BadRequest as the server decoded it.
  try {
    await customers.getCustomer({ customerId: "not-a-uuid" });
    out.error = null;
  } catch (e) {
    const err = ConnectError.from(e);
    out.error = {
      code: Code[err.code],
      message: err.rawMessage,
      fieldViolations: err.details
        .filter((d) => d.type === "google.rpc.BadRequest")
        .flatMap((d) => d.debug.fieldViolations),
    };
  }
  console.log(JSON.stringify(out));
}

main(...process.argv.slice(2)).catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
