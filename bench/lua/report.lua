-- report.lua — wrk's done() hook for every bench script: prints one line
--   BENCH_RESULT {json}
-- with wrk's totals and latency percentiles (microseconds), so run.sh can
-- parse the figures instead of scraping wrk's human-readable summary.
-- Scripts that count things per thread list their names in R.counters and
-- keep them as thread globals; the sums appear under "counters".

local R = { threads = {}, counters = {} }

local function enc(v)
  local t = type(v)
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    if v == math.floor(v) and math.abs(v) < 1e15 then return string.format("%d", v) end
    return string.format("%.6g", v)
  elseif t == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
  elseif t == "table" then
    local parts = {}
    for k, x in pairs(v) do parts[#parts + 1] = enc(tostring(k)) .. ":" .. enc(x) end
    table.sort(parts)
    return "{" .. table.concat(parts, ",") .. "}"
  elseif t == "boolean" then
    return tostring(v)
  end
  return "null"
end
R.enc = enc

local next_tid = 0
function R.setup(thread)
  next_tid = next_tid + 1
  thread:set("tid", next_tid)
  R.threads[#R.threads + 1] = thread
end

function R.done(summary, latency, requests)
  local counters = {}
  for _, name in ipairs(R.counters) do
    local sum = 0
    for _, t in ipairs(R.threads) do sum = sum + (tonumber(t:get(name)) or 0) end
    counters[name] = sum
  end
  local out = {
    duration_us = summary.duration,
    requests = summary.requests,
    bytes = summary.bytes,
    errors = {
      connect = summary.errors.connect, read = summary.errors.read,
      write = summary.errors.write, status = summary.errors.status,
      timeout = summary.errors.timeout,
    },
    latency_us = {
      min = latency.min, mean = latency.mean, stdev = latency.stdev, max = latency.max,
      p50 = latency:percentile(50), p75 = latency:percentile(75),
      p90 = latency:percentile(90), p99 = latency:percentile(99),
      p999 = latency:percentile(99.9),
    },
    threads = #R.threads,
    counters = counters,
  }
  io.write("BENCH_RESULT ", enc(out), "\n")
end

return R
