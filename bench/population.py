"""population.py — the benchmark population and its loader.

The population is deterministic: patient n (1..patients) is a function of n
alone, so the wrk scripts (bench/lua/population.lua, which must agree with the
patient-level facts here) can search for and read things that exist without
being told what was loaded.

  Patient/bench-<n>   PUT with its client-assigned id; MRN BM<n>, an NHS
                      number when 400000000+n gives a valid check digit,
                      family/given name, gender, birthDate 1930..2019,
                      address with a London postcode.
  Observation x k(n)  POST, k(n) = 20..50; code round robin over CODES (so
                      each patient has every code at least twice), subject
                      Patient/bench-<n>, effectiveDateTime spread over
                      2015-01-01..2025-12-31, valueQuantity in a plausible
                      range for the code.
  Organization        only when a practice is asked for (access.py): PUT
                      first, with its ODS code; every Patient then names it
                      as generalPractitioner (registered there). Without
                      one the Patients are byte-for-byte as before.

Loading packs whole patients (Patient + its Observations) into transaction
Bundles of at most BUNDLE_MAX resources and posts them over several keep-alive
connections from separate processes (http.client), checking every entry came
back "201 Created". Used by run.sh through bench.py; `python3 population.py
URL RESOURCES` loads on its own.
"""

import datetime
import http.client
import json
import os
import multiprocessing as mp
import sys
import time
import urllib.parse

MRN_SYSTEM = "https://concord.example/Id/bench-mrn"
NHS_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
LOINC = "http://loinc.org"
BUNDLE_MAX = 100

SURNAMES = [
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
]
GIVEN = [
    "Olivia", "Amelia", "Isla", "Ava", "Mia", "Grace", "Sophia", "Lily", "Freya",
    "Emily", "Margaret", "Patricia", "Susan", "Jean", "Aisha", "Fatima", "Priya",
    "Oliver", "George", "Noah", "Arthur", "Muhammad", "Leo", "Harry", "Oscar",
    "Jack", "John", "David", "Michael", "Peter", "Robert", "Mohammed", "Arjun",
]
# (code, display, unit, low, high, category)
CODES = [
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "mmol/mol", 30, 95, "laboratory"),
    ("8480-6", "Systolic blood pressure", "mm[Hg]", 95, 185, "vital-signs"),
    ("8462-4", "Diastolic blood pressure", "mm[Hg]", 55, 110, "vital-signs"),
    ("29463-7", "Body weight", "kg", 40, 140, "vital-signs"),
    ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", 17, 45, "vital-signs"),
    ("2093-3", "Cholesterol [Moles/volume] in Serum or Plasma", "mmol/L", 3, 9, "laboratory"),
    ("8867-4", "Heart rate", "/min", 45, 120, "vital-signs"),
    ("62238-1", "Glomerular filtration rate/1.73 sq M.predicted", "mL/min/{1.73_m2}", 15, 110, "laboratory"),
]
POSTCODES = ["W2 1NY", "W10 6DZ", "NW10 7NS", "HA1 3UJ", "UB1 3HW", "TW3 3EB", "SW6 1AA", "W12 0HS"]

EPOCH = datetime.date(1970, 1, 1)
BIRTH_EPOCH = datetime.date(1930, 1, 1)
OBS_EPOCH = datetime.date(2015, 1, 1)
OBS_DAYS = (datetime.date(2025, 12, 31) - OBS_EPOCH).days + 1


def h(n):
    return (n * 2654435761) % 4294967296


def family(n):
    return SURNAMES[h(n) % len(SURNAMES)]


