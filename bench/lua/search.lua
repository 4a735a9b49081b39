-- search.lua — common searches against the loaded population; which one is
-- chosen by BENCH_SEARCH:
--   obs       Observation?patient=bench-<n>&code=http://loinc.org|<code>&date=ge<BENCH_SINCE>
--   ident     Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|<nhs number of n>
--   family    Patient?family=<family of n>&birthdate=<birthDate of n>
-- n uniformly random over the population, so every search names a patient
-- that exists (and matches at least that patient).

local dir = os.getenv("BENCH_LUA_DIR") or "bench/lua"
local P = dofile(dir .. "/population.lua")
local R = dofile(dir .. "/report.lua")
setup, done = R.setup, R.done

local kind = os.getenv("BENCH_SEARCH") or "obs"
local since = os.getenv("BENCH_SINCE") or "2022-01-01"

local function esc(s) -- percent-encode what a query value may hold
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

local paths = {
  obs = function(n)
    return "/fhir/Observation?patient=bench-" .. n .. "&code=" .. esc(P.LOINC .. "|" .. P.CODES[math.random(1, #P.CODES)])
      .. "&date=ge" .. since
  end,
  ident = function(n)
    local nhs = P.nhs(n)
    while not nhs do n = n % P.patients + 1; nhs = P.nhs(n) end
    return "/fhir/Patient?identifier=" .. esc(P.NHS_SYSTEM .. "|" .. nhs)
  end,
  family = function(n)
    return "/fhir/Patient?family=" .. esc(P.family(n)) .. "&birthdate=" .. P.birthdate(n)
  end,
}
local make = assert(paths[kind], "BENCH_SEARCH must be obs, ident or family")

local seeded = false
function request()
  if not seeded then math.randomseed(os.time() + (tid or 0) * 7919); seeded = true end
  return wrk.format("GET", make(math.random(1, P.patients)))
end
