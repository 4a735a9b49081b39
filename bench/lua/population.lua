-- population.lua — the benchmark population, patient-level facts only.
--
-- Shared by the wrk scripts so they can ask for things that exist. It must
-- agree exactly with bench/population.py, which loads the population:
--   patient n (1..BENCH_PATIENTS) has id "bench-<n>", an MRN
--   "BM<n>" (system MRN_SYSTEM), an NHS number when n yields a valid one,
--   family SURNAMES[h(n) % #SURNAMES], birthDate 1930-01-01 + (h(n)/128 % 32872)
--   days, and 20..50 Observations over CODES (round robin, 2015..2025).
-- h(n) = n * 2654435761 mod 2^32 (Knuth's multiplicative hash). In LuaJIT's
-- doubles this is exact while n * 2654435761 < 2^53, i.e. n < 3.3 million
-- patients (about 115 million resources).

local P = {}

P.MRN_SYSTEM = "https://concord.example/Id/bench-mrn"
P.NHS_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"

P.SURNAMES = {
  "Smith", "Jones", "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson",
  "Thomas", "Johnson", "Roberts", "Robinson", "Thompson", "Wright", "Walker",
  "White", "Edwards", "Hughes", "Green", "Hall", "Lewis", "Harris", "Clarke",
  "Patel", "Jackson", "Wood", "Turner", "Martin", "Cooper", "Hill", "Ward",
  "Morris", "Moore", "Clark", "Lee", "King", "Baker", "Harrison", "Morgan",
  "Allen", "James", "Scott", "Phillips", "Watson", "Davis", "Parker", "Price",
  "Bennett", "Young", "Griffiths", "Mitchell", "Kelly", "Cook", "Carter",
  "Richardson", "Bailey", "Collins", "Bell", "Shaw", "Murphy", "Miller", "Cox",
  "Richards", "Khan", "Marshall", "Anderson", "Simpson", "Ellis", "Adams",
  "Singh", "Begum", "Wilkinson", "Foster", "Chapman", "Powell", "Webb",
  "Rogers", "Gray", "Mason", "Ali", "Hunt", "Hussain", "Campbell", "Matthews",
  "Owen", "Palmer", "Holmes", "Mills", "Barnes", "Knight", "Lloyd", "Butler",
  "Russell", "Barker", "Fisher", "Stevens", "Jenkins", "Murray", "Dixon",
  "Harvey", "Okafor", "Nowak", "Kowalski", "Ahmed", "Rahman", "Chen", "Nguyen",
  "O'Brien", "Doherty", "MacDonald",
}

-- LOINC codes the Observations use (index 0..#-1 in population.py).
P.CODES = {
  "4548-4",   -- HbA1c
  "8480-6",   -- systolic blood pressure
  "8462-4",   -- diastolic blood pressure
  "29463-7",  -- body weight
  "39156-5",  -- BMI
  "2093-3",   -- total cholesterol
  "8867-4",   -- heart rate
  "62238-1",  -- eGFR
}
P.LOINC = "http://loinc.org"

function P.h(n)
  return (n * 2654435761) % 4294967296
end

function P.family(n)
  return P.SURNAMES[(P.h(n) % #P.SURNAMES) + 1]
end

-- days since 1970-01-01 to Y-M-D (proleptic Gregorian; Howard Hinnant's algorithm)
local function civil(days)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return string.format("%04d-%02d-%02d", y, m, d)
end
P.civil = civil

local BIRTH_EPOCH = -14610 -- 1930-01-01 in days since 1970-01-01

function P.birthdate(n)
  return civil(BIRTH_EPOCH + math.floor(P.h(n) / 128) % 32872)
end

-- NHS number for patient n, or nil when 400000000+n has check digit 10.
function P.nhs(n)
  local s = tostring(400000000 + n)
  local sum = 0
  for i = 1, 9 do sum = sum + tonumber(s:sub(i, i)) * (11 - i) end
  local c = 11 - (sum % 11)
  if c == 11 then c = 0 end
  if c == 10 then return nil end
  return s .. tostring(c)
end

P.patients = tonumber(os.getenv("BENCH_PATIENTS") or "0") or 0

-- The server requires authentication (docs/access.md): bench.py provisions
-- a token and passes it in BENCH_TOKEN. Requests built without their own
-- headers take wrk.headers; scripts with their own add P.auth.
P.auth = os.getenv("BENCH_TOKEN") and ("Bearer " .. os.getenv("BENCH_TOKEN")) or nil
if P.auth and wrk then wrk.headers["Authorization"] = P.auth end

return P
