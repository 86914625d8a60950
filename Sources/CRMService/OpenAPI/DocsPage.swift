// The offline API documentation page served at GET /docs.
// Self-contained: inline CSS and vanilla JS, no external URL of any kind. It fetches
// /openapi.json (same origin) and renders every operation grouped by tag. When done it sets
// body[data-rendered="true"] and #operation-count (checked by tests/e2e/test_docs_browser.py).

public enum DocsPage {
    public static let html: String = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>API documentation</title>
<style>
:root {
  --bg: #f6f7f9; --panel: #ffffff; --text: #1d2330; --muted: #5f6b7a; --border: #dde1e7;
  --code-bg: #eef1f5; --accent: #3558d4; --row: #fafbfc;
  --get: #2f6fdb; --post: #1f9d55; --put: #c77c02; --patch: #0e8f8f; --delete: #d13b3b; --other: #6b7280;
  --s2: #1f9d55; --s3: #6b7280; --s4: #c77c02; --s5: #d13b3b;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #14171c; --panel: #1c2027; --text: #e4e7ec; --muted: #9aa4b2; --border: #2e343e;
    --code-bg: #262b34; --accent: #7d9bff; --row: #20252d;
  }
}
* { box-sizing: border-box; }
html { font-size: 15px; }
body {
  margin: 0; background: var(--bg); color: var(--text);
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  line-height: 1.45;
}
code, pre, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace; font-size: 0.88em; }
code { background: var(--code-bg); padding: 0.05em 0.35em; border-radius: 4px; }
pre { background: var(--code-bg); padding: 0.7em 0.9em; border-radius: 6px; overflow: auto; margin: 0.4em 0; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
.wrap { max-width: 1100px; margin: 0 auto; padding: 0 1.2rem; }
header.top { background: var(--panel); border-bottom: 1px solid var(--border); padding: 1.2rem 0 1rem; }
header.top h1 { margin: 0; font-size: 1.6rem; display: flex; align-items: center; gap: 0.6rem; flex-wrap: wrap; }
.pill { font-size: 0.72rem; font-weight: 600; border-radius: 999px; padding: 0.15em 0.65em; border: 1px solid var(--border); color: var(--muted); background: var(--bg); }
.lead { color: var(--muted); margin: 0.4rem 0 0; }
.desc p { margin: 0.35em 0; }
#status { margin: 2rem auto; text-align: center; color: var(--muted); font-size: 1.1rem; }
#status.error { color: var(--delete); white-space: pre-wrap; }
.toolbar { position: sticky; top: 0; z-index: 5; background: var(--bg); border-bottom: 1px solid var(--border); padding: 0.6rem 0; }
.toolbar .wrap { display: flex; gap: 0.6rem; align-items: center; flex-wrap: wrap; }
.toolbar input { flex: 1 1 16rem; padding: 0.45em 0.7em; border: 1px solid var(--border); border-radius: 6px; background: var(--panel); color: var(--text); font: inherit; }
.toolbar button { padding: 0.45em 0.8em; border: 1px solid var(--border); border-radius: 6px; background: var(--panel); color: var(--text); font: inherit; cursor: pointer; }
.toolbar button:hover { border-color: var(--accent); }
.count { color: var(--muted); font-size: 0.9rem; }
nav.tags { display: flex; gap: 0.4rem; flex-wrap: wrap; margin: 1rem 0 0.2rem; }
nav.tags a { border: 1px solid var(--border); border-radius: 999px; padding: 0.15em 0.7em; font-size: 0.85rem; background: var(--panel); }
section.tag { margin: 1.4rem 0; }
section.tag > h2 { font-size: 1.25rem; margin: 0 0 0.15rem; }
section.tag > .desc { color: var(--muted); margin-bottom: 0.6rem; }
details.operation { background: var(--panel); border: 1px solid var(--border); border-left: 4px solid var(--other); border-radius: 6px; margin: 0.45rem 0; }
details.operation.m-get { border-left-color: var(--get); }
details.operation.m-post { border-left-color: var(--post); }
details.operation.m-put { border-left-color: var(--put); }
details.operation.m-patch { border-left-color: var(--patch); }
details.operation.m-delete { border-left-color: var(--delete); }
details.operation > summary { list-style: none; cursor: pointer; padding: 0.55rem 0.8rem; display: flex; align-items: center; gap: 0.7rem; flex-wrap: wrap; }
details.operation > summary::-webkit-details-marker { display: none; }
details.operation[open] > summary { border-bottom: 1px solid var(--border); }
.method { display: inline-block; min-width: 4.6em; text-align: center; color: #fff; font-weight: 700; font-size: 0.78rem; letter-spacing: 0.03em; border-radius: 4px; padding: 0.25em 0.5em; background: var(--other); }
.method.m-get { background: var(--get); } .method.m-post { background: var(--post); } .method.m-put { background: var(--put); }
.method.m-patch { background: var(--patch); } .method.m-delete { background: var(--delete); }
.path { font-weight: 600; word-break: break-all; }
.path .param { color: var(--accent); }
.op-summary { color: var(--muted); flex: 1 1 12rem; }
.opid { color: var(--muted); font-size: 0.8rem; }
.lock { font-size: 0.72rem; border: 1px solid var(--border); border-radius: 4px; padding: 0.05em 0.4em; color: var(--muted); }
.deprecated .path { text-decoration: line-through; }
.op-body { padding: 0.4rem 0.9rem 0.9rem; }
.op-body h3 { font-size: 0.95rem; margin: 1rem 0 0.4rem; text-transform: uppercase; letter-spacing: 0.04em; color: var(--muted); }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
th, td { text-align: left; vertical-align: top; padding: 0.4em 0.55em; border-bottom: 1px solid var(--border); }
th { font-weight: 600; color: var(--muted); font-size: 0.8rem; }
tbody tr:nth-child(even) > td { background: var(--row); }
td.name { white-space: nowrap; font-weight: 600; }
.req { color: var(--delete); font-weight: 700; margin-left: 0.15em; }
.type { color: var(--accent); }
.constraints { display: flex; gap: 0.3rem; flex-wrap: wrap; margin-top: 0.2em; }
.constraints span { font-size: 0.75rem; background: var(--code-bg); border-radius: 4px; padding: 0.05em 0.4em; color: var(--muted); }
.schema { margin: 0.3rem 0; }
.schema .nested { margin: 0.35rem 0 0.2rem 0.2rem; padding-left: 0.7rem; border-left: 2px solid var(--border); }
.schema-name { font-weight: 600; font-size: 0.85rem; }
.note { color: var(--muted); font-size: 0.82rem; margin: 0.25em 0; }
.alts > li { margin: 0.35rem 0; }
.alts { padding-left: 1.2rem; margin: 0.3rem 0; }
.response { border: 1px solid var(--border); border-radius: 6px; margin: 0.45rem 0; padding: 0.45rem 0.7rem; }
.status-code { display: inline-block; font-weight: 700; min-width: 3em; border-radius: 4px; padding: 0.1em 0.45em; color: #fff; text-align: center; margin-right: 0.5rem; background: var(--s3); }
.status-code.s2 { background: var(--s2); } .status-code.s4 { background: var(--s4); } .status-code.s5 { background: var(--s5); }
.media { font-size: 0.8rem; color: var(--muted); margin-top: 0.3rem; }
.headers { margin: 0.3rem 0; font-size: 0.85rem; }
details.sub { margin: 0.3rem 0; }
details.sub > summary { cursor: pointer; color: var(--accent); font-size: 0.82rem; }
details.sub > .nested { margin-top: 0.3rem; }
.model { background: var(--panel); border: 1px solid var(--border); border-radius: 6px; margin: 0.45rem 0; }
.model > summary { cursor: pointer; padding: 0.45rem 0.8rem; font-weight: 600; }
.model > .schema { padding: 0 0.8rem 0.6rem; }
footer { color: var(--muted); font-size: 0.8rem; padding: 2rem 0; text-align: center; }
[hidden] { display: none !important; }
</style>
</head>
<body>
<header class="top">
  <div class="wrap">
    <h1><span id="api-title">API documentation</span> <span id="api-version" class="pill" hidden></span> <span id="oas-version" class="pill" hidden></span></h1>
    <p id="api-summary" class="lead" hidden></p>
  </div>
</header>
<div id="status" role="status" aria-live="polite">Loading…</div>
<form id="key-form" class="wrap" hidden><label>X-API-Key <input id="api-key" type="password" autocomplete="off"></label> <button type="submit">Show the API</button></form>
<div id="toolbar" class="toolbar" hidden>
  <div class="wrap">
    <input id="filter" type="search" placeholder="Filter by path, summary or operationId" aria-label="Filter operations">
    <button id="expand-all" type="button">Expand all</button>
    <button id="collapse-all" type="button">Collapse all</button>
    <span class="count"><span id="operation-count">0</span> operations</span>
  </div>
</div>
<main id="app" class="wrap" hidden></main>
<footer class="wrap">Rendered in your browser from <a href="/openapi.json">/openapi.json</a> — no external resources.</footer>
<script>
(function () {
  "use strict";

  var METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
  var MAX_DEPTH = 14;
  var spec = null;

  // ---------------------------------------------------------------- DOM helpers
  function el(tag, cls, children) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    append(e, children);
    return e;
  }
  function append(parent, children) {
    if (children === undefined || children === null) { return parent; }
    if (!Array.isArray(children)) { children = [children]; }
    children.forEach(function (c) {
      if (c === undefined || c === null || c === false) { return; }
      parent.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    });
    return parent;
  }
  function code(text) { return el("code", null, text); }

  // One line of text with `inline code`; never interpreted as HTML.
  function inlineText(text) {
    var span = el("span");
    String(text).split("`").forEach(function (part, i) { append(span, i % 2 === 1 ? code(part) : part); });
    return span;
  }

  // Plain text with `inline code` and blank-line paragraphs; never interpreted as HTML.
  function richText(text, cls) {
    var box = el("div", "desc" + (cls ? " " + cls : ""));
    String(text).split("\n\n").forEach(function (para) {
      var p = el("p");
      para.split("`").forEach(function (part, i) {
        append(p, i % 2 === 1 ? code(part) : part);
      });
      box.appendChild(p);
    });
    return box;
  }

  // ---------------------------------------------------------------- $ref handling
  function lookup(ref) {
    if (typeof ref !== "string" || ref.indexOf("#/") !== 0) { return undefined; }
    var node = spec;
    var parts = ref.slice(2).split("/");
    for (var i = 0; i < parts.length; i++) {
      var key = parts[i].split("~1").join("/").split("~0").join("~");
      if (node === null || typeof node !== "object" || !(key in node)) { return undefined; }
      node = node[key];
    }
    return node;
  }
  function refName(ref) { return String(ref).split("/").pop(); }
  // Resolves a chain of $refs (for parameters, responses, headers, request bodies).
  function deref(obj) {
    var seen = {};
    while (obj && typeof obj === "object" && typeof obj.$ref === "string") {
      if (seen[obj.$ref]) { return {}; }
      seen[obj.$ref] = true;
      obj = lookup(obj.$ref) || {};
    }
    return obj || {};
  }

  // ---------------------------------------------------------------- schema text
  function isScalar(s) {
    return s && typeof s === "object" && !s.properties && !s.oneOf && !s.anyOf && !s.allOf &&
      !s.items && !(s.additionalProperties && typeof s.additionalProperties === "object") &&
      (s.type !== "object");
  }
  function jsonText(v) { try { return JSON.stringify(v); } catch (e) { return String(v); } }

  function typeText(s, stack) {
    stack = stack || [];
    if (s === true || s === undefined || s === null) { return "any"; }
    if (s === false) { return "nothing"; }
    if (typeof s.$ref === "string") {
      var name = refName(s.$ref);
      var target = lookup(s.$ref);
      if (stack.indexOf(s.$ref) >= 0 || !target) { return name; }
      if (isScalar(target)) { return name + ": " + typeText(target, stack.concat([s.$ref])); }
      return name;
    }
    if ("const" in s) { return jsonText(s["const"]); }
    if (Array.isArray(s["enum"])) { return s["enum"].map(jsonText).join(" | "); }
    var alts = s.anyOf || s.oneOf;
    if (Array.isArray(alts) && !s.type) {
      return alts.map(function (a) { return typeText(a, stack); }).join(" | ");
    }
    if (Array.isArray(s.allOf) && !s.type) {
      return s.allOf.map(function (a) { return typeText(a, stack); }).join(" & ");
    }
    var types = Array.isArray(s.type) ? s.type.slice() : (s.type ? [s.type] : []);
    var out = types.map(function (t) {
      if (t === "array") { return "array of " + typeText(s.items, stack); }
      if (t === "object" && s.additionalProperties && typeof s.additionalProperties === "object" && !s.properties) {
        return "map of string → " + typeText(s.additionalProperties, stack);
      }
      if (t !== "null" && s.format) { return t + " ‹" + s.format + "›"; }
      return t;
    });
    if (out.length === 0) {
      if (s.properties) { return "object"; }
      if (s["if"]) { return "conditions"; }
      return "any";
    }
    return out.join(" | ");
  }

  function constraints(s) {
    var c = [];
    if (!s || typeof s !== "object") { return c; }
    if (s.minimum !== undefined) { c.push("≥ " + s.minimum); }
    if (s.exclusiveMinimum !== undefined) { c.push("> " + s.exclusiveMinimum); }
    if (s.maximum !== undefined) { c.push("≤ " + s.maximum); }
    if (s.exclusiveMaximum !== undefined) { c.push("< " + s.exclusiveMaximum); }
    if (s.minLength !== undefined) { c.push("minLength " + s.minLength); }
    if (s.maxLength !== undefined) { c.push("maxLength " + s.maxLength); }
    if (s.pattern !== undefined) { c.push("pattern " + s.pattern); }
    if (s.minItems !== undefined) { c.push("minItems " + s.minItems); }
    if (s.maxItems !== undefined) { c.push("maxItems " + s.maxItems); }
    if (s.uniqueItems) { c.push("unique items"); }
    if (s["default"] !== undefined) { c.push("default " + jsonText(s["default"])); }
    if (Array.isArray(s.examples) && s.examples.length) { c.push("e.g. " + s.examples.map(jsonText).join(", ")); }
    if (s.example !== undefined) { c.push("e.g. " + jsonText(s.example)); }
    if (s.writeOnly) { c.push("write-only"); }
    if (s.readOnly) { c.push("read-only"); }
    if (s.deprecated) { c.push("deprecated"); }
    return c;
  }
  function constraintBox(s) {
    var list = constraints(s);
    if (!list.length) { return null; }
    var box = el("div", "constraints");
    list.forEach(function (t) { box.appendChild(el("span", null, t)); });
    return box;
  }

  // ---------------------------------------------------------------- schema rendering
  // Does rendering this schema need more than its one-line type text?
  function needsBlock(s, stack) {
    if (!s || typeof s !== "object") { return false; }
    if (typeof s.$ref === "string") {
      if (stack.indexOf(s.$ref) >= 0) { return false; }
      var t = lookup(s.$ref);
      return !!t && !isScalar(t);
    }
    if (s.properties || s.allOf || s["if"]) { return true; }
    var alts = s.oneOf || s.anyOf;
    if (Array.isArray(alts)) {
      return alts.some(function (a) { return needsBlock(a, stack); });
    }
    if (s.items) { return needsBlock(s.items, stack); }
    if (s.additionalProperties && typeof s.additionalProperties === "object") {
      return needsBlock(s.additionalProperties, stack);
    }
    return false;
  }

  // Merges allOf parts (resolving refs) into one object view.
  function flatten(s, stack, depth) {
    var out = { properties: {}, order: [], required: [], additional: undefined, conditions: [], extra: [], description: null };
    function add(part, st, d) {
      if (!part || typeof part !== "object") { return; }
      var isRoot = part === s;
      if (typeof part.$ref === "string") {
        if (st.indexOf(part.$ref) >= 0 || d > MAX_DEPTH) { out.extra.push(part); return; }
        var t = lookup(part.$ref);
        if (!t) { out.extra.push(part); return; }
        add(t, st.concat([part.$ref]), d + 1);
        return;
      }
      if (part.description && !out.description) { out.description = part.description; }
      if (part.properties) {
        Object.keys(part.properties).forEach(function (k) {
          if (!(k in out.properties)) { out.order.push(k); }
          out.properties[k] = part.properties[k];
        });
      }
      (part.required || []).forEach(function (r) { if (out.required.indexOf(r) < 0) { out.required.push(r); } });
      if (part.additionalProperties !== undefined) { out.additional = part.additionalProperties; }
      if (part["if"]) { out.conditions.push(part); }
      if (Array.isArray(part.allOf)) { part.allOf.forEach(function (p) { add(p, st, d + 1); }); }
      if (!isRoot && (part.oneOf || part.anyOf)) { out.extra.push({ oneOf: part.oneOf, anyOf: part.anyOf }); }
    }
    add(s, stack, depth);
    return out;
  }

  function conditionText(cond) {
    var parts = [];
    var ifs = cond["if"] || {};
    Object.keys(ifs.properties || {}).forEach(function (k) {
      var p = ifs.properties[k];
      parts.push(k + " = " + ("const" in p ? jsonText(p["const"]) : typeText(p)));
    });
    return parts.length ? parts.join(" and ") : "condition holds";
  }

  function renderConditions(conds, stack, depth) {
    var box = el("div", "nested");
    box.appendChild(el("div", "note", "Depending on the values:"));
    var ul = el("ul", "alts");
    conds.forEach(function (c) {
      var li = el("li", null, [el("span", null, "When "), code(conditionText(c)), ": "]);
      var then = c.then || {};
      var bits = [];
      Object.keys(then.properties || {}).forEach(function (k) {
        bits.push([code(k), " must be ", el("span", "type", typeText(then.properties[k]))]);
      });
      (then.required || []).forEach(function (r) { bits.push([code(r), " is required"]); });
      bits.forEach(function (b, i) { if (i) { li.appendChild(document.createTextNode("; ")); } append(li, b); });
      if (!bits.length) { append(li, el("span", "type", typeText(then))); }
      ul.appendChild(li);
    });
    box.appendChild(ul);
    return box;
  }

  // Nested schemas are shown in place in request bodies and folded elsewhere (responses, schemas list).
  var foldNested = false;
  function nestedBlock(s, stack, depth) {
    var inner = el("div", "nested", renderSchema(s, stack, depth + 1, true));
    if (!foldNested) { return inner; }
    var d = el("details", "sub", el("summary", null, "Show " + typeText(s, stack)));
    d.appendChild(inner);
    return d;
  }

  function propertyTable(flat, stack, depth) {
    var table = el("table");
    table.appendChild(el("thead", null, el("tr", null, [el("th", null, "Field"), el("th", null, "Type"), el("th", null, "Description")])));
    var tbody = el("tbody");
    flat.order.forEach(function (name) {
      var ps = flat.properties[name];
      var target = ps && ps.$ref ? (lookup(ps.$ref) || {}) : (ps || {});
      var nameCell = el("td", "name mono", name);
      if (flat.required.indexOf(name) >= 0) { nameCell.appendChild(el("span", "req", "*")); }
      var typeCell = el("td", null, el("span", "type mono", typeText(ps, stack)));
      var descCell = el("td");
      var d = (ps && ps.description) || (target && target.description);
      if (d) { descCell.appendChild(richText(d)); }
      append(descCell, constraintBox(ps && ps.$ref ? target : ps));
      if (needsBlock(ps, stack)) { descCell.appendChild(nestedBlock(ps, stack, depth)); }
      tbody.appendChild(el("tr", null, [nameCell, typeCell, descCell]));
    });
    if (flat.additional && typeof flat.additional === "object") {
      var ap = flat.additional;
      var cell = el("td");
      append(cell, constraintBox(ap));
      if (needsBlock(ap, stack)) { cell.appendChild(nestedBlock(ap, stack, depth)); }
      tbody.appendChild(el("tr", null, [el("td", "name mono", "‹any key›"), el("td", null, el("span", "type mono", typeText(ap, stack))), cell]));
    }
    table.appendChild(tbody);
    return table;
  }

  // Renders a schema as a block: name, type, description, properties, alternatives, conditions.
  function renderSchema(s, stack, depth, compact) {
    stack = stack || [];
    depth = depth || 0;
    var box = el("div", "schema");
    if (s === undefined || s === null || s === true) { box.appendChild(el("span", "type mono", "any")); return box; }
    if (depth > MAX_DEPTH) { box.appendChild(el("div", "note", "… (nested too deeply)")); return box; }
    if (typeof s.$ref === "string") {
      var name = refName(s.$ref);
      if (stack.indexOf(s.$ref) >= 0) {
        var back = el("a", "mono", name);
        back.href = "#schema-" + name;
        box.appendChild(el("div", "note", ["↻ ", back, " (recursive, shown above)"]));
        return box;
      }
      var target = lookup(s.$ref);
      if (!target) { box.appendChild(el("div", "note", "Unresolved reference " + s.$ref)); return box; }
      var link = el("a", "schema-name mono", name);
      link.href = "#schema-" + name;
      box.appendChild(link);
      var inner = renderSchema(target, stack.concat([s.$ref]), depth + 1, compact);
      if (inner.childNodes.length) { box.appendChild(inner); }
      return box;
    }
    var flat = flatten(s, stack, depth);
    var alts = s.oneOf || s.anyOf;
    if (!compact && s.description) { box.appendChild(richText(s.description)); }
    if (!flat.order.length && !alts && !flat.conditions.length && !s.allOf) {
      box.appendChild(el("div", null, el("span", "type mono", typeText(s, stack))));
      if (s.items && needsBlock(s.items, stack)) {
        box.appendChild(el("div", "note", "Items:"));
        box.appendChild(el("div", "nested", renderSchema(s.items, stack, depth + 1)));
      } else if (s.additionalProperties && typeof s.additionalProperties === "object" && needsBlock(s.additionalProperties, stack)) {
        box.appendChild(el("div", "note", "Values:"));
        box.appendChild(el("div", "nested", renderSchema(s.additionalProperties, stack, depth + 1)));
      }
      append(box, compact ? null : constraintBox(s));
      return box;
    }
    if (s.title && !compact && depth === 0) { box.appendChild(el("div", "schema-name mono", s.title)); }
    if (flat.order.length || flat.additional) {
      box.appendChild(el("div", "note", "object" + (flat.required.length ? " — * required" : "")));
      box.appendChild(propertyTable(flat, stack, depth));
      if (flat.additional === false) { box.appendChild(el("div", "note", "No other fields are allowed.")); }
      else if (flat.additional === true) { box.appendChild(el("div", "note", "Other fields are allowed.")); }
    }
    var extras = [];
    if (Array.isArray(alts)) { extras.push({ kind: s.oneOf ? "One of" : "Any of", list: alts }); }
    flat.extra.forEach(function (x) {
      if (x.oneOf) { extras.push({ kind: "One of", list: x.oneOf }); }
      else if (x.anyOf) { extras.push({ kind: "Any of", list: x.anyOf }); }
      else if (x.$ref) { extras.push({ kind: "Also", list: [x] }); }
    });
    extras.forEach(function (group) {
      box.appendChild(el("div", "note", group.kind + ":"));
      var ul = el("ul", "alts");
      group.list.forEach(function (a) {
        var li = el("li");
        if (needsBlock(a, stack)) {
          li.appendChild(renderSchema(a, stack, depth + 1));
        } else {
          li.appendChild(el("span", "type mono", typeText(a, stack)));
        }
        ul.appendChild(li);
      });
      box.appendChild(ul);
    });
    if (flat.conditions.length) { box.appendChild(renderConditions(flat.conditions, stack, depth)); }
    return box;
  }

  // ---------------------------------------------------------------- operations
  function pathNode(path) {
    var span = el("span", "path mono");
    path.split(/([{][^}]*[}])/).forEach(function (part) {
      if (!part) { return; }
      append(span, part.charAt(0) === "{" ? el("span", "param", part) : part);
    });
    return span;
  }

  function renderParameters(params) {
    var table = el("table");
    table.appendChild(el("thead", null, el("tr", null, [el("th", null, "Name"), el("th", null, "In"), el("th", null, "Type"), el("th", null, "Description")])));
    var tbody = el("tbody");
    params.forEach(function (p) {
      var schema = p.schema || {};
      var target = schema.$ref ? (lookup(schema.$ref) || {}) : schema;
      var name = el("td", "name mono", p.name);
      if (p.required) { name.appendChild(el("span", "req", "*")); }
      var desc = el("td");
      if (p.description) { desc.appendChild(richText(p.description)); }
      append(desc, constraintBox(target));
      if (p.example !== undefined) { desc.appendChild(el("div", "constraints", el("span", null, "e.g. " + jsonText(p.example)))); }
      if (p.deprecated) { desc.appendChild(el("div", "note", "Deprecated.")); }
      tbody.appendChild(el("tr", null, [name, el("td", null, p["in"]), el("td", null, el("span", "type mono", typeText(schema))), desc]));
    });
    table.appendChild(tbody);
    return table;
  }

  // A one-line view of a small flat object, e.g. `HTTPError { detail*: string }`; null if it is not one.
  function oneLine(schema) {
    var stack = [];
    var name = null;
    if (schema && typeof schema.$ref === "string") { name = refName(schema.$ref); stack = [schema.$ref]; }
    var target = deref(schema);
    if (!target || target.oneOf || target.anyOf) { return null; }
    var flat = flatten(target, stack, 0);
    if (!flat.order.length || flat.order.length > 4 || flat.conditions.length || flat.extra.length ||
        (flat.additional && typeof flat.additional === "object")) { return null; }
    var simple = flat.order.every(function (k) { return !needsBlock(flat.properties[k], stack); });
    if (!simple) { return null; }
    var line = el("div", "schema mono");
    if (name) {
      var a = el("a", "schema-name", name);
      a.href = "#schema-" + name;
      append(line, [a, " "]);
    }
    append(line, "{ ");
    flat.order.forEach(function (k, i) {
      if (i) { append(line, ", "); }
      append(line, [k, flat.required.indexOf(k) >= 0 ? el("span", "req", "*") : null, ": ",
        el("span", "type", typeText(flat.properties[k], stack))]);
    });
    append(line, " }");
    return line;
  }

  function renderContent(content, compact) {
    var box = el("div");
    Object.keys(content || {}).forEach(function (mt) {
      var media = content[mt] || {};
      box.appendChild(el("div", "media", ["Content type: ", code(mt)]));
      if (media.schema) { box.appendChild((compact && oneLine(media.schema)) || renderSchema(media.schema, [], 0)); }
      var examples = [];
      if (media.example !== undefined) { examples.push({ title: "Example", value: media.example }); }
      Object.keys(media.examples || {}).forEach(function (k) {
        var ex = deref(media.examples[k]);
        if (ex.value !== undefined) { examples.push({ title: "Example: " + (ex.summary || k), value: ex.value }); }
      });
      examples.forEach(function (ex) {
        box.appendChild(el("div", "note", ex.title));
        box.appendChild(el("pre", null, JSON.stringify(ex.value, null, 2)));
      });
    });
    return box;
  }

  function renderResponses(responses) {
    var box = el("div");
    Object.keys(responses || {}).sort().forEach(function (status) {
      var raw = responses[status];
      var r = deref(raw);
      var cls = "status-code s" + String(status).charAt(0);
      var item = el("div", "response");
      var head = el("div", null, [el("span", cls, status)]);
      if (r.description) { head.appendChild(inlineText(r.description)); }
      if (raw && raw.$ref) { append(head, [" ", el("span", "note", "(" + refName(raw.$ref) + ")")]); }
      item.appendChild(head);
      var hs = Object.keys(r.headers || {});
      if (hs.length) {
        var hbox = el("div", "headers", "Headers: ");
        hs.forEach(function (h, i) {
          var hd = deref(r.headers[h]);
          if (i) { hbox.appendChild(document.createTextNode(", ")); }
          var c = code(h + (hd.schema ? ": " + typeText(hd.schema) : ""));
          if (hd.description) { c.title = hd.description; }
          hbox.appendChild(c);
        });
        item.appendChild(hbox);
      }
      if (r.content) { item.appendChild(renderContent(r.content, Number(status) >= 400)); }
      box.appendChild(item);
    });
    return box;
  }

  function securityText(op) {
    var reqs = op.security !== undefined ? op.security : (spec.security || []);
    if (!reqs.length || reqs.some(function (r) { return Object.keys(r).length === 0; })) { return null; }
    var schemes = (spec.components && spec.components.securitySchemes) || {};
    return reqs.map(function (r) {
      return Object.keys(r).map(function (name) {
        var sc = schemes[name] || {};
        return sc.type === "apiKey" ? sc.name + " (" + sc["in"] + ")" : name;
      }).join(" + ");
    }).join(" or ");
  }

  function renderOperation(path, method, op, pathParams) {
    var opId = op.operationId || (method + " " + path);
    var details = el("details", "operation m-" + method + (op.deprecated ? " deprecated" : ""));
    details.id = "op-" + opId;
    details.setAttribute("data-operation-id", opId);
    details.setAttribute("data-search", [method, path, op.summary || "", opId, (op.tags || []).join(" ")].join(" ").toLowerCase());
    var sec = securityText(op);
    var summary = el("summary", null, [
      el("span", "method m-" + method, method.toUpperCase()),
      pathNode(path),
      el("span", "op-summary", op.summary || ""),
      sec ? el("span", "lock", "key: " + sec) : el("span", "lock", "public"),
      el("code", "opid", opId)
    ]);
    details.appendChild(summary);
    var body = el("div", "op-body");
    if (op.description) { body.appendChild(richText(op.description)); }
    if (op.deprecated) { body.appendChild(el("div", "note", "This operation is deprecated.")); }

    var params = {};
    var order = [];
    (pathParams || []).concat(op.parameters || []).forEach(function (p) {
      var d = deref(p);
      var key = d["in"] + ":" + d.name;
      if (!(key in params)) { order.push(key); }
      params[key] = d;
    });
    if (order.length) {
      body.appendChild(el("h3", null, "Parameters"));
      body.appendChild(renderParameters(order.map(function (k) { return params[k]; })));
    }
    if (op.requestBody) {
      var rb = deref(op.requestBody);
      body.appendChild(el("h3", null, "Request body" + (rb.required ? " (required)" : "")));
      if (rb.description) { body.appendChild(richText(rb.description)); }
      foldNested = false;
      body.appendChild(renderContent(rb.content));
    }
    body.appendChild(el("h3", null, "Responses"));
    foldNested = true;
    body.appendChild(renderResponses(op.responses));
    details.appendChild(body);
    return details;
  }

  // ---------------------------------------------------------------- page
  function render(doc) {
    if (!doc || typeof doc !== "object" || !doc.paths) { throw new Error("the document has no paths"); }
    spec = doc;
    var info = doc.info || {};
    var app = document.getElementById("app");
    document.title = (info.title || "API") + " — API documentation";
    document.getElementById("api-title").textContent = info.title || "API";
    if (info.version) { var v = document.getElementById("api-version"); v.textContent = "v" + info.version; v.hidden = false; }
    if (doc.openapi) { var o = document.getElementById("oas-version"); o.textContent = "OpenAPI " + doc.openapi; o.hidden = false; }
    if (info.summary) { var s = document.getElementById("api-summary"); s.textContent = info.summary; s.hidden = false; }
    if (info.description) { app.appendChild(richText(info.description)); }

    var tagDefs = (doc.tags || []).slice();
    var groups = {};
    var count = 0;
    Object.keys(doc.paths).forEach(function (path) {
      var item = deref(doc.paths[path]);
      METHODS.forEach(function (m) {
        var op = item[m];
        if (!op) { return; }
        var tag = (op.tags && op.tags[0]) || "default";
        if (!groups[tag]) { groups[tag] = []; }
        groups[tag].push(renderOperation(path, m, op, item.parameters));
        count += 1;
      });
    });
    Object.keys(groups).forEach(function (t) {
      if (!tagDefs.some(function (d) { return d.name === t; })) { tagDefs.push({ name: t }); }
    });

    var nav = el("nav", "tags");
    tagDefs.forEach(function (t) {
      if (!groups[t.name]) { return; }
      var a = el("a", null, t.name + " (" + groups[t.name].length + ")");
      a.href = "#tag-" + t.name;
      nav.appendChild(a);
    });
    var schemas = (doc.components && doc.components.schemas) || {};
    if (Object.keys(schemas).length) { var ma = el("a", null, "schemas"); ma.href = "#schemas"; nav.appendChild(ma); }
    app.appendChild(nav);

    tagDefs.forEach(function (t) {
      if (!groups[t.name]) { return; }
      var section = el("section", "tag");
      section.id = "tag-" + t.name;
      section.setAttribute("data-tag", t.name);
      section.appendChild(el("h2", null, t.name));
      if (t.description) { section.appendChild(richText(t.description)); }
      groups[t.name].forEach(function (d) { section.appendChild(d); });
      app.appendChild(section);
    });

    if (Object.keys(schemas).length) {
      var ms = el("section", "tag");
      ms.id = "schemas";
      ms.appendChild(el("h2", null, "Schemas"));
      foldNested = true;
      Object.keys(schemas).forEach(function (name) {
        var d = el("details", "model");
        d.id = "schema-" + name;
        d.appendChild(el("summary", "mono", name));
        d.appendChild(renderSchema(schemas[name], ["#/components/schemas/" + name], 0));
        ms.appendChild(d);
      });
      app.appendChild(ms);
    }

    document.getElementById("operation-count").textContent = String(count);
    document.getElementById("status").hidden = true;
    document.getElementById("toolbar").hidden = false;
    app.hidden = false;
    wireToolbar();
    openFromHash();
    document.body.dataset.rendered = "true";
  }

  function wireToolbar() {
    var input = document.getElementById("filter");
    input.addEventListener("input", function () {
      var q = input.value.trim().toLowerCase();
      Array.prototype.forEach.call(document.querySelectorAll("section.tag[data-tag]"), function (sec) {
        var any = false;
        Array.prototype.forEach.call(sec.querySelectorAll("details.operation"), function (d) {
          var hit = !q || d.getAttribute("data-search").indexOf(q) >= 0;
          d.hidden = !hit;
          any = any || hit;
        });
        sec.hidden = !any;
      });
    });
    function setAll(open) {
      Array.prototype.forEach.call(document.querySelectorAll("details.operation"), function (d) { d.open = open; });
    }
    document.getElementById("expand-all").addEventListener("click", function () { setAll(true); });
    document.getElementById("collapse-all").addEventListener("click", function () { setAll(false); });
    window.addEventListener("hashchange", openFromHash);
  }

  function openFromHash() {
    var id = decodeURIComponent((location.hash || "").slice(1));
    if (!id) { return; }
    var target = document.getElementById(id);
    if (target && target.tagName === "DETAILS") { target.open = true; target.scrollIntoView(); }
  }

  function showError(err) {
    var st = document.getElementById("status");
    st.className = "error";
    st.hidden = false;
    st.textContent = "Could not load the API description from /openapi.json: " + (err && err.message ? err.message : String(err));
    document.body.dataset.rendered = "error";
  }

  // With API_KEY set, /openapi.json needs X-API-Key: ask for it (kept only in this tab).
  function load(apiKey) {
    var headers = { "Accept": "application/json" };
    if (apiKey) { headers["X-API-Key"] = apiKey; }
    fetch("/openapi.json", { headers: headers, credentials: "same-origin", cache: "no-store" })
      .then(function (res) {
        if (res.status === 401) { askForKey(apiKey); return null; }
        if (!res.ok) { throw new Error("HTTP " + res.status + (res.statusText ? " " + res.statusText : "")); }
        return res.json();
      })
      .then(function (doc) { if (doc) { document.getElementById("key-form").hidden = true; render(doc); } })
      .catch(showError);
  }

  function askForKey(previous) {
    var form = document.getElementById("key-form");
    var st = document.getElementById("status");
    st.textContent = previous ? "That API key was not accepted." : "This service needs an API key to show its API description.";
    form.hidden = false;
    form.onsubmit = function (e) {
      e.preventDefault();
      var key = document.getElementById("api-key").value;
      try { sessionStorage.setItem("crm-api-key", key); } catch (ignored) {}
      st.textContent = "Loading…";
      load(key);
    };
  }

  var saved = null;
  try { saved = sessionStorage.getItem("crm-api-key"); } catch (ignored) {}
  load(saved);
})();
</script>
</body>
</html>
"""#
}
