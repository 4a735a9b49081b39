-- create.lua — one new Patient per request: POST /fhir/Patient.
-- Every request carries fresh content (its own MRN and name) so the server
-- stores and indexes a distinct resource each time; the server assigns ids.

local dir = os.getenv("BENCH_LUA_DIR") or "bench/lua"
local P = dofile(dir .. "/population.lua")
local R = dofile(dir .. "/report.lua")
setup, done = R.setup, R.done

local nonce = os.getenv("BENCH_NONCE") or tostring(os.time())
local n = 0
local headers = { ["Content-Type"] = "application/fhir+json", ["Authorization"] = P.auth }

function request()
  n = n + 1
  local k = (tid or 0) * 100000000 + n
  local body = string.format(
    '{"resourceType":"Patient","identifier":[{"system":"%s","value":"C%s-%d"}],'
      .. '"active":true,"name":[{"use":"official","family":"%s","given":["Alex","J"]}],'
      .. '"gender":"%s","birthDate":"%s","address":[{"line":["%d High Street"],'
      .. '"city":"London","postalCode":"W2 1NY","country":"GB"}]}',
    P.MRN_SYSTEM, nonce, k, P.family(k), (k % 2 == 0) and "female" or "male", P.birthdate(k), k % 300 + 1)
  return wrk.format("POST", "/fhir/Patient", headers, body)
end
