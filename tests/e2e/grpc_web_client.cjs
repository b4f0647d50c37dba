// A client as an application without a gRPC stack would write it, with
// ConnectRPC's libraries and service descriptors read at run time from `buf
// build` output, so no code is generated:
// - "binary" and "text": the gRPC-Web transport (@connectrpc/connect-web, on
//   Node's fetch), as a browser application uses it;
// - "connect-json" and "connect-proto": the Connect protocol over HTTP/1.1
//   (@connectrpc/connect-node), in JSON or binary, as a Node service uses it.
// Driven by tests/e2e/grpc_web.rs and tests/e2e/connect.rs, which check what it
// prints.
//
// Usage: node grpc_web_client.cjs <gateway URL> <api key> <image.binpb> <mode>
//
// "text" sends and reads application/grpc-web-text (base64 bodies), the mode
// browser clients use to stream over XMLHttpRequest. The connect-web transport
// speaks only binary gRPC-Web, so in text mode its fetch goes through
// `textFetch` below, which changes nothing but the base64 layer and the
// content type: the framing, trailers and status parsing stay the library's.
"use strict";

const { readFileSync } = require("node:fs");
const { fromBinary, createFileRegistry, toJson } = require("@bufbuild/protobuf");
const { FileDescriptorSetSchema } = require("@bufbuild/protobuf/wkt");
const { createClient, ConnectError, Code } = require("@connectrpc/connect");
const { createGrpcWebTransport } = require("@connectrpc/connect-web");

const MODES = ["binary", "text", "connect-json", "connect-proto"];
const [baseUrl, apiKey, imagePath, mode] = process.argv.slice(2);
if (!baseUrl || !apiKey || !imagePath || !MODES.includes(mode)) {
  console.error(`usage: grpc_web_client.cjs <gateway URL> <api key> <image.binpb> <${MODES.join("|")}>`);
  process.exit(2);
}

/** Decodes base64 that may be several padded pieces one after another (one
 * per response chunk), quantum by quantum. */
function decodeChunks(text) {
  const clean = text.replace(/\s+/g, "");
  const parts = [];
  for (let i = 0; i < clean.length; i += 4) {
    parts.push(Buffer.from(clean.slice(i, i + 4), "base64"));
  }
  return Buffer.concat(parts);
}

/** fetch speaking application/grpc-web-text on the wire. */
async function textFetch(input, init) {
  const headers = new Headers(init.headers);
  headers.set("content-type", "application/grpc-web-text");
  headers.set("accept", "application/grpc-web-text");
  const body = Buffer.from(init.body).toString("base64");
  const res = await fetch(input, { ...init, headers, body });
  const wire = res.headers.get("content-type") || "";
  if (!wire.startsWith("application/grpc-web-text")) {
    throw new Error(`expected a grpc-web-text answer, got content-type ${wire}`);
  }
  const decoded = decodeChunks(await res.text());
  const answerHeaders = new Headers(res.headers);
  answerHeaders.set("content-type", "application/grpc-web+proto");
  return new Response(decoded, { status: res.status, headers: answerHeaders });
}

async function main() {
  const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(imagePath)));
  const service = (name) => {
    const s = registry.getService(name);
    if (!s) throw new Error(`${name} is not in ${imagePath}`);
    return s;
  };
  const interceptors = [
    (next) => async (req) => {
      req.header.set("authorization", `Bearer ${apiKey}`);
      return next(req);
    },
  ];
  const connect = mode.startsWith("connect-");
  const transport = connect
    ? require("@connectrpc/connect-node").createConnectTransport({
        baseUrl,
        httpVersion: "1.1",
        useBinaryFormat: mode === "connect-proto",
        interceptors,
      })
    : createGrpcWebTransport({
        baseUrl,
        useBinaryFormat: true,
        fetch: mode === "text" ? textFetch : globalThis.fetch,
        interceptors,
      });
  const profile = createClient(service("rapport.profile.v1.ProfileService"), transport);
  const interactions = createClient(service("rapport.interaction.v1.InteractionService"), transport);
  const json = (schemaName, message) =>
    toJson(registry.getMessage(schemaName), message, { registry });
  const out = {};

  const email = `web.${mode}@example.com`;
  const created = await profile.createCustomer({
    customer: {
      kind: 1, // CUSTOMER_KIND_PERSON
      details: { case: "person", value: { givenName: "Wen", familyName: "Bo" } },
      emails: [{ address: email }],
    },
  });
  out.created = json("rapport.profile.v1.CreateCustomerResponse", created);
  const id = created.customer.customerId;
  const read = await profile.getCustomer({ customerId: id });
  out.read = json("rapport.profile.v1.GetCustomerResponse", read);

  const recorded = await interactions.recordInteraction({
    interaction: {
      customer: { ref: { case: "customerId", value: id } },
      type: 1, // INTERACTION_TYPE_PURCHASE
      occurTime: { seconds: BigInt(Date.parse("2025-03-02T10:00:00Z") / 1000), nanos: 0 },
      amount: { currencyCode: "EUR", units: 40n, nanos: 500000000 },
      idempotencyKey: `web:${mode}:1`,
    },
  });
  out.recorded = json("rapport.interaction.v1.RecordInteractionResponse", recorded);

  // A client stream (Connect only: gRPC-Web has none): two messages, one
  // interaction each, the second a duplicate of the first.
  if (connect) {
    const purchase = {
      customer: { ref: { case: "customerId", value: id } },
      type: 1, // INTERACTION_TYPE_PURCHASE
      occurTime: { seconds: BigInt(Date.parse("2025-03-09T10:00:00Z") / 1000), nanos: 0 },
      amount: { currencyCode: "EUR", units: 12n, nanos: 250000000 },
      idempotencyKey: `web:${mode}:2`,
    };
    async function* messages() {
      yield { interactions: [purchase] };
      yield { interactions: [purchase] };
    }
    const streamed = await interactions.recordInteractions(messages());
    out.streamed = json("rapport.interaction.v1.RecordInteractionsResponse", streamed);
  }

  // A server stream: the purchase histories of the tenant.
  out.exported = [];
  for await (const page of interactions.exportSummaries({
    calibrationEndTime: { seconds: BigInt(Math.floor(Date.now() / 1000)), nanos: 0 },
    periodUnit: 1, // PERIOD_UNIT_DAY
    currencyCode: "EUR",
  })) {
    out.exported.push(json("rapport.interaction.v1.ExportSummariesResponse", page));
  }

  // An error with its code and message as the library reads them.
  try {
    await profile.getCustomer({ customerId: "not-a-uuid" });
    out.error = null;
  } catch (e) {
    const err = ConnectError.from(e);
    out.error = {
      code: Code[err.code],
      message: err.rawMessage,
      // Details as they arrived: type, and the decoded copy Connect servers
      // may add for reading (gRPC-Web carries none of it here).
      details: err.details.map((d) => ({ type: d.type, debug: d.debug })),
    };
  }
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
