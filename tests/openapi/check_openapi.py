#!/usr/bin/env python3
"""Validate the OpenAPI document embedded in Sources/CRMService/OpenAPI/OpenAPIDocument.swift.

Extracts the JSON between the `#\"\"\"` and `\"\"\"#` delimiters, validates it with
openapi-spec-validator, checks a few house rules (unique snake_case operationIds, a summary
and a tag on every operation, `X-Request-Id` on every response), and prints one
`METHOD path` line per operation to stdout. Exits non-zero with a message on failure.

Usage: python3 tests/openapi/check_openapi.py [path/to/OpenAPIDocument.swift]
"""
import json
import re
import sys
from pathlib import Path

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
DEFAULT_SOURCE = (Path(__file__).resolve().parents[2]
                  / "Sources" / "CRMService" / "OpenAPI" / "OpenAPIDocument.swift")


def fail(message: str) -> "NoReturn":  # noqa: F821
    print(f"check_openapi: {message}", file=sys.stderr)
    sys.exit(1)


def short(message: str, width: int = 300, lines: int = 30) -> str:
    """Validator messages can quote the whole document; keep them readable."""
    out = [ln if len(ln) <= width else ln[:width] + " …" for ln in message.splitlines()[:lines]]
    return "\n".join(out)


def extract_json(source: Path) -> str:
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as e:
        fail(f"cannot read {source}: {e}")
    start = text.find('#"""')
    end = text.rfind('"""#')
    if start < 0 or end < 0 or end <= start:
        fail(f'{source}: no #"""...."""# raw string literal found')
    return text[start + 4:end]


def house_rules(doc: dict) -> list:
    problems = []
    seen = {}
    for path, item in doc.get("paths", {}).items():
        for method in HTTP_METHODS:
            op = item.get(method)
            if op is None:
                continue
            where = f"{method.upper()} {path}"
            op_id = op.get("operationId")
            if not op_id:
                problems.append(f"{where}: no operationId")
            elif not re.fullmatch(r"[a-z][a-z0-9_]*", op_id):
                problems.append(f"{where}: operationId {op_id!r} is not snake_case")
            elif op_id in seen:
                problems.append(f"{where}: operationId {op_id!r} also used by {seen[op_id]}")
            else:
                seen[op_id] = where
            if not op.get("summary"):
                problems.append(f"{where}: no summary")
            if not op.get("tags"):
                problems.append(f"{where}: no tags")
            for status, resp in op.get("responses", {}).items():
                if "$ref" in resp:
                    name = resp["$ref"].rsplit("/", 1)[-1]
                    resp = doc.get("components", {}).get("responses", {}).get(name, {})
                if "X-Request-Id" not in resp.get("headers", {}):
                    problems.append(f"{where} {status}: no X-Request-Id response header")
    return problems


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE
    raw = extract_json(source)
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as e:
        fail(f"{source}: the embedded document is not valid JSON: {e}")

    try:
        from openapi_spec_validator import validate
    except ImportError:
        fail("openapi-spec-validator is not installed (pip install openapi-spec-validator)")
    try:
        validate(doc)
    except Exception as e:  # the validator raises several exception types
        fail(f"{source}: invalid OpenAPI document: {short(str(e))}")

    if doc.get("openapi") != "3.1.0":
        fail(f"openapi is {doc.get('openapi')!r}, expected '3.1.0'")
    problems = house_rules(doc)
    if problems:
        fail("house rules broken:\n  " + "\n  ".join(problems))

    for path, item in doc["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                print(f"{method.upper()} {path}")


if __name__ == "__main__":
    main()
