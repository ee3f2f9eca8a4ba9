// The AsyncAPI project's own parser (@asyncapi/parser) on the document
// `tidings catalog --asyncapi` wrote: prints one JSON line with whether it
// parsed, its error diagnostics, and what it found (channels with their
// addresses, messages, operations). Driven by
// crates/tidings-cli/tests/serve/catalog.rs.
//
//     node asyncapi_parse.js <file>
const fs = require('fs');
const { Parser } = require('@asyncapi/parser');

(async () => {
  const text = fs.readFileSync(process.argv[2], 'utf8');
  const { document, diagnostics } = await new Parser().parse(text);
  const errors = diagnostics
    .filter((d) => d.severity === 0)
    .map((d) => ({ code: d.code, message: d.message, path: d.path.join('/') }));
  const out = { parsed: document !== undefined, errors };
  if (document) {
    out.version = document.version();
    out.channels = document.channels().all().map((c) => ({
      id: c.id(),
      address: c.address(),
      messages: c.messages().all().map((m) => m.id()).sort(),
    }));
    out.operations = document.operations().all().map((o) => ({ id: o.id(), action: o.action() })).sort((a, b) => a.id.localeCompare(b.id));
    out.payloads = {};
    for (const m of document.messages().all()) {
      const payload = m.payload();
      out.payloads[m.id()] = payload ? { type: payload.type(), required: payload.required() || [] } : null;
    }
  }
  console.log(JSON.stringify(out));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
