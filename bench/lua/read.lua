-- read.lua — GET /fhir/Patient/bench-<n>, n uniformly random over the
-- loaded population (BENCH_PATIENTS), keep-alive.

local dir = os.getenv("BENCH_LUA_DIR") or "bench/lua"
local P = dofile(dir .. "/population.lua")
local R = dofile(dir .. "/report.lua")
setup, done = R.setup, R.done

local seeded = false
function request()
  if not seeded then math.randomseed(os.time() + (tid or 0) * 7919); seeded = true end
  return wrk.format("GET", "/fhir/Patient/bench-" .. math.random(1, P.patients))
end