def birthdate(n):
    return (BIRTH_EPOCH + datetime.timedelta(days=(h(n) // 128) % 32872)).isoformat()


def nhs(n):
    s = str(400000000 + n)
    c = 11 - sum(int(d) * (10 - i) for i, d in enumerate(s)) % 11
    if c == 11:
        c = 0
    return None if c == 10 else s + str(c)


def obs_count(n):
    return 20 + (h(n) // 65536) % 31


def patients_for(resources):
    """Smallest patient count whose resources (1 + k(n) each) reach `resources`."""
    total, n = 0, 0
    while total < resources:
        n += 1
        total += 1 + obs_count(n)
    return n, total


def bundles(patients):
    """Yield (first, last) patient ranges, each at most BUNDLE_MAX resources."""
    first, size = 1, 0
    for n in range(1, patients + 1):
        r = 1 + obs_count(n)
        if size and size + r > BUNDLE_MAX:
            yield first, n - 1
            first, size = n, 0
        size += r
    if size:
        yield first, patients


PATIENT_T = (
    '{"resource":{"resourceType":"Patient","id":"bench-%d","identifier":[%s],"active":true,'
    '"name":[{"use":"official","family":"%s","given":["%s"]}],"gender":"%s","birthDate":"%s",'
    '"address":[{"line":["%d Harrow Road"],"city":"London","postalCode":"%s","country":"GB"}]%s},'
    '"request":{"method":"PUT","url":"Patient/bench-%d"}}'
)
ODS_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
OBS_T = (
    '{"resource":{"resourceType":"Observation","status":"final","category":[{"coding":[{"system":'
    '"http://terminology.hl7.org/CodeSystem/observation-category","code":"%s"}]}],"code":{"coding":'
    '[{"system":"http://loinc.org","code":"%s","display":"%s"}]},"subject":{"reference":"Patient/bench-%d"},'
    '"effectiveDateTime":"%sT%02d:%02d:00Z","valueQuantity":{"value":%d.%d,"unit":"%s",'
    '"system":"http://unitsofmeasure.org","code":"%s"}},"request":{"method":"POST","url":"Observation"}}'
)


def practice_ref(practice):
    """The Patient fields that register every patient at `practice` (an
    (Organization id, ODS code) pair, or None for none)."""
    return ',"generalPractitioner":[{"reference":"Organization/%s"}]' % practice[0] if practice else ""


def practice_resource(practice):
    """The practice's Organization, with its ODS code."""
    return ('{"resourceType":"Organization","id":"%s","identifier":[{"system":"%s","value":"%s"}],'
            '"active":true,"type":[{"coding":[{"system":"https://fhir.nhs.uk/CodeSystem/organisation-role",'
            '"code":"76","display":"GP practice"}]}],"name":"Bench Practice %s"}'
            % (practice[0], ODS_SYSTEM, practice[1], practice[1])).encode()


def patient_entries(n, practice=None):
    hn = h(n)
    ids = '{"system":"%s","value":"BM%d"}' % (MRN_SYSTEM, n)
    nn = nhs(n)
    if nn:
        ids = '{"system":"%s","value":"%s"},' % (NHS_SYSTEM, nn) + ids
    fam = family(n)
    out = [PATIENT_T % (n, ids, fam, GIVEN[(hn >> 8) % len(GIVEN)], "female" if hn & 1 else "male",
                        birthdate(n), n % 200 + 1, POSTCODES[n % len(POSTCODES)], practice_ref(practice), n)]
    for j in range(obs_count(n)):
        code, display, unit, lo, hi, cat = CODES[j % len(CODES)]
        x = h(n * 64 + j)
        day = (OBS_EPOCH + datetime.timedelta(days=x % OBS_DAYS)).isoformat()
        out.append(OBS_T % (cat, code, display, n, day, 8 + (x >> 12) % 10, (x >> 16) % 60,
                            lo + (x >> 8) % (hi - lo), (x >> 4) % 10, unit, unit))
    return out


def bundle_body(first, last, practice=None):
    entries = []
    for n in range(first, last + 1):
        entries.extend(patient_entries(n, practice))
    return ('{"resourceType":"Bundle","type":"transaction","entry":[' + ",".join(entries) + "]}").encode(), len(entries)


def _headers():
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    if os.environ.get("BENCH_TOKEN"):  # bench.py provisions it (the server requires sign-in)
        headers["Authorization"] = "Bearer " + os.environ["BENCH_TOKEN"]
    return headers


def put_practice(url, practice):
    """PUT the practice's Organization (before the patients that name it,
    so the server can resolve its ODS code when they are stored)."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=60)
    try:
        conn.request("PUT", "%s/Organization/%s" % (u.path.rstrip("/") or "/fhir", practice[0]),
                     practice_resource(practice), _headers())
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if resp.status not in (200, 201):
        raise RuntimeError("load: PUT Organization/%s: HTTP %d: %s"
                           % (practice[0], resp.status, data[:400].decode("utf-8", "replace")))


def _worker(url, patients, wid, nworkers, done_res, failed, deadline, practice=None):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=300)
    headers = _headers()
    for i, (first, last) in enumerate(bundles(patients)):
        if i % nworkers != wid:
            continue
        if time.time() > deadline:
            failed.value += 1
            print("load: worker %d stopped at the time limit" % wid, file=sys.stderr)
            return
        body, count = bundle_body(first, last, practice)
        for attempt in range(3):
            try:
                conn.request("POST", u.path.rstrip("/") or "/fhir", body, headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (OSError, http.client.HTTPException) as e:
                if attempt == 2:
                    raise
                print("load: retrying bundle %d-%d after %r" % (first, last, e), file=sys.stderr)
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=300)
        created = data.count(b'"201 Created"')
        if resp.status != 200 or created != count:
            with failed.get_lock():
                failed.value += 1
            print("load: bundle for patients %d-%d: HTTP %d, %d of %d created: %s"
                  % (first, last, resp.status, created, count, data[:400].decode("utf-8", "replace")),
                  file=sys.stderr)
            return
        with done_res.get_lock():
            done_res.value += count


def load(url, resources, workers=4, timeout=3600, progress=None, practice=None):
    """Load a population of about `resources` resources into the FHIR server at
    url (…/fhir). Returns a dict of what was loaded and how fast. With
    `practice` ((Organization id, ODS code)), that Organization is PUT first
    and every Patient names it as generalPractitioner (registered there);
    it is not counted in `resources`."""
    patients, total = patients_for(resources)
    if practice:
        put_practice(url, practice)
    done_res = mp.Value("q", 0)
    failed = mp.Value("i", 0)
    ctx = mp.get_context("fork")
    t0 = time.time()
    deadline = t0 + timeout
    procs = [ctx.Process(target=_worker, args=(url, patients, w, workers, done_res, failed, deadline, practice))
             for w in range(workers)]
    for p in procs:
        p.start()
    last = t0
    while any(p.is_alive() for p in procs):
        for p in procs:
            p.join(0.5)
        now = time.time()
        if progress and now - last >= 10:
            last = now
            d = done_res.value
            progress("  loading: %s of %s resources, %s/s" % (
                f"{d:,}", f"{total:,}", f"{d / (now - t0):,.0f}"))
        if failed.value:
            for p in procs:
                p.terminate()
    elapsed = time.time() - t0
    ok = failed.value == 0 and all(p.exitcode == 0 for p in procs) and done_res.value == total
    return {
        "ok": ok,
        "patients": patients,
        "resources": total,
        "resources_loaded": done_res.value,
        "observations": total - patients,
        "bundles": sum(1 for _ in bundles(patients)),
        "bundle_max_resources": BUNDLE_MAX,
        "connections": workers,
        "seconds": elapsed,
        "resources_per_s": done_res.value / elapsed if elapsed else 0.0,
    }


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: population.py FHIR_BASE_URL RESOURCES [WORKERS]")
    r = load(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 4, progress=print)
    print(json.dumps(r, indent=2))
    sys.exit(0 if r["ok"] else 1)
