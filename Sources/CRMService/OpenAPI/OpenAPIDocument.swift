// The OpenAPI 3.1 document served at GET /openapi.json (and rendered by GET /docs).
// It describes the external contract in API.md; keep the two in step.
// Checked by tests/openapi/check_openapi.py (openapi-spec-validator).

public enum OpenAPIDocument {
    public static let json: String = #"""
{
  "openapi": "3.1.0",
  "info": {
    "title": "crm-service",
    "version": "0.1.0",
    "summary": "Syncs contacts and events of the parent service's users into their CRMs.",
    "description": "Connects a user's Klaviyo, Salesforce, Creatio or HubSpot account and upserts contacts and sends events to it, with a durable sync log and background retries.\n\nEvery `/crm/*` route needs `X-User-Id` and is scoped to that user. When the `API_KEY` variable is set, every route except `/health`, `/health/ready`, `/openapi.json`, `/docs` and CORS preflights (`OPTIONS`) needs `X-API-Key`. Every response carries `X-Request-Id`.\n\nErrors are FastAPI-compatible: `{\"detail\": \"...\"}`, or for 422 `{\"detail\": [{\"loc\": [...], \"msg\": \"...\", \"type\": \"...\"}]}`. A known path with another method gives 405 with `Allow`."
  },
  "tags": [
    {
      "name": "integrations",
      "description": "Validate, connect, inspect and disconnect a user's CRMs."
    },
    {
      "name": "sync",
      "description": "Upsert contacts and send events."
    },
    {
      "name": "logs",
      "description": "The sync log: every delivery, its outcome and retries."
    },
    {
      "name": "field-mappings",
      "description": "How standard fields map to each CRM."
    },
    {
      "name": "meta",
      "description": "Health, metrics and this documentation."
    }
  ],
  "paths": {
    "/crm/validate": {
      "post": {
        "tags": [
          "integrations"
        ],
        "summary": "Check credentials with the CRM",
        "description": "Asks the CRM whether the credentials are good. Nothing is saved.",
        "operationId": "validate_credentials",
        "parameters": [
          {
            "$ref": "#/components/parameters/XUserId"
          },
          {
            "$ref": "#/components/parameters/XRequestId"
          }
        ],
        "requestBody": {
          "required": true,
          "description": "The CRM type and its credentials.",
          "content": {
            "application/json": {
              "schema": {
                "$ref": "#/components/schemas/ValidateRequest"
              },
              "examples": {
                "hubspot": {
                  "summary": "HubSpot",
                  "value": {
                    "crm_type": "hubspot",
                    "credentials": {
                      "access_token": "pat-na1-…"
                    }
                  }
                },
                "salesforce": {
                  "summary": "Salesforce client credentials",
                  "value": {
                    "crm_type": "salesforce",
                    "credentials": {
                      "client_id": "3MVG9…",
                      "client_secret": "…",
                      "instance_url": "https://acme.my.salesforce.com"
                    }
                  }
                }
              }
            }
          }
        },
        "responses": {
          "200": {
            "description": "The CRM's verdict: `valid: false` when it rejected the credentials.",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              }
            },
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/ValidateResponse"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/BadRequest"
          },
          "401": {
            "$ref": "#/components/responses/Unauthorized"
          },
          "403": {
            "$ref": "#/components/responses/Forbidden"
          },
          "405": {
            "$ref": "#/components/responses/MethodNotAllowed"
          },
          "413": {
            "$ref": "#/components/responses/PayloadTooLarge"
          },
          "415": {
            "$ref": "#/components/responses/UnsupportedMediaType"
          },
          "422": {
            "$ref": "#/components/responses/UnprocessableEntity"
          },
          "500": {
            "$ref": "#/components/responses/InternalServerError"
          },
          "502": {
            "$ref": "#/components/responses/BadGateway"
          },
          "503": {
            "$ref": "#/components/responses/ServiceUnavailable"
          }
        }
      }
    },
    "/crm/connect": {
      "post": {
        "tags": [
          "integrations"
        ],
        "summary": "Connect (or reconnect) a CRM",
        "description": "Validates the credentials with the CRM first, then stores them encrypted together with the settings. Connecting again replaces credentials and settings (and clears an `auth_error`). Rejected credentials → 400; CRM unreachable → 502.",
        "operationId": "connect_integration",
        "parameters": [
          {
            "$ref": "#/components/parameters/XUserId"
          },
          {
            "$ref": "#/components/parameters/XRequestId"
          }
        ],
        "requestBody": {
          "required": true,
          "description": "The CRM type, its credentials and optional settings.",
          "content": {
            "application/json": {
              "schema": {
                "$ref": "#/components/schemas/ConnectRequest"
              },
              "examples": {
                "klaviyo": {
                  "summary": "Klaviyo with a list",
                  "value": {
                    "crm_type": "klaviyo",
                    "credentials": {
                      "api_key": "pk_…"
                    },
                    "settings": {
                      "list_id": "Xy12Ab"
                    }
                  }
                }
              }
            }
          }
        },
        "responses": {
          "200": {
            "description": "Connected. Carries `Deprecation: true` and a `warnings` entry when `settings.field_mapping` was used.",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              },
              "Deprecation": {
                "$ref": "#/components/headers/Deprecation"
              }
            },
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/ConnectResponse"
                }
              }
            }
          },
          "400": {
            "description": "The CRM rejected the credentials, or `X-User-Id` is malformed.",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              }
            },
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/HTTPError"
                }
              }
            }
          },
          "401": {
            "$ref": "#/components/responses/Unauthorized"
          },
          "403": {
            "$ref": "#/components/responses/Forbidden"
          },
          "405": {
            "$ref": "#/components/responses/MethodNotAllowed"
          },
          "413": {
            "$ref": "#/components/responses/PayloadTooLarge"
          },
          "415": {
            "$ref": "#/components/responses/UnsupportedMediaType"
          },
          "422": {
            "$ref": "#/components/responses/UnprocessableEntity"
          },
          "500": {
            "$ref": "#/components/responses/InternalServerError"
          },
          "502": {
            "$ref": "#/components/responses/BadGateway"
          },
          "503": {
            "$ref": "#/components/responses/ServiceUnavailable"
          }
        }
      }
    },
    "/crm/{crm_type}/status": {
      "get": {
        "tags": [
          "integrations"
        ],
        "summary": "Integration status and sync stats",
        "description": "The user's integration for this CRM type; `{crm_type, connected: false}` when not connected.",
        "operationId": "get_integration_status",
        "parameters": [
          {
            "$ref": "#/components/parameters/CRMTypePath"
          },
          {
            "$ref": "#/components/parameters/XUserId"
          },
          {
            "$ref": "#/components/parameters/XRequestId"
          }
        ],
        "responses": {
          "200": {
            "description": "The status, or `connected: false`.",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              }
            },
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/IntegrationStatusResponse"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/BadRequest"
          },
          "401": {
            "$ref": "#/components/responses/Unauthorized"
          },
          "403": {
            "$ref": "#/components/responses/Forbidden"
          },
          "404": {
            "description": "Unsupported CRM type.",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              }
            },
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/HTTPError"
                }
              }
            }
          },
          "405": {
            "$ref": "#/components/responses/MethodNotAllowed"
          },
          "500": {
            "$ref": "#/components/responses/InternalServerError"
          },
          "503": {
            "$ref": "#/components/responses/ServiceUnavailable"
          }
        }
      }
    },
    "/crm/{crm_type}/disconnect": {
      "delete": {
        "tags": [
          "integrations"
        ],
        "summary": "Disconnect a CRM",
        "description": "Destroys the stored credentials and cancels pending retries (also a row waiting for a delivery slot, and a call under way that then fails transiently: neither is sent to this or a later integration); sync logs are kept.",
        "operationId": "disconnect_integration",
        "parameters": [
          {
            "$ref": "#/components/parameters/CRMTypePath"
          },
          {
            "$ref": "#/components/parameters/XUserId"
          },
          {
            "$ref": "#/components/parameters/XRequestId"
          }
        ],
        "responses": {
          "200": {
            "description": "Disconnected.",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              }
            },
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/DisconnectResponse"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/BadRequest"
          },
          "401": {
            "$ref": "#/components/responses/Unauthorized"
          },
          "403": {
            "$ref": "#/components/responses/Forbidden"
          },
          "404": {
            "description": "Not connected, or unsupported CRM type.",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              }
            },
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/HTTPError"
                }
              }
            }
          },
          "405": {
            "$ref": "#/components/responses/MethodNotAllowed"
          },
          "500": {
            "$ref": "#/components/responses/InternalServerError"
          },
          "503": {
            "$ref": "#/components/responses/ServiceUnavailable"
          }
        }
      }
    },
    "/crm/list": {
      "get": {
        "tags": [
          "integrations"
        ],
        "summary": "List the user's integrations",
        "description": "Every integration of the user.",
        "operationId": "list_integrations",
        "parameters": [
          {
            "$ref": "#/components/parameters/XUserId"
          },
          {
            "$ref": "#/components/parameters/XRequestId"
          }
        ],
        "responses": {
          "200": {
            "description": "The integrations.",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              }
            },
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/IntegrationList"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/BadRequest"
          },
          "401": {
            "$ref": "#/components/responses/Unauthorized"
          },
          "403": {
            "$ref": "#/components/responses/Forbidden"
          },
          "405": {
            "$ref": "#/components/responses/MethodNotAllowed"
          },
          "500": {
            "$ref": "#/components/responses/InternalServerError"
          },
          "503": {
            "$ref": "#/components/responses/ServiceUnavailable"
          }
        }
      }
    },
    "/crm/sync/contact": {
      "post": {
        "tags": [
          "sync"
        ],
        "summary": "Upsert a contact into the connected CRMs",
        "description": "Upserts the standard contact (by email) into every targeted active integration whose `sync_contacts` is true, concurrently. Transient failures are retried in the background (`retrying`).",
        "operationId": "sync_contact",
        "parameters": [
          {
            "$ref": "#/components/parameters/XUserId"
          },
          {
            "$ref": "#/components/parameters/XRequestId"
          },
          {
            "$ref": "#/components/parameters/IdempotencyKey"
          },
          {
            "$ref": "#/components/parameters/Prefer"
          }
        ],
        "requestBody": {
          "required": true,
          "description": "The standard contact, optionally limited to some CRMs.",
          "content": {
            "application/json": {
              "schema": {
                "$ref": "#/components/schemas/ContactSyncRequest"
              },
              "examples": {
                "contact": {
                  "summary": "A contact",
                  "value": {
                    "email": "ada@example.com",
                    "first_name": "Ada",
                    "last_name": "Lovelace",
                    "company": "Analytical",
                    "address": {
                      "city": "London",
                      "country": "GB"
                    },
                    "custom_properties": {
                      "plan": "pro",
                      "seats": 5,
                      "trial": false
                    }
                  }
                }
              }
            }
          }
        },
        "responses": {
          "200": {
            "description": "One result per targeted active integration (`[]` when none).",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              },
              "Idempotent-Replayed": {
                "$ref": "#/components/headers/Idempotent-Replayed"
              }
            },
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/SyncResponse"
                }
              }
            }
          },
          "202": {
            "description": "With `Prefer: respond-async`: accepted, every result has status `queued`; delivery happens in the background.",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              },
              "Idempotent-Replayed": {
                "$ref": "#/components/headers/Idempotent-Replayed"
              }
            },
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/SyncResponse"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/BadRequest"
          },
          "401": {
            "$ref": "#/components/responses/Unauthorized"
          },
          "403": {
            "$ref": "#/components/responses/Forbidden"
          },
          "405": {
            "$ref": "#/components/responses/MethodNotAllowed"
          },
          "413": {
            "$ref": "#/components/responses/PayloadTooLarge"
          },
          "415": {
            "$ref": "#/components/responses/UnsupportedMediaType"
          },
          "422": {
            "$ref": "#/components/responses/UnprocessableEntity",
            "description": " Also when an Idempotency-Key is reused with a different body."
          },
          "500": {
            "$ref": "#/components/responses/InternalServerError"
          },
          "503": {
            "$ref": "#/components/responses/ServiceUnavailable"
          },
          "409": {
            "description": "A request with this Idempotency-Key is still in progress.",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              }
            },
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/HTTPError"
                }
              }
            }
          }
        }
      }
    },
    "/crm/sync/event": {
      "post": {
        "tags": [
          "sync"
        ],
        "summary": "Send an event to the connected CRMs",
        "description": "Sends the event to every targeted active integration whose `sync_events` is true. `unique_id` travels with it so a retry never doubles it.",
        "operationId": "sync_event",
        "parameters": [
          {
            "$ref": "#/components/parameters/XUserId"
          },
          {
            "$ref": "#/components/parameters/XRequestId"
          },
          {
            "$ref": "#/components/parameters/IdempotencyKey"
          },
          {
            "$ref": "#/components/parameters/Prefer"
          }
        ],
        "requestBody": {
          "required": true,
          "description": "The event.",
          "content": {
            "application/json": {
              "schema": {
                "$ref": "#/components/schemas/EventSyncRequest"
              },
              "examples": {
                "event": {
                  "summary": "An event",
                  "value": {
                    "event": "Subscription Started",
                    "email": "ada@example.com",
                    "value": 49.0,
                    "properties": {
                      "plan": "pro"
                    },
                    "timestamp": "2024-05-01T12:00:00Z"
                  }
                }
              }
            }
          }
        },
        "responses": {
          "200": {
            "description": "One result per targeted active integration (`[]` when none).",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              },
              "Idempotent-Replayed": {
                "$ref": "#/components/headers/Idempotent-Replayed"
              }
            },
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/SyncResponse"
                }
              }
            }
          },
          "202": {
            "description": "With `Prefer: respond-async`: accepted, every result has status `queued`; delivery happens in the background.",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              },
              "Idempotent-Replayed": {
                "$ref": "#/components/headers/Idempotent-Replayed"
              }
            },
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/SyncResponse"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/BadRequest"
          },
          "401": {
            "$ref": "#/components/responses/Unauthorized"
          },
          "403": {
            "$ref": "#/components/responses/Forbidden"
          },
          "405": {
            "$ref": "#/components/responses/MethodNotAllowed"
          },
          "413": {
            "$ref": "#/components/responses/PayloadTooLarge"
          },
          "415": {
            "$ref": "#/components/responses/UnsupportedMediaType"
          },
          "422": {
            "$ref": "#/components/responses/UnprocessableEntity",
            "description": " Also when an Idempotency-Key is reused with a different body."
          },
          "500": {
            "$ref": "#/components/responses/InternalServerError"
          },
          "503": {
            "$ref": "#/components/responses/ServiceUnavailable"
          },
          "409": {
            "description": "A request with this Idempotency-Key is still in progress.",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              }
            },
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/HTTPError"
                }
              }
            }
          }
        }
      }
    },
    "/crm/sync/logs": {
      "get": {
        "tags": [
          "logs"
        ],
        "summary": "List sync logs",
        "description": "The user's sync logs, newest first, paged with `before_id`.",
        "operationId": "list_sync_logs",
        "parameters": [
          {
            "$ref": "#/components/parameters/XUserId"
          },
          {
            "$ref": "#/components/parameters/XRequestId"
          },
          {
            "name": "crm_type",
            "in": "query",
            "required": false,
            "schema": {
              "$ref": "#/components/schemas/CRMType"
            },
            "description": "Only this CRM type."
          },
          {
            "name": "status",
            "in": "query",
            "required": false,
            "schema": {
              "$ref": "#/components/schemas/SyncLogStatus"
            },
            "description": "Only this status."
          },
          {
            "name": "operation",
            "in": "query",
            "required": false,
            "schema": {
              "$ref": "#/components/schemas/SyncOperation"
            },
            "description": "Only this operation."
          },
          {
            "name": "limit",
            "in": "query",
            "required": false,
            "schema": {
              "type": "integer",
              "minimum": 1,
              "maximum": 200,
              "default": 50
            },
            "description": "Page size."
          },
          {
            "name": "before_id",
            "in": "query",
            "required": false,
            "schema": {
              "type": "integer",
              "format": "int64",
              "minimum": 1
            },
            "description": "Only logs with an id below this (the previous page's `next_before_id`)."
          }
        ],
        "responses": {
          "200": {
            "description": "A page of logs.",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              }
            },
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/SyncLogList"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/BadRequest"
          },
          "401": {
            "$ref": "#/components/responses/Unauthorized"
          },
          "403": {
            "$ref": "#/components/responses/Forbidden"
          },
          "405": {
            "$ref": "#/components/responses/MethodNotAllowed"
          },
          "422": {
            "$ref": "#/components/responses/UnprocessableEntity"
          },
          "500": {
            "$ref": "#/components/responses/InternalServerError"
          },
          "503": {
            "$ref": "#/components/responses/ServiceUnavailable"
          }
        }
      }
    },
    "/crm/sync/logs/{id}": {
      "get": {
        "tags": [
          "logs"
        ],
        "summary": "One sync log with its request and response",
        "description": "The log with what was sent and what the CRM answered (credentials never included).",
        "operationId": "get_sync_log",
        "parameters": [
          {
            "$ref": "#/components/parameters/LogId"
          },
          {
            "$ref": "#/components/parameters/XUserId"
          },
          {
            "$ref": "#/components/parameters/XRequestId"
          }
        ],
        "responses": {
          "200": {
            "description": "The log.",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              }
            },
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/SyncLogDetail"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/BadRequest"
          },
          "401": {
            "$ref": "#/components/responses/Unauthorized"
          },
          "403": {
            "$ref": "#/components/responses/Forbidden"
          },
          "404": {
            "description": "Unknown id, or another user's log.",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              }
            },
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/HTTPError"
                }
              }
            }
          },
          "405": {
            "$ref": "#/components/responses/MethodNotAllowed"
          },
          "422": {
            "$ref": "#/components/responses/UnprocessableEntity"
          },
          "500": {
            "$ref": "#/components/responses/InternalServerError"
          },
          "503": {
            "$ref": "#/components/responses/ServiceUnavailable"
          }
        }
      }
    },
    "/crm/sync/logs/{id}/retry": {
      "post": {
        "tags": [
          "logs"
        ],
        "summary": "Retry a failed sync now",
        "description": "Re-delivers a `failed` sync now and returns the new result.",
        "operationId": "retry_sync_log",
        "parameters": [
          {
            "$ref": "#/components/parameters/LogId"
          },
          {
            "$ref": "#/components/parameters/XUserId"
          },
          {
            "$ref": "#/components/parameters/XRequestId"
          }
        ],
        "responses": {
          "200": {
            "description": "The new result.",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              }
            },
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/SyncResult"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/BadRequest"
          },
          "401": {
            "$ref": "#/components/responses/Unauthorized"
          },
          "403": {
            "$ref": "#/components/responses/Forbidden"
          },
          "404": {
            "description": "Unknown id, or another user's log.",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              }
            },
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/HTTPError"
                }
              }
            }
          },
          "405": {
            "$ref": "#/components/responses/MethodNotAllowed"
          },
          "409": {
            "description": "The log is not `failed`.",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              }
            },
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/HTTPError"
                }
              }
            }
          },
          "422": {
            "$ref": "#/components/responses/UnprocessableEntity"
          },
          "500": {
            "$ref": "#/components/responses/InternalServerError"
          },
          "503": {
            "$ref": "#/components/responses/ServiceUnavailable"
          }
        }
      }
    },
    "/crm/field-mappings/{crm_type}": {
      "get": {
        "tags": [
          "field-mappings"
        ],
        "summary": "Field mapping of one CRM type",
        "description": "How the standard contact and event fields map to this CRM's fields.",
        "operationId": "get_field_mapping",
        "parameters": [
          {
            "$ref": "#/components/parameters/CRMTypePath"
          },
          {
            "$ref": "#/components/parameters/XUserId"
          },
          {
            "$ref": "#/components/parameters/XRequestId"
          }
        ],
        "responses": {
          "200": {
            "description": "The mapping.",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              }
            },
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/FieldMappingResponse"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/BadRequest"
          },
          "401": {
            "$ref": "#/components/responses/Unauthorized"
          },
          "403": {
            "$ref": "#/components/responses/Forbidden"
          },
          "404": {
            "description": "Unsupported CRM type.",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              }
            },
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/HTTPError"
                }
              }
            }
          },
          "405": {
            "$ref": "#/components/responses/MethodNotAllowed"
          },
          "500": {
            "$ref": "#/components/responses/InternalServerError"
          },
          "503": {
            "$ref": "#/components/responses/ServiceUnavailable"
          }
        }
      }
    },
    "/crm/field-mappings": {
      "get": {
        "tags": [
          "field-mappings"
        ],
        "summary": "Field mappings of every CRM type",
        "description": "The mapping of every supported CRM type.",
        "operationId": "list_field_mappings",
        "parameters": [
          {
            "$ref": "#/components/parameters/XUserId"
          },
          {
            "$ref": "#/components/parameters/XRequestId"
          }
        ],
        "responses": {
          "200": {
            "description": "The mappings.",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              }
            },
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/FieldMappingList"
                }
              }
            }
          },
          "400": {
            "$ref": "#/components/responses/BadRequest"
          },
          "401": {
            "$ref": "#/components/responses/Unauthorized"
          },
          "403": {
            "$ref": "#/components/responses/Forbidden"
          },
          "405": {
            "$ref": "#/components/responses/MethodNotAllowed"
          },
          "500": {
            "$ref": "#/components/responses/InternalServerError"
          },
          "503": {
            "$ref": "#/components/responses/ServiceUnavailable"
          }
        }
      }
    },
    "/health": {
      "get": {
        "tags": [
          "meta"
        ],
        "summary": "Liveness",
        "description": "Answers without touching the database. Public (no `X-API-Key`).",
        "operationId": "health",
        "parameters": [
          {
            "$ref": "#/components/parameters/XRequestId"
          }
        ],
        "responses": {
          "200": {
            "description": "Alive.",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              }
            },
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Health"
                }
              }
            }
          },
          "405": {
            "$ref": "#/components/responses/MethodNotAllowed"
          },
          "500": {
            "$ref": "#/components/responses/InternalServerError"
          }
        },
        "security": []
      }
    },
    "/health/ready": {
      "get": {
        "tags": [
          "meta"
        ],
        "summary": "Readiness (database answers)",
        "description": "200 when the database answers, else 503. Public (no `X-API-Key`).",
        "operationId": "health_ready",
        "parameters": [
          {
            "$ref": "#/components/parameters/XRequestId"
          }
        ],
        "responses": {
          "200": {
            "description": "Ready.",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              }
            },
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/Readiness"
                }
              }
            }
          },
          "405": {
            "$ref": "#/components/responses/MethodNotAllowed"
          },
          "500": {
            "$ref": "#/components/responses/InternalServerError"
          },
          "503": {
            "description": "The database does not answer.",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              },
              "Retry-After": {
                "$ref": "#/components/headers/Retry-After"
              }
            },
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/HTTPError"
                }
              }
            }
          }
        },
        "security": []
      }
    },
    "/openapi.json": {
      "get": {
        "tags": [
          "meta"
        ],
        "summary": "This OpenAPI document",
        "description": "The OpenAPI 3.1 document of this service. Public.",
        "operationId": "openapi",
        "parameters": [
          {
            "$ref": "#/components/parameters/XRequestId"
          }
        ],
        "responses": {
          "200": {
            "description": "The document.",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              }
            },
            "content": {
              "application/json": {
                "schema": {
                  "type": "object"
                }
              }
            }
          },
          "405": {
            "$ref": "#/components/responses/MethodNotAllowed"
          },
          "500": {
            "$ref": "#/components/responses/InternalServerError"
          },
          "401": {
            "description": "Missing or wrong X-API-Key (when API_KEY is set).",
            "content": {
              "application/json": {
                "schema": {
                  "$ref": "#/components/schemas/HTTPError"
                }
              }
            },
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              }
            }
          }
        }
      }
    },
    "/docs": {
      "get": {
        "tags": [
          "meta"
        ],
        "summary": "API documentation page",
        "description": "An HTML page rendering this document; needs no internet access. Public.",
        "operationId": "docs",
        "parameters": [
          {
            "$ref": "#/components/parameters/XRequestId"
          }
        ],
        "responses": {
          "200": {
            "description": "The page.",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              }
            },
            "content": {
              "text/html": {
                "schema": {
                  "type": "string"
                }
              }
            }
          },
          "405": {
            "$ref": "#/components/responses/MethodNotAllowed"
          },
          "500": {
            "$ref": "#/components/responses/InternalServerError"
          }
        },
        "security": []
      }
    },
    "/metrics": {
      "get": {
        "tags": [
          "meta"
        ],
        "summary": "Prometheus metrics",
        "description": "Prometheus text exposition: requests by route and status, latency histogram, syncs by crm_type and status, retry backlog.",
        "operationId": "metrics",
        "parameters": [
          {
            "$ref": "#/components/parameters/XRequestId"
          }
        ],
        "responses": {
          "200": {
            "description": "Metrics in the Prometheus text format (version 0.0.4).",
            "headers": {
              "X-Request-Id": {
                "$ref": "#/components/headers/X-Request-Id"
              }
            },
            "content": {
              "text/plain": {
                "schema": {
                  "type": "string"
                }
              }
            }
          },
          "401": {
            "$ref": "#/components/responses/Unauthorized"
          },
          "405": {
            "$ref": "#/components/responses/MethodNotAllowed"
          },
          "500": {
            "$ref": "#/components/responses/InternalServerError"
          }
        }
      }
    }
  },
  "components": {
    "schemas": {
      "CRMType": {
        "title": "CRMType",
        "type": "string",
        "enum": [
          "creatio",
          "hubspot",
          "klaviyo",
          "salesforce"
        ],
        "description": "A supported CRM. An unknown value in a path gives 404, in a body 422."
      },
      "SyncOperation": {
        "title": "SyncOperation",
        "type": "string",
        "enum": [
          "contact",
          "event"
        ]
      },
      "SyncLogStatus": {
        "title": "SyncLogStatus",
        "type": "string",
        "enum": [
          "pending",
          "in_flight",
          "success",
          "failed",
          "retrying",
          "queued",
          "cancelled"
        ],
        "description": "`pending`: written, not yet sent; `in_flight`: being delivered; `success`; `failed`: permanent failure (the CRM refused the data or the credentials, or retries ran out); `retrying`: transient failure, another attempt is scheduled at `next_attempt_at` (also a delivery held back without a call while its CRM is rate-limiting the integration, `error` saying so); `queued`: accepted with `Prefer: respond-async`, delivered in the background, or a sync never attempted that was held back so (`error` says so); `cancelled`: a pending retry cancelled by a disconnect."
      },
      "SyncResultStatus": {
        "title": "SyncResultStatus",
        "type": "string",
        "enum": [
          "success",
          "failed",
          "retrying",
          "queued"
        ],
        "description": "`success`; `failed` (permanent: the CRM refused the data or the credentials); `retrying` (transient failure, a later attempt is scheduled — the request does not wait for it); `queued` (accepted with `Prefer: respond-async`; or, with a `detail` beginning `held back:`, not sent yet because the CRM is rate-limiting this integration: delivered at its turn, as an async sync is)."
      },
      "IntegrationStatus": {
        "title": "IntegrationStatus",
        "type": "string",
        "enum": [
          "connected",
          "auth_error"
        ],
        "description": "`connected`, or `auth_error` once the CRM has rejected the stored credentials (connecting again with good credentials clears it)."
      },
      "KlaviyoCredentials": {
        "title": "KlaviyoCredentials",
        "description": "Klaviyo: a private API key.",
        "type": "object",
        "required": [
          "api_key"
        ],
        "properties": {
          "api_key": {
            "type": "string",
            "minLength": 1,
            "format": "password",
            "writeOnly": true,
            "description": "Klaviyo private API key."
          }
        },
        "additionalProperties": false
      },
      "SalesforceClientCredentials": {
        "title": "SalesforceClientCredentials",
        "description": "Salesforce — OAuth 2.0 client credentials flow against the org's My Domain (recommended).",
        "type": "object",
        "required": [
          "client_id",
          "client_secret",
          "instance_url"
        ],
        "properties": {
          "client_id": {
            "type": "string",
            "minLength": 1,
            "description": "Connected app consumer key."
          },
          "client_secret": {
            "type": "string",
            "minLength": 1,
            "format": "password",
            "writeOnly": true,
            "description": "Connected app consumer secret."
          },
          "instance_url": {
            "type": "string",
            "format": "uri",
            "minLength": 1,
            "description": "The org's My Domain URL, e.g. `https://acme.my.salesforce.com`. Must be https and resolve to a public address unless `CRM_ALLOW_PRIVATE_URLS` is true; otherwise the request is refused with 422."
          }
        },
        "additionalProperties": false
      },
      "SalesforceJWTBearer": {
        "title": "SalesforceJWTBearer",
        "description": "Salesforce — OAuth 2.0 JWT bearer flow.",
        "type": "object",
        "required": [
          "client_id",
          "username",
          "private_key"
        ],
        "properties": {
          "client_id": {
            "type": "string",
            "minLength": 1,
            "description": "Connected app consumer key."
          },
          "username": {
            "type": "string",
            "minLength": 1,
            "description": "The Salesforce user the token is issued for."
          },
          "private_key": {
            "type": "string",
            "minLength": 1,
            "format": "password",
            "writeOnly": true,
            "description": "PEM-encoded private key whose certificate is uploaded to the connected app."
          },
          "login_url": {
            "type": "string",
            "format": "uri",
            "minLength": 1,
            "description": "Login host (default from `CRM_SALESFORCE_LOGIN_URL`). Must be https and resolve to a public address unless `CRM_ALLOW_PRIVATE_URLS` is true; otherwise the request is refused with 422."
          }
        },
        "additionalProperties": false
      },
      "SalesforceTokens": {
        "title": "SalesforceTokens",
        "description": "Salesforce — an existing access token; refreshed on 401 when `refresh_token` (+ client id/secret) is given.",
        "type": "object",
        "required": [
          "access_token",
          "instance_url"
        ],
        "properties": {
          "access_token": {
            "type": "string",
            "minLength": 1,
            "format": "password",
            "writeOnly": true,
            "description": "OAuth access token."
          },
          "instance_url": {
            "type": "string",
            "format": "uri",
            "minLength": 1,
            "description": "The org's instance URL. Must be https and resolve to a public address unless `CRM_ALLOW_PRIVATE_URLS` is true; otherwise the request is refused with 422."
          },
          "refresh_token": {
            "type": "string",
            "minLength": 1,
            "format": "password",
            "writeOnly": true,
            "description": "OAuth refresh token."
          },
          "client_id": {
            "type": "string",
            "minLength": 1,
            "description": "Connected app consumer key (for refreshing)."
          },
          "client_secret": {
            "type": "string",
            "minLength": 1,
            "format": "password",
            "writeOnly": true,
            "description": "Connected app consumer secret (for refreshing)."
          }
        },
        "additionalProperties": false
      },
      "SalesforcePassword": {
        "title": "SalesforcePassword",
        "description": "Salesforce — legacy OAuth username-password flow, still accepted for old orgs.",
        "type": "object",
        "required": [
          "client_id",
          "client_secret",
          "username",
          "password"
        ],
        "properties": {
          "client_id": {
            "type": "string",
            "minLength": 1,
            "description": "Connected app consumer key."
          },
          "client_secret": {
            "type": "string",
            "minLength": 1,
            "format": "password",
            "writeOnly": true,
            "description": "Connected app consumer secret."
          },
          "username": {
            "type": "string",
            "minLength": 1,
            "description": "Salesforce username."
          },
          "password": {
            "type": "string",
            "minLength": 1,
            "format": "password",
            "writeOnly": true,
            "description": "Salesforce password."
          },
          "security_token": {
            "type": "string",
            "minLength": 1,
            "format": "password",
            "writeOnly": true,
            "description": "Security token appended to the password."
          },
          "domain": {
            "type": "string",
            "enum": [
              "login",
              "test"
            ],
            "default": "login",
            "description": "`login` (production) or `test` (sandbox)."
          }
        },
        "additionalProperties": false
      },
      "SalesforceCredentials": {
        "title": "SalesforceCredentials",
        "description": "One of the four Salesforce credential shapes.",
        "oneOf": [
          {
            "$ref": "#/components/schemas/SalesforceClientCredentials"
          },
          {
            "$ref": "#/components/schemas/SalesforceJWTBearer"
          },
          {
            "$ref": "#/components/schemas/SalesforceTokens"
          },
          {
            "$ref": "#/components/schemas/SalesforcePassword"
          }
        ]
      },
      "CreatioFormsCredentials": {
        "title": "CreatioFormsCredentials",
        "description": "Creatio — forms login.",
        "type": "object",
        "required": [
          "base_url",
          "username",
          "password"
        ],
        "properties": {
          "base_url": {
            "type": "string",
            "format": "uri",
            "minLength": 1,
            "description": "Creatio application URL. Must be https and resolve to a public address unless `CRM_ALLOW_PRIVATE_URLS` is true; otherwise the request is refused with 422."
          },
          "username": {
            "type": "string",
            "minLength": 1,
            "description": "Creatio user name."
          },
          "password": {
            "type": "string",
            "minLength": 1,
            "format": "password",
            "writeOnly": true,
            "description": "Creatio password."
          }
        },
        "additionalProperties": false
      },
      "CreatioOAuthCredentials": {
        "title": "CreatioOAuthCredentials",
        "description": "Creatio — OAuth 2.0 client credentials through the identity service.",
        "type": "object",
        "required": [
          "base_url",
          "identity_url",
          "client_id",
          "client_secret"
        ],
        "properties": {
          "base_url": {
            "type": "string",
            "format": "uri",
            "minLength": 1,
            "description": "Creatio application URL. Must be https and resolve to a public address unless `CRM_ALLOW_PRIVATE_URLS` is true; otherwise the request is refused with 422."
          },
          "identity_url": {
            "type": "string",
            "format": "uri",
            "minLength": 1,
            "description": "Creatio identity service URL. Must be https and resolve to a public address unless `CRM_ALLOW_PRIVATE_URLS` is true; otherwise the request is refused with 422."
          },
          "client_id": {
            "type": "string",
            "minLength": 1,
            "description": "OAuth client id."
          },
          "client_secret": {
            "type": "string",
            "minLength": 1,
            "format": "password",
            "writeOnly": true,
            "description": "OAuth client secret."
          }
        },
        "additionalProperties": false
      },
      "CreatioCredentials": {
        "title": "CreatioCredentials",
        "description": "One of the two Creatio credential shapes.",
        "oneOf": [
          {
            "$ref": "#/components/schemas/CreatioFormsCredentials"
          },
          {
            "$ref": "#/components/schemas/CreatioOAuthCredentials"
          }
        ]
      },
      "HubSpotCredentials": {
        "title": "HubSpotCredentials",
        "description": "HubSpot: a private app access token or service key.",
        "type": "object",
        "required": [
          "access_token"
        ],
        "properties": {
          "access_token": {
            "type": "string",
            "minLength": 1,
            "format": "password",
            "writeOnly": true,
            "description": "Private app access token or service key."
          }
        },
        "additionalProperties": false
      },
      "CRMCredentials": {
        "title": "CRMCredentials",
        "description": "Credentials for the CRM named by `crm_type` (the shape must be one that `crm_type` accepts). A missing required key → 422. Credentials are stored only encrypted and are never returned by any endpoint nor written to any log.",
        "oneOf": [
          {
            "$ref": "#/components/schemas/KlaviyoCredentials"
          },
          {
            "$ref": "#/components/schemas/SalesforceCredentials"
          },
          {
            "$ref": "#/components/schemas/CreatioCredentials"
          },
          {
            "$ref": "#/components/schemas/HubSpotCredentials"
          }
        ]
      },
      "CommonSettings": {
        "title": "CommonSettings",
        "type": "object",
        "properties": {
          "sync_contacts": {
            "type": "boolean",
            "default": true,
            "description": "When false, contact syncs do not target this integration."
          },
          "sync_events": {
            "type": "boolean",
            "default": true,
            "description": "When false, event syncs do not target this integration."
          },
          "field_mapping": {
            "type": "object",
            "deprecated": true,
            "additionalProperties": {
              "type": "string"
            },
            "description": "Deprecated: `{\"standard_field\": \"crm_field\"}` overrides, honoured on top of the standard mapping. Using it makes the connect response carry `Deprecation: true` and a `warnings` entry."
          }
        }
      },
      "KlaviyoSettings": {
        "title": "KlaviyoSettings",
        "description": "Klaviyo settings. All settings are optional. Unknown keys are rejected (422).",
        "allOf": [
          {
            "$ref": "#/components/schemas/CommonSettings"
          },
          {
            "type": "object",
            "properties": {
              "list_id": {
                "type": "string",
                "minLength": 1,
                "description": "Also add synced profiles to this list."
              }
            }
          }
        ],
        "unevaluatedProperties": false
      },
      "SalesforceSettings": {
        "title": "SalesforceSettings",
        "description": "Salesforce settings. All settings are optional. Unknown keys are rejected (422).",
        "allOf": [
          {
            "$ref": "#/components/schemas/CommonSettings"
          },
          {
            "type": "object",
            "properties": {
              "object": {
                "type": "string",
                "enum": [
                  "Contact",
                  "Lead"
                ],
                "default": "Contact",
                "description": "The object contacts are upserted into."
              },
              "api_version": {
                "type": "string",
                "minLength": 1,
                "examples": [
                  "v62.0"
                ],
                "description": "REST API version (default from `CRM_SALESFORCE_API_VERSION`, itself `v62.0`)."
              },
              "external_id_field": {
                "type": "string",
                "minLength": 1,
                "description": "Upsert by this external id field instead of a lookup by email."
              },
              "events": {
                "type": "string",
                "minLength": 1,
                "default": "task",
                "description": "`task` (default: events become Tasks) or a Platform Event API name (e.g. `Signup__e`)."
              }
            }
          }
        ],
        "unevaluatedProperties": false
      },
      "CreatioSettings": {
        "title": "CreatioSettings",
        "description": "Creatio settings. All settings are optional. Unknown keys are rejected (422).",
        "allOf": [
          {
            "$ref": "#/components/schemas/CommonSettings"
          },
          {
            "type": "object",
            "properties": {
              "contact_entity": {
                "type": "string",
                "minLength": 1,
                "default": "Contact",
                "description": "The entity contacts are upserted into."
              }
            }
          }
        ],
        "unevaluatedProperties": false
      },
      "HubSpotSettings": {
        "title": "HubSpotSettings",
        "description": "HubSpot settings. All settings are optional. Unknown keys are rejected (422).",
        "allOf": [
          {
            "$ref": "#/components/schemas/CommonSettings"
          },
          {
            "type": "object",
            "properties": {
              "events": {
                "type": "string",
                "enum": [
                  "custom_event",
                  "note"
                ],
                "default": "custom_event",
                "description": "`custom_event` (default; needs the portal's custom-event feature, the event name is derived as the portal requires) or `note` (a note on the contact)."
              }
            }
          }
        ],
        "unevaluatedProperties": false
      },
      "CRMSettings": {
        "title": "CRMSettings",
        "description": "Settings for the CRM named by `crm_type`.",
        "anyOf": [
          {
            "$ref": "#/components/schemas/KlaviyoSettings"
          },
          {
            "$ref": "#/components/schemas/SalesforceSettings"
          },
          {
            "$ref": "#/components/schemas/CreatioSettings"
          },
          {
            "$ref": "#/components/schemas/HubSpotSettings"
          }
        ]
      },
      "ValidateRequest": {
        "title": "ValidateRequest",
        "type": "object",
        "required": [
          "crm_type",
          "credentials"
        ],
        "additionalProperties": false,
        "properties": {
          "crm_type": {
            "$ref": "#/components/schemas/CRMType"
          },
          "credentials": {
            "$ref": "#/components/schemas/CRMCredentials"
          }
        },
        "allOf": [
          {
            "if": {
              "properties": {
                "crm_type": {
                  "const": "creatio"
                }
              },
              "required": [
                "crm_type"
              ]
            },
            "then": {
              "properties": {
                "credentials": {
                  "$ref": "#/components/schemas/CreatioCredentials"
                }
              }
            }
          },
          {
            "if": {
              "properties": {
                "crm_type": {
                  "const": "hubspot"
                }
              },
              "required": [
                "crm_type"
              ]
            },
            "then": {
              "properties": {
                "credentials": {
                  "$ref": "#/components/schemas/HubSpotCredentials"
                }
              }
            }
          },
          {
            "if": {
              "properties": {
                "crm_type": {
                  "const": "klaviyo"
                }
              },
              "required": [
                "crm_type"
              ]
            },
            "then": {
              "properties": {
                "credentials": {
                  "$ref": "#/components/schemas/KlaviyoCredentials"
                }
              }
            }
          },
          {
            "if": {
              "properties": {
                "crm_type": {
                  "const": "salesforce"
                }
              },
              "required": [
                "crm_type"
              ]
            },
            "then": {
              "properties": {
                "credentials": {
                  "$ref": "#/components/schemas/SalesforceCredentials"
                }
              }
            }
          }
        ]
      },
      "ConnectRequest": {
        "title": "ConnectRequest",
        "type": "object",
        "required": [
          "crm_type",
          "credentials"
        ],
        "additionalProperties": false,
        "properties": {
          "crm_type": {
            "$ref": "#/components/schemas/CRMType"
          },
          "credentials": {
            "$ref": "#/components/schemas/CRMCredentials"
          },
          "settings": {
            "$ref": "#/components/schemas/CRMSettings"
          }
        },
        "allOf": [
          {
            "if": {
              "properties": {
                "crm_type": {
                  "const": "creatio"
                }
              },
              "required": [
                "crm_type"
              ]
            },
            "then": {
              "properties": {
                "credentials": {
                  "$ref": "#/components/schemas/CreatioCredentials"
                },
                "settings": {
                  "$ref": "#/components/schemas/CreatioSettings"
                }
              }
            }
          },
          {
            "if": {
              "properties": {
                "crm_type": {
                  "const": "hubspot"
                }
              },
              "required": [
                "crm_type"
              ]
            },
            "then": {
              "properties": {
                "credentials": {
                  "$ref": "#/components/schemas/HubSpotCredentials"
                },
                "settings": {
                  "$ref": "#/components/schemas/HubSpotSettings"
                }
              }
            }
          },
          {
            "if": {
              "properties": {
                "crm_type": {
                  "const": "klaviyo"
                }
              },
              "required": [
                "crm_type"
              ]
            },
            "then": {
              "properties": {
                "credentials": {
                  "$ref": "#/components/schemas/KlaviyoCredentials"
                },
                "settings": {
                  "$ref": "#/components/schemas/KlaviyoSettings"
                }
              }
            }
          },
          {
            "if": {
              "properties": {
                "crm_type": {
                  "const": "salesforce"
                }
              },
              "required": [
                "crm_type"
              ]
            },
            "then": {
              "properties": {
                "credentials": {
                  "$ref": "#/components/schemas/SalesforceCredentials"
                },
                "settings": {
                  "$ref": "#/components/schemas/SalesforceSettings"
                }
              }
            }
          }
        ]
      },
      "ValidateResponse": {
        "title": "ValidateResponse",
        "type": "object",
        "required": [
          "crm_type",
          "valid",
          "detail"
        ],
        "properties": {
          "crm_type": {
            "$ref": "#/components/schemas/CRMType"
          },
          "valid": {
            "type": "boolean",
            "description": "False when the CRM rejected the credentials."
          },
          "detail": {
            "type": "string",
            "description": "Human-readable outcome."
          },
          "account": {
            "type": [
              "object",
              "null"
            ],
            "additionalProperties": true,
            "description": "What the CRM says about the account (e.g. its id or name), when valid."
          }
        }
      },
      "ConnectResponse": {
        "title": "ConnectResponse",
        "type": "object",
        "required": [
          "crm_type",
          "status",
          "is_active",
          "settings",
          "created_at",
          "updated_at",
          "warnings"
        ],
        "properties": {
          "crm_type": {
            "$ref": "#/components/schemas/CRMType"
          },
          "status": {
            "type": "string",
            "const": "connected"
          },
          "is_active": {
            "type": "boolean"
          },
          "settings": {
            "$ref": "#/components/schemas/CRMSettings"
          },
          "created_at": {
            "type": "string",
            "format": "date-time"
          },
          "updated_at": {
            "type": "string",
            "format": "date-time"
          },
          "warnings": {
            "type": "array",
            "items": {
              "type": "string"
            },
            "description": "E.g. that the deprecated `settings.field_mapping` was used."
          }
        }
      },
      "SyncStats": {
        "title": "SyncStats",
        "type": "object",
        "required": [
          "success",
          "failed",
          "retrying",
          "pending"
        ],
        "properties": {
          "success": {
            "type": "integer",
            "minimum": 0
          },
          "failed": {
            "type": "integer",
            "minimum": 0
          },
          "retrying": {
            "type": "integer",
            "minimum": 0
          },
          "pending": {
            "type": "integer",
            "minimum": 0
          }
        },
        "description": "Counts of this user's sync logs for the integration, by status."
      },
      "ConnectedStatus": {
        "title": "ConnectedStatus",
        "type": "object",
        "required": [
          "crm_type",
          "connected",
          "is_active",
          "status",
          "settings",
          "created_at",
          "updated_at",
          "last_sync_at",
          "last_sync_status",
          "rate_limited_until",
          "stats"
        ],
        "properties": {
          "crm_type": {
            "$ref": "#/components/schemas/CRMType"
          },
          "connected": {
            "type": "boolean",
            "const": true
          },
          "is_active": {
            "type": "boolean"
          },
          "status": {
            "$ref": "#/components/schemas/IntegrationStatus"
          },
          "settings": {
            "$ref": "#/components/schemas/CRMSettings"
          },
          "created_at": {
            "type": "string",
            "format": "date-time"
          },
          "updated_at": {
            "type": "string",
            "format": "date-time"
          },
          "last_sync_at": {
            "type": [
              "string",
              "null"
            ],
            "format": "date-time"
          },
          "last_sync_status": {
            "anyOf": [
              {
                "$ref": "#/components/schemas/SyncLogStatus"
              },
              {
                "type": "null"
              }
            ]
          },
          "rate_limited_until": {
            "type": [
              "string",
              "null"
            ],
            "format": "date-time",
            "description": "While the CRM is rate-limiting this integration: the end of the wait it asked for when it last refused a call (its Retry-After; 10 s when it gave none). Until then no worker calls it, and its syncs are held back (their logs say so); null otherwise. Connecting again clears it."
          },
          "stats": {
            "$ref": "#/components/schemas/SyncStats"
          }
        }
      },
      "NotConnectedStatus": {
        "title": "NotConnectedStatus",
        "type": "object",
        "required": [
          "crm_type",
          "connected"
        ],
        "properties": {
          "crm_type": {
            "$ref": "#/components/schemas/CRMType"
          },
          "connected": {
            "type": "boolean",
            "const": false
          }
        }
      },
      "IntegrationStatusResponse": {
        "title": "IntegrationStatusResponse",
        "oneOf": [
          {
            "$ref": "#/components/schemas/ConnectedStatus"
          },
          {
            "$ref": "#/components/schemas/NotConnectedStatus"
          }
        ]
      },
      "DisconnectResponse": {
        "title": "DisconnectResponse",
        "type": "object",
        "required": [
          "crm_type",
          "status"
        ],
        "properties": {
          "crm_type": {
            "$ref": "#/components/schemas/CRMType"
          },
          "status": {
            "type": "string",
            "const": "disconnected"
          }
        }
      },
      "IntegrationSummary": {
        "title": "IntegrationSummary",
        "type": "object",
        "required": [
          "crm_type",
          "is_active",
          "status",
          "settings",
          "created_at",
          "updated_at",
          "last_sync_at",
          "last_sync_status"
        ],
        "properties": {
          "crm_type": {
            "$ref": "#/components/schemas/CRMType"
          },
          "is_active": {
            "type": "boolean"
          },
          "status": {
            "$ref": "#/components/schemas/IntegrationStatus"
          },
          "settings": {
            "$ref": "#/components/schemas/CRMSettings"
          },
          "created_at": {
            "type": "string",
            "format": "date-time"
          },
          "updated_at": {
            "type": "string",
            "format": "date-time"
          },
          "last_sync_at": {
            "type": [
              "string",
              "null"
            ],
            "format": "date-time"
          },
          "last_sync_status": {
            "anyOf": [
              {
                "$ref": "#/components/schemas/SyncLogStatus"
              },
              {
                "type": "null"
              }
            ]
          }
        }
      },
      "IntegrationList": {
        "title": "IntegrationList",
        "type": "object",
        "required": [
          "integrations",
          "count"
        ],
        "properties": {
          "integrations": {
            "type": "array",
            "items": {
              "$ref": "#/components/schemas/IntegrationSummary"
            }
          },
          "count": {
            "type": "integer",
            "minimum": 0
          }
        }
      },
      "Address": {
        "title": "Address",
        "type": "object",
        "properties": {
          "line1": {
            "type": [
              "string",
              "null"
            ]
          },
          "line2": {
            "type": [
              "string",
              "null"
            ]
          },
          "city": {
            "type": [
              "string",
              "null"
            ]
          },
          "region": {
            "type": [
              "string",
              "null"
            ]
          },
          "postal_code": {
            "type": [
              "string",
              "null"
            ]
          },
          "country": {
            "type": [
              "string",
              "null"
            ]
          }
        },
        "additionalProperties": false
      },
      "ContactSyncRequest": {
        "title": "ContactSyncRequest",
        "description": "The standard contact. Each connector maps it to its CRM's own fields (see the field-mappings endpoints) and upserts by email. Unknown top-level fields → 422.",
        "type": "object",
        "required": [
          "email"
        ],
        "additionalProperties": false,
        "properties": {
          "email": {
            "type": "string",
            "format": "email",
            "description": "A valid email address; the upsert key."
          },
          "first_name": {
            "type": [
              "string",
              "null"
            ]
          },
          "last_name": {
            "type": [
              "string",
              "null"
            ]
          },
          "phone": {
            "type": [
              "string",
              "null"
            ]
          },
          "company": {
            "type": [
              "string",
              "null"
            ]
          },
          "title": {
            "type": [
              "string",
              "null"
            ]
          },
          "address": {
            "anyOf": [
              {
                "$ref": "#/components/schemas/Address"
              },
              {
                "type": "null"
              }
            ]
          },
          "custom_properties": {
            "type": [
              "object",
              "null"
            ],
            "additionalProperties": {
              "type": [
                "string",
                "number",
                "boolean",
                "null"
              ]
            },
            "description": "Extra properties: string → string, number, boolean or null."
          },
          "crm_types": {
            "type": [
              "array",
              "null"
            ],
            "items": {
              "$ref": "#/components/schemas/CRMType"
            },
            "description": "Only these CRMs (default: every active integration of the user that syncs this kind)."
          }
        }
      },
      "EventSyncRequest": {
        "title": "EventSyncRequest",
        "type": "object",
        "required": [
          "event",
          "email"
        ],
        "properties": {
          "event": {
            "type": "string",
            "minLength": 1,
            "description": "Event name, e.g. `Signed Up`."
          },
          "email": {
            "type": "string",
            "format": "email",
            "description": "The contact the event belongs to."
          },
          "properties": {
            "type": [
              "object",
              "null"
            ],
            "additionalProperties": true,
            "description": "Event properties."
          },
          "value": {
            "type": [
              "number",
              "null"
            ],
            "description": "A monetary or numeric value of the event."
          },
          "timestamp": {
            "type": [
              "string",
              "null"
            ],
            "format": "date-time",
            "description": "When it happened (default: now): ISO 8601, a date alone or with a time and an optional offset, naming a real date and time."
          },
          "unique_id": {
            "type": [
              "string",
              "null"
            ],
            "description": "Dedupe key sent to every CRM (Klaviyo's native key, elsewhere stored on the created record); default: derived from the log row, stable across retries."
          },
          "crm_types": {
            "type": [
              "array",
              "null"
            ],
            "items": {
              "$ref": "#/components/schemas/CRMType"
            },
            "description": "Only these CRMs (default: every active integration of the user that syncs this kind)."
          }
        },
        "additionalProperties": false
      },
      "SyncResult": {
        "title": "SyncResult",
        "type": "object",
        "required": [
          "crm_type",
          "status",
          "log_id"
        ],
        "properties": {
          "crm_type": {
            "$ref": "#/components/schemas/CRMType"
          },
          "status": {
            "$ref": "#/components/schemas/SyncResultStatus"
          },
          "action": {
            "type": [
              "string",
              "null"
            ],
            "description": "What the CRM did, e.g. `created` or `updated`."
          },
          "crm_record_id": {
            "type": [
              "string",
              "null"
            ],
            "description": "The CRM's id of the record."
          },
          "detail": {
            "type": [
              "string",
              "null"
            ],
            "description": "Why it failed or is retrying. A success may carry a note too: custom properties the CRM cannot take (dropped), an event already recorded by an earlier attempt, or several records sharing the email (the oldest was used)."
          },
          "log_id": {
            "type": "integer",
            "minimum": 1,
            "description": "The sync log row (see `/crm/sync/logs/{id}`)."
          }
        }
      },
      "SyncResponse": {
        "title": "SyncResponse",
        "type": "object",
        "required": [
          "results",
          "success_count",
          "failure_count"
        ],
        "properties": {
          "results": {
            "type": "array",
            "items": {
              "$ref": "#/components/schemas/SyncResult"
            },
            "description": "One result per targeted active integration; `[]` when none."
          },
          "success_count": {
            "type": "integer",
            "minimum": 0
          },
          "failure_count": {
            "type": "integer",
            "minimum": 0
          }
        }
      },
      "SyncLog": {
        "title": "SyncLog",
        "type": "object",
        "required": [
          "id",
          "crm_type",
          "operation",
          "status",
          "attempts",
          "http_status",
          "error",
          "duration_ms",
          "crm_record_id",
          "created_at",
          "updated_at",
          "next_attempt_at"
        ],
        "properties": {
          "id": {
            "type": "integer",
            "format": "int64",
            "minimum": 1
          },
          "crm_type": {
            "$ref": "#/components/schemas/CRMType"
          },
          "operation": {
            "$ref": "#/components/schemas/SyncOperation"
          },
          "status": {
            "$ref": "#/components/schemas/SyncLogStatus"
          },
          "attempts": {
            "type": "integer",
            "minimum": 0
          },
          "http_status": {
            "type": [
              "integer",
              "null"
            ],
            "description": "The CRM's last HTTP status."
          },
          "error": {
            "type": [
              "string",
              "null"
            ],
            "description": "The last error."
          },
          "duration_ms": {
            "type": [
              "integer",
              "null"
            ],
            "minimum": 0,
            "description": "Duration of the last attempt."
          },
          "crm_record_id": {
            "type": [
              "string",
              "null"
            ]
          },
          "created_at": {
            "type": "string",
            "format": "date-time"
          },
          "updated_at": {
            "type": "string",
            "format": "date-time"
          },
          "next_attempt_at": {
            "type": [
              "string",
              "null"
            ],
            "format": "date-time",
            "description": "When the next retry is due."
          }
        }
      },
      "SyncLogDetail": {
        "title": "SyncLogDetail",
        "allOf": [
          {
            "$ref": "#/components/schemas/SyncLog"
          },
          {
            "type": "object",
            "required": [
              "request",
              "response"
            ],
            "properties": {
              "request": {
                "type": "object",
                "additionalProperties": true,
                "description": "What was sent (credentials never included)."
              },
              "response": {
                "type": [
                  "object",
                  "null"
                ],
                "additionalProperties": true,
                "description": "The CRM's last response; null before it answered."
              }
            }
          }
        ]
      },
      "SyncLogList": {
        "title": "SyncLogList",
        "type": "object",
        "required": [
          "logs",
          "next_before_id"
        ],
        "properties": {
          "logs": {
            "type": "array",
            "items": {
              "$ref": "#/components/schemas/SyncLog"
            },
            "description": "Newest first."
          },
          "next_before_id": {
            "type": [
              "integer",
              "null"
            ],
            "minimum": 1,
            "description": "Pass as `before_id` for the next page; null on the last page."
          }
        }
      },
      "FieldMapping": {
        "title": "FieldMapping",
        "type": "object",
        "required": [
          "contact",
          "event",
          "custom_properties"
        ],
        "properties": {
          "crm_type": {
            "$ref": "#/components/schemas/CRMType"
          },
          "contact": {
            "type": "object",
            "additionalProperties": {
              "type": "string"
            },
            "description": "standard_field → crm_field."
          },
          "event": {
            "type": "object",
            "additionalProperties": {
              "type": "string"
            },
            "description": "event field → crm_field."
          },
          "custom_properties": {
            "type": "string",
            "description": "How custom properties are sent."
          }
        }
      },
      "FieldMappingResponse": {
        "title": "FieldMappingResponse",
        "allOf": [
          {
            "$ref": "#/components/schemas/FieldMapping"
          },
          {
            "required": [
              "crm_type"
            ]
          }
        ]
      },
      "FieldMappingList": {
        "title": "FieldMappingList",
        "type": "object",
        "required": [
          "field_mappings"
        ],
        "properties": {
          "field_mappings": {
            "type": "object",
            "required": [
              "creatio",
              "hubspot",
              "klaviyo",
              "salesforce"
            ],
            "properties": {
              "creatio": {
                "$ref": "#/components/schemas/FieldMapping"
              },
              "hubspot": {
                "$ref": "#/components/schemas/FieldMapping"
              },
              "klaviyo": {
                "$ref": "#/components/schemas/FieldMapping"
              },
              "salesforce": {
                "$ref": "#/components/schemas/FieldMapping"
              }
            },
            "description": "The mapping of every supported CRM type."
          }
        }
      },
      "Health": {
        "title": "Health",
        "type": "object",
        "required": [
          "status",
          "version"
        ],
        "properties": {
          "status": {
            "type": "string",
            "const": "ok"
          },
          "version": {
            "type": "string"
          }
        }
      },
      "Readiness": {
        "title": "Readiness",
        "type": "object",
        "required": [
          "status"
        ],
        "properties": {
          "status": {
            "type": "string",
            "examples": [
              "ok"
            ]
          }
        }
      },
      "HTTPError": {
        "title": "HTTPError",
        "type": "object",
        "required": [
          "detail"
        ],
        "properties": {
          "detail": {
            "type": "string",
            "description": "Human-readable message."
          }
        }
      },
      "ValidationError": {
        "title": "ValidationError",
        "type": "object",
        "required": [
          "loc",
          "msg",
          "type"
        ],
        "properties": {
          "loc": {
            "type": "array",
            "items": {
              "anyOf": [
                {
                  "type": "string"
                },
                {
                  "type": "integer"
                }
              ]
            },
            "description": "Where the problem is, e.g. `[\"body\", \"email\"]`."
          },
          "msg": {
            "type": "string"
          },
          "type": {
            "type": "string",
            "description": "The kind of problem, by pydantic's names (`missing`, `string_type`, `extra_forbidden`, `json_invalid`, `datetime_parsing`, ...), and `string_nul`: a string or key holding U+0000, which valid JSON may carry but PostgreSQL cannot store."
          }
        }
      },
      "HTTPValidationError": {
        "title": "HTTPValidationError",
        "type": "object",
        "required": [
          "detail"
        ],
        "properties": {
          "detail": {
            "type": "array",
            "items": {
              "$ref": "#/components/schemas/ValidationError"
            },
            "description": "One entry per problem."
          }
        }
      },
      "InternalServerError": {
        "title": "InternalServerError",
        "type": "object",
        "required": [
          "detail",
          "request_id"
        ],
        "properties": {
          "detail": {
            "type": "string",
            "const": "Internal server error"
          },
          "request_id": {
            "type": "string",
            "description": "The `X-Request-Id` of the request."
          }
        }
      }
    },
    "responses": {
      "BadRequest": {
        "description": "Bad request (e.g. a malformed `X-User-Id`).",
        "headers": {
          "X-Request-Id": {
            "$ref": "#/components/headers/X-Request-Id"
          }
        },
        "content": {
          "application/json": {
            "schema": {
              "$ref": "#/components/schemas/HTTPError"
            }
          }
        }
      },
      "Unauthorized": {
        "description": "Missing or wrong `X-API-Key` (when `API_KEY` is set), or missing or empty `X-User-Id` on `/crm/*`.",
        "headers": {
          "X-Request-Id": {
            "$ref": "#/components/headers/X-Request-Id"
          }
        },
        "content": {
          "application/json": {
            "schema": {
              "$ref": "#/components/schemas/HTTPError"
            }
          }
        }
      },
      "Forbidden": {
        "description": "Forbidden.",
        "headers": {
          "X-Request-Id": {
            "$ref": "#/components/headers/X-Request-Id"
          }
        },
        "content": {
          "application/json": {
            "schema": {
              "$ref": "#/components/schemas/HTTPError"
            }
          }
        }
      },
      "NotFound": {
        "description": "Not found.",
        "headers": {
          "X-Request-Id": {
            "$ref": "#/components/headers/X-Request-Id"
          }
        },
        "content": {
          "application/json": {
            "schema": {
              "$ref": "#/components/schemas/HTTPError"
            }
          }
        }
      },
      "MethodNotAllowed": {
        "description": "The path exists but not with this method; `Allow` lists the methods it has.",
        "headers": {
          "X-Request-Id": {
            "$ref": "#/components/headers/X-Request-Id"
          },
          "Allow": {
            "$ref": "#/components/headers/Allow"
          }
        },
        "content": {
          "application/json": {
            "schema": {
              "$ref": "#/components/schemas/HTTPError"
            }
          }
        }
      },
      "Conflict": {
        "description": "Conflict with the resource's current state.",
        "headers": {
          "X-Request-Id": {
            "$ref": "#/components/headers/X-Request-Id"
          }
        },
        "content": {
          "application/json": {
            "schema": {
              "$ref": "#/components/schemas/HTTPError"
            }
          }
        }
      },
      "PayloadTooLarge": {
        "description": "Request body over 1 MiB.",
        "headers": {
          "X-Request-Id": {
            "$ref": "#/components/headers/X-Request-Id"
          }
        },
        "content": {
          "application/json": {
            "schema": {
              "$ref": "#/components/schemas/HTTPError"
            }
          }
        }
      },
      "UnsupportedMediaType": {
        "description": "The body is not `application/json`.",
        "headers": {
          "X-Request-Id": {
            "$ref": "#/components/headers/X-Request-Id"
          }
        },
        "content": {
          "application/json": {
            "schema": {
              "$ref": "#/components/schemas/HTTPError"
            }
          }
        }
      },
      "UnprocessableEntity": {
        "description": "Validation error: malformed JSON, a body that does not match the schema, or a bad path or query parameter. One entry per problem.",
        "headers": {
          "X-Request-Id": {
            "$ref": "#/components/headers/X-Request-Id"
          }
        },
        "content": {
          "application/json": {
            "schema": {
              "$ref": "#/components/schemas/HTTPValidationError"
            }
          }
        }
      },
      "InternalServerError": {
        "description": "A bug. No stack trace, SQL or secret is ever included.",
        "headers": {
          "X-Request-Id": {
            "$ref": "#/components/headers/X-Request-Id"
          }
        },
        "content": {
          "application/json": {
            "schema": {
              "$ref": "#/components/schemas/InternalServerError"
            }
          }
        }
      },
      "BadGateway": {
        "description": "The CRM could not be reached or failed (5xx, timeout).",
        "headers": {
          "X-Request-Id": {
            "$ref": "#/components/headers/X-Request-Id"
          }
        },
        "content": {
          "application/json": {
            "schema": {
              "$ref": "#/components/schemas/HTTPError"
            }
          }
        }
      },
      "ServiceUnavailable": {
        "description": "The database is unreachable or the service is overloaded; try again later.",
        "headers": {
          "X-Request-Id": {
            "$ref": "#/components/headers/X-Request-Id"
          },
          "Retry-After": {
            "$ref": "#/components/headers/Retry-After"
          }
        },
        "content": {
          "application/json": {
            "schema": {
              "$ref": "#/components/schemas/HTTPError"
            }
          }
        }
      }
    },
    "parameters": {
      "XUserId": {
        "name": "X-User-Id",
        "in": "header",
        "required": true,
        "description": "The end user every read and write is scoped to (Firebase UIDs and UUIDs fit). Missing or empty → 401; malformed → 400.",
        "schema": {
          "type": "string",
          "pattern": "^[A-Za-z0-9_-]{1,128}$",
          "minLength": 1,
          "maxLength": 128
        },
        "example": "p9uOHM8ABHgwBYGT0dRpZmfyUWn1"
      },
      "XRequestId": {
        "name": "X-Request-Id",
        "in": "header",
        "required": false,
        "description": "Optional correlation id: 1–128 characters of `[A-Za-z0-9._:-]` are echoed in the response's `X-Request-Id`, anything else is replaced by a new id.",
        "schema": {
          "type": "string"
        }
      },
      "IdempotencyKey": {
        "name": "Idempotency-Key",
        "in": "header",
        "required": false,
        "description": "The same key from the same user within 24 h returns the first response again and delivers nothing twice.",
        "schema": {
          "type": "string",
          "minLength": 1
        }
      },
      "Prefer": {
        "name": "Prefer",
        "in": "header",
        "required": false,
        "description": "`respond-async`: answer 202 at once with results of status `queued`; delivery happens in the background.",
        "schema": {
          "type": "string",
          "examples": [
            "respond-async"
          ]
        }
      },
      "CRMTypePath": {
        "name": "crm_type",
        "in": "path",
        "required": true,
        "description": "A supported CRM type. Any other value → 404 `Unsupported CRM type 'x'. Supported: creatio, hubspot, klaviyo, salesforce`.",
        "schema": {
          "$ref": "#/components/schemas/CRMType"
        }
      },
      "LogId": {
        "name": "id",
        "in": "path",
        "required": true,
        "description": "A sync log id; not a positive integer → 422.",
        "schema": {
          "type": "integer",
          "format": "int64",
          "minimum": 1
        }
      }
    },
    "headers": {
      "X-Request-Id": {
        "description": "The caller's `X-Request-Id` if it was 1–128 characters of `[A-Za-z0-9._:-]`, else a new id. The same id is in the worker's log line for the request.",
        "schema": {
          "type": "string",
          "pattern": "^[A-Za-z0-9._:-]{1,128}$"
        }
      },
      "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {
          "type": "integer",
          "minimum": 0
        }
      },
      "Allow": {
        "description": "The methods this path supports, e.g. `GET, DELETE`.",
        "required": true,
        "schema": {
          "type": "string"
        }
      },
      "Deprecation": {
        "description": "`true` when the request used the deprecated `settings.field_mapping`.",
        "schema": {
          "type": "string",
          "enum": [
            "true"
          ]
        }
      },
      "Idempotent-Replayed": {
        "description": "`true` when this is the stored first response to a repeated Idempotency-Key.",
        "schema": {
          "type": "string",
          "enum": [
            "true"
          ]
        }
      }
    },
    "securitySchemes": {
      "ApiKeyAuth": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "Required when the `API_KEY` variable is set; compared in constant time."
      }
    }
  },
  "security": [
    {
      "ApiKeyAuth": []
    }
  ]
}
"""#
}
