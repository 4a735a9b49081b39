-- bundle.lua — one transaction Bundle of 100 new resources per request:
-- 1 Patient (fullUrl urn:uuid:...) and 99 Observations whose subject is that
-- urn:uuid, so the server must resolve the references inside the
-- transaction. Content is fresh per request (unique uuids, MRN, values).

local dir = os.getenv("BENCH_LUA_DIR") or "bench/lua"
local P = dofile(dir .. "/population.lua")
local R = dofile(dir .. "/report.lua")
setup, done = R.setup, R.done

local nonce = tonumber(os.getenv("BENCH_NONCE") or "") or os.time()
local OBS = tonumber(os.getenv("BENCH_BUNDLE_OBS") or "99")
local n = 0
local headers = { ["Content-Type"] = "application/fhir+json", ["Authorization"] = P.auth }
local UNITS = { "mmol/mol", "mm[Hg]", "mm[Hg]", "kg", "kg/m2", "mmol/L", "/min", "mL/min/{1.73_m2}" }

local function uuid(a, b, c)
  return string.format("%08x-%04x-4%03x-8%03x-%012x", nonce % 4294967296, a % 65536, b % 4096, c % 4096, n)
end

function request()
  n = n + 1
  local t = tid or 0
  local puuid = "urn:uuid:" .. uuid(t, 0, 0)
  local parts = {}
  parts[1] = string.format(
    '{"resourceType":"Bundle","type":"transaction","entry":[{"fullUrl":"%s","resource":'
      .. '{"resourceType":"Patient","identifier":[{"system":"%s","value":"T%d-%d-%d"}],'
      .. '"name":[{"family":"%s","given":["Sam"]}],"gender":"female","birthDate":"%s"},'
      .. '"request":{"method":"POST","url":"Patient"}}',
    puuid, P.MRN_SYSTEM, nonce, t, n, P.family(n + t), P.birthdate(n + t))
  for j = 1, OBS do
    local ci = (j - 1) % #P.CODES
    parts[#parts + 1] = string.format(
      ',{"fullUrl":"urn:uuid:%s","resource":{"resourceType":"Observation","status":"final",'
        .. '"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],'
        .. '"code":{"coding":[{"system":"%s","code":"%s"}]},"subject":{"reference":"%s"},'
        .. '"effectiveDateTime":"%sT09:%02d:00Z","valueQuantity":{"value":%d.%d,"unit":"%s",'
        .. '"system":"http://unitsofmeasure.org","code":"%s"}},"request":{"method":"POST","url":"Observation"}}',
      uuid(t, j, 1), P.LOINC, P.CODES[ci + 1], puuid, P.civil(16436 + (n * 37 + j * 101) % 3650), j % 60,
      40 + (n + j) % 60, j % 10, UNITS[ci + 1], UNITS[ci + 1])
  end
  parts[#parts + 1] = "]}"
  return wrk.format("POST", "/fhir", headers, table.concat(parts))
end
