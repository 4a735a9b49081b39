"""The official FHIR R4 examples (/work/shared/reference/fhir-r4/examples):
every one of a type concord supports must be accepted by its validator,
stored, and read back equal apart from `meta` (and `id` when it had none
and was POSTed). Bundle examples are stored as Bundle resources, not
processed.

Equality is exact, including the precision of decimals: FHIR's decimal
keeps its written precision (datatypes.html#decimal: 0.010 is not 0.01),
so `1.00` must come back as `1.00`, not `1.0` or `1`.
"""

import json
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from concordlib import outcome

EXAMPLES = Path("/work/shared/reference/fhir-r4/examples")
FILES = sorted(EXAMPLES.glob("*.json")) if EXAMPLES.is_dir() else []


def load_exact(text):
    """Parse JSON keeping each decimal's written precision."""
    return json.loads(text, parse_float=Decimal)


def canon(v):
    if isinstance(v, dict):
        return {k: canon(x) for k, x in v.items()}
    if isinstance(v, list):
        return [canon(x) for x in v]
    if isinstance(v, Decimal):
        return Dec(v)
    return v


class Dec:
    """A decimal compared by value and written precision (1.0 != 1.00)."""

    def __init__(self, d):
        self.d = d

    def __eq__(self, other):
        return isinstance(other, Dec) and self.d.as_tuple() == other.d.as_tuple()

    def __repr__(self):
        return str(self.d)


def diff(a, b, path="$"):
    """The first difference between two canonical JSON values, or None."""
    if type(a) is not type(b):
        return f"{path}: {a!r} != {b!r}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a:
                return f"{path}.{k}: added {b[k]!r}"
            if k not in b:
                return f"{path}.{k}: dropped (was {a[k]!r})"
            d = diff(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items became {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = diff(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{path}: {a!r} != {b!r}"


# Examples that are not valid FHIR R4, and what a validator must say about them.
KNOWN_INVALID = {
    # Questionnaire.item.linkId is 1..1 in R4; this generated example's
    # display items have none (the first is item[0].item[0]).
    "bundle-questionnaire.json": ("Questionnaire.item[0].item[0].linkId", 422),
}


@pytest.fixture(scope="module")
def supported_types(server):
    cs = requests.get(f"{server.base}/metadata", timeout=30).json()
    return {r["type"] for r in cs["rest"][0]["resource"]}


def test_examples_present():
    assert len(FILES) == 72, f"expected the 72 official examples in {EXAMPLES}"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_example_round_trip(fhir, supported_types, path):
    text = path.read_text(encoding="utf-8")
    sent = load_exact(text)
    rtype = sent["resourceType"]
    if rtype not in supported_types:
        pytest.skip(f"{rtype} is not a type concord lists in its CapabilityStatement")
    rid = sent.get("id")
    headers = {"Content-Type": "application/fhir+json"}
    if path.name in KNOWN_INVALID:
        where, status = KNOWN_INVALID[path.name]
        r = fhir.put(f"{rtype}/{rid}", text.encode("utf-8"), headers=headers)
        outcome(r, status, expression=where)
        assert fhir.get(f"{rtype}/{rid}").status_code == 404
        return
    if rid:
        r = fhir.put(f"{rtype}/{rid}", text.encode("utf-8"), headers=headers)
        assert r.status_code in (200, 201), f"PUT {rtype}/{rid} rejected: {r.status_code} {r.text[:1000]}"
    else:
        r = fhir.post(rtype, text.encode("utf-8"), headers=headers)
        assert r.status_code == 201, f"POST {rtype} rejected: {r.status_code} {r.text[:1000]}"
        rid = load_exact(r.text)["id"]
    g = fhir.get(f"{rtype}/{rid}")
    assert g.status_code == 200, g.text[:500]
    got = load_exact(g.text)
    assert got["meta"]["versionId"], got.get("meta")
    want = {k: v for k, v in sent.items() if k != "meta"}
    have = {k: v for k, v in got.items() if k != "meta"}
    if "id" not in sent:
        have.pop("id", None)
    d = diff(canon(want), canon(have))
    assert d is None, f"{path.name} read back differently: {d}"
    # the stored example is findable by _id
    b = fhir.get(rtype, params={"_id": rid}).json()
    assert [e["resource"]["id"] for e in b.get("entry", []) if e["search"]["mode"] == "match"] == [rid]
