-- wrk script for `make bench` (bench/bench.py runs it as `wrk -s bench/wrk/bench.lua ...`).
--
-- Environment:
--   BENCH_ROUTE  list          GET  /crm/list
--                event         POST /crm/sync/event   {"event","email","properties","crm_types":["klaviyo"]}
--                contact       POST /crm/sync/contact {"email","first_name","last_name","crm_types":["klaviyo"]}
--                fake-event    POST /api/events          straight at the fake CRM (the Klaviyo event body)
--                fake-contact  POST /api/profile-import  straight at the fake CRM
--   BENCH_USERS  users to pick from at random (bench_user_1 .. bench_user_N), default 10000
--   BENCH_ASYNC  1: send `Prefer: respond-async`
--
-- Every request picks a random user (X-User-Id). At the end one line goes to stdout:
--   BENCH_JSON {...}  requests, duration, errors (non-2xx/3xx answers count as "status"),
--                     latency percentiles in microseconds (wrk's own latency distribution).

local route = os.getenv("BENCH_ROUTE") or "list"
local users = tonumber(os.getenv("BENCH_USERS") or "10000")
local async = os.getenv("BENCH_ASYNC") == "1"

local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("thread_id", counter)
end

function init(args)
  math.randomseed(os.time() * 7919 + (thread_id or 0) * 104729)
end

local json_headers = { ["Content-Type"] = "application/json" }

request = function()
  local n = math.random(users)
  local user = "bench_user_" .. n
  if route == "list" then
    return wrk.format("GET", "/crm/list", { ["X-User-Id"] = user })
  elseif route == "event" then
    local body = '{"event":"Bench Event","email":"' .. user .. '@example.com",'
      .. '"properties":{"plan":"pro","items":3},"crm_types":["klaviyo"]}'
    return wrk.format("POST", "/crm/sync/event",
      { ["X-User-Id"] = user, ["Content-Type"] = "application/json" }, body)
  elseif route == "contact" then
    local body = '{"email":"' .. user .. '@example.com","first_name":"Bench","last_name":"User ' .. n .. '",'
      .. '"crm_types":["klaviyo"]}'
    local headers = { ["X-User-Id"] = user, ["Content-Type"] = "application/json" }
    if async then headers["Prefer"] = "respond-async" end
    return wrk.format("POST", "/crm/sync/contact", headers, body)
  elseif route == "fake-event" then
    local body = '{"data":{"type":"event","attributes":{"properties":{"plan":"pro","items":3},'
      .. '"time":"2026-11-28T12:00:00Z","unique_id":"crm-log-' .. n .. '",'
      .. '"metric":{"data":{"type":"metric","attributes":{"name":"Bench Event"}}},'
      .. '"profile":{"data":{"type":"profile","attributes":{"email":"' .. user .. '@example.com"}}}}}}'
    return wrk.format("POST", "/api/events", {
      ["Authorization"] = "Klaviyo-API-Key pk_bench", ["Accept"] = "application/vnd.api+json",
      ["Content-Type"] = "application/vnd.api+json", ["revision"] = "2026-10-15" }, body)
  elseif route == "fake-contact" then
    local body = '{"data":{"type":"profile","attributes":{"email":"' .. user .. '@example.com",'
      .. '"first_name":"Bench","last_name":"User ' .. n .. '"}}}'
    return wrk.format("POST", "/api/profile-import", {
      ["Authorization"] = "Klaviyo-API-Key pk_bench", ["Accept"] = "application/vnd.api+json",
      ["Content-Type"] = "application/vnd.api+json", ["revision"] = "2026-10-15" }, body)
  end
  error("unknown BENCH_ROUTE " .. route)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
