-- access_read.lua — read by id for bench/access.py, keep-alive:
--   BENCH_READ_TYPE=Patient      GET /fhir/Patient/bench-<n>, n uniformly
--                                random over BENCH_PATIENTS (as read.lua)
--   BENCH_READ_TYPE=Observation  GET /fhir/Observation/<id>, id uniformly
--                                random over the lines of BENCH_IDS_FILE
--                                (every Observation id in that server's
--                                database; they are server-assigned)
-- Sends BENCH_TOKEN as a Bearer token when it is set and not empty (the
-- baseline build has no authentication and gets no header).

local dir = os.getenv("BENCH_LUA_DIR") or "bench/lua"
local P = dofile(dir .. "/population.lua")
local R = dofile(dir .. "/report.lua")
setup, done = R.setup, R.done

local tok = os.getenv("BENCH_TOKEN")
if tok and tok ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. tok
else
  wrk.headers["Authorization"] = nil
end

local kind = os.getenv("BENCH_READ_TYPE") or "Patient"
local ids, nids = nil, 0

function init(args)
  if kind == "Observation" then
    ids = {}
    local f = assert(io.open(os.getenv("BENCH_IDS_FILE") or "", "r"), "BENCH_IDS_FILE is not readable")
    for line in f:lines() do
      if line ~= "" then nids = nids + 1; ids[nids] = "/fhir/Observation/" .. line end
    end
    f:close()
    assert(nids > 0, "BENCH_IDS_FILE lists no ids")
  elseif kind ~= "Patient" then
    error("BENCH_READ_TYPE must be Patient or Observation, not " .. kind)
  end
end

local seeded = false
function request()
  if not seeded then math.randomseed(os.time() + (tid or 0) * 7919); seeded = true end
  if ids then return wrk.format("GET", ids[math.random(1, nids)]) end
  return wrk.format("GET", "/fhir/Patient/bench-" .. math.random(1, P.patients))
end
