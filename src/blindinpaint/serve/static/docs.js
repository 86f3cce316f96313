// Renders the server's OpenAPI description (/openapi.json) as a plain endpoint list: no CDN needed.
"use strict";

(async () => {
  const el = (tag, cls, text) => {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const spec = await (await fetch("/openapi.json")).json();
  const resolve = (schema) => {
    if (schema && schema.$ref) return resolve(spec.components.schemas[schema.$ref.split("/").pop()]);
    return schema || {};
  };
  const typeOf = (schema) => {
    schema = resolve(schema);
    if (schema.anyOf) return schema.anyOf.map(typeOf).join(" | ");
    if (schema.format === "binary" || schema.contentMediaType) return "file";
    return schema.type || "object";
  };
  document.getElementById("api-intro").appendChild(el("p", "", spec.info.description || ""));
  const root = document.getElementById("endpoints");
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const card = el("section", "endpoint");
      const head = el("h3");
      head.appendChild(el("span", "method " + method, method.toUpperCase()));
      head.appendChild(el("code", "", " " + path));
      card.appendChild(head);
      if (op.summary) card.appendChild(el("p", "", op.summary));
      const body = op.requestBody && op.requestBody.content && op.requestBody.content["multipart/form-data"];
      if (body) {
        const schema = resolve(body.schema);
        const table = el("table");
        table.appendChild(el("caption", "", "multipart/form-data fields"));
        for (const [name, field] of Object.entries(schema.properties || {})) {
          const row = el("tr");
          const required = (schema.required || []).includes(name);
          row.appendChild(el("td", "", name + (required ? " *" : "")));
          row.appendChild(el("td", "muted", typeOf(field)));
          row.appendChild(el("td", "", resolve(field).description || field.description || ""));
          table.appendChild(row);
        }
        card.appendChild(table);
      }
      const ok = op.responses && op.responses["200"];
      const json = ok && ok.content && ok.content["application/json"];
      const answer = json ? resolve(json.schema) : null;
      if (answer && answer.properties) {
        const table = el("table");
        table.appendChild(el("caption", "", "JSON answer"));
        for (const [name, field] of Object.entries(answer.properties)) {
          const row = el("tr");
          row.appendChild(el("td", "", name));
          row.appendChild(el("td", "muted", typeOf(field)));
          row.appendChild(el("td", "", field.description || ""));
          table.appendChild(row);
        }
        card.appendChild(table);
      }
      root.appendChild(card);
    }
  }
  root.appendChild(el("p", "muted", "Errors: JSON {\"detail\": \"one-line message\"} with status 413 (upload or " +
    "image too large), 415 (not an accepted image), 422 (bad or missing field, corrupt image, mask of the " +
    "wrong size), 503 (model not loaded, or busy)."));
})();
